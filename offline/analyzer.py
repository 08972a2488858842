"""Drive the policy pack exactly as the Pulumi engine does, over the analyzer gRPC protocol.

Starts `python -u -m pulumi.policy <engineAddr> <packDir>` with the CLI's environment,
reads the port it prints, then GetAnalyzerInfo, Configure (config reconciled against each
policy's schema with defaults applied, as the engine does), ConfigureStack, Analyze per
resource (inputs), and AnalyzeStack (outputs).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import jsonschema
from google.protobuf import empty_pb2, json_format, struct_pb2
from pulumi.runtime.proto import analyzer_pb2, analyzer_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
PACK_DIR = ROOT / "policy"
LEVELS = {analyzer_pb2.ADVISORY: "advisory", analyzer_pb2.MANDATORY: "mandatory",
          analyzer_pb2.DISABLED: "disabled", analyzer_pb2.REMEDIATE: "remediate"}
LEVEL_VALUES = {v: k for k, v in LEVELS.items()}


class PolicyConfigError(ValueError):
    pass


@dataclass(frozen=True)
class Violation:
    policy: str
    level: str
    message: str
    urn: str
    severity: str = ""
    remediation: str = ""

    def line(self) -> str:
        name = self.urn.rsplit("::", 1)[-1] if self.urn else "(stack)"
        text = f"    [{self.level}]  {self.policy}  ({name})"
        text += f"  severity: {self.severity}" if self.severity else ""
        text += f"\n      {self.message}"
        return text + (f"\n      remediation: {self.remediation}" if self.remediation else "")


def _struct(value: dict) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(value)
    return s


class Analyzer:
    """A running policy pack. Use as a context manager."""

    def __init__(self, project: str, stack: str, dry_run: bool, config: dict[str, str] | None = None,
                 pack_dir: Path = PACK_DIR):
        # The CLI's environment for a policy pack: the stack config (decrypted) as PULUMI_CONFIG. The
        # pack runs from its own directory with nothing of the program on its path, as under the CLI.
        env = {**os.environ, "PULUMI_CONFIG": json.dumps(config or {}), "PULUMI_PROJECT": project,
               "PULUMI_STACK": stack, "PULUMI_DRY_RUN": "true" if dry_run else "false"}
        # The engine address is only used for logging; nothing listens there in the offline preview.
        self.proc = subprocess.Popen([sys.executable, "-u", "-m", "pulumi.policy", "127.0.0.1:1", str(pack_dir)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=pack_dir)
        assert self.proc.stdout is not None and self.proc.stderr is not None  # both are PIPE
        port = self.proc.stdout.readline().decode().strip()
        if not port.isdigit():
            err = self.proc.stderr.read().decode() if self.proc.poll() is not None else ""
            self.close()
            raise RuntimeError(f"policy pack did not start: {port!r} {err}")
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.stub = analyzer_pb2_grpc.AnalyzerStub(self.channel)
        self.project, self.stack, self.dry_run = project, stack, dry_run
        self.remediation: dict[str, str] = {}  # policy -> remediation_steps, from info()

    def __enter__(self) -> "Analyzer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if getattr(self, "channel", None):
            self.channel.close()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream:
                stream.close()

    # --- the engine's sequence --------------------------------------------------------
    def info(self) -> analyzer_pb2.AnalyzerInfo:
        info = self.stub.GetAnalyzerInfo(empty_pb2.Empty())
        self.remediation = {p.name: p.remediation_steps for p in info.policies}
        return info

    def configure(self, info: analyzer_pb2.AnalyzerInfo, given: dict[str, Any]) -> dict[str, dict]:
        """Reconcile config like the engine: schema defaults, then validation, per policy."""
        unknown = set(given) - {p.name for p in info.policies} - {"all"}
        if unknown:
            raise PolicyConfigError(f"policy config names unknown policies: {sorted(unknown)}")
        request = analyzer_pb2.ConfigureAnalyzerRequest()
        resolved: dict[str, dict] = {}
        for policy in info.policies:
            raw = given.get(policy.name, {})
            # `"policy": "advisory"` sets only the level
            level = raw if isinstance(raw, str) else LEVELS.get(policy.enforcementLevel, "advisory")
            entry = {} if isinstance(raw, str) else dict(raw)
            level = entry.pop("enforcementLevel", level)
            schema = json_format.MessageToDict(policy.configSchema) if policy.HasField("configSchema") else {}
            props = schema.get("properties", {})
            values = {k: v["default"] for k, v in props.items() if "default" in v}
            values.update(entry)
            try:
                jsonschema.validate(values, {"type": "object", "properties": props,
                                             "required": schema.get("required", [])})
            except jsonschema.ValidationError as exc:
                raise PolicyConfigError(f"policy {policy.name}: {exc.message}") from None
            if level not in LEVEL_VALUES:
                raise PolicyConfigError(f"policy {policy.name}: enforcementLevel {level!r}; allowed: "
                                        f"{', '.join(LEVEL_VALUES)}")
            request.policyConfig[policy.name].CopyFrom(analyzer_pb2.PolicyConfig(
                enforcementLevel=LEVEL_VALUES[level], properties=_struct(values)))
            resolved[policy.name] = {"enforcementLevel": level, **values}
        self.stub.Configure(request)
        self.stub.ConfigureStack(analyzer_pb2.AnalyzerStackConfigureRequest(
            stack=self.stack, project=self.project, organization="organization", dry_run=self.dry_run))
        return resolved

    def analyze(self, plan: dict) -> list[Violation]:
        by_urn = {r["urn"]: r for r in plan["resources"]}
        found: list[Violation] = []
        for r in plan["resources"]:
            response = self.stub.Analyze(analyzer_pb2.AnalyzeRequest(
                type=r["type"], properties=_struct(r["props"]), urn=r["urn"], name=r["name"],
                options=_options(r), provider=_provider(r, by_urn)))
            found += _violations(response, r["urn"], self.remediation)
        # In a preview the engine's planned state is the planned inputs; after `up`, the outputs.
        state = "props" if self.dry_run else "outputs"
        stack = analyzer_pb2.AnalyzeStackRequest(resources=[analyzer_pb2.AnalyzerResource(
            type=r["type"], properties=_struct(r[state]), urn=r["urn"], name=r["name"], options=_options(r),
            provider=_provider(r, by_urn), parent=r["parent"], dependencies=r.get("dependencies", []),
            propertyDependencies={k: analyzer_pb2.AnalyzerPropertyDependencies(urns=v)
                                  for k, v in r.get("propertyDependencies", {}).items()})
            for r in plan["resources"]])
        found += _violations(self.stub.AnalyzeStack(stack), "", self.remediation)
        return found


def _options(r: dict) -> analyzer_pb2.AnalyzerResourceOptions:
    o = r.get("options", {})
    return analyzer_pb2.AnalyzerResourceOptions(
        protect=bool(o.get("protect")), ignoreChanges=o.get("ignoreChanges", []),
        deleteBeforeReplace=bool(o.get("deleteBeforeReplace")), deleteBeforeReplaceDefined=True,
        additionalSecretOutputs=o.get("additionalSecretOutputs", []), parent=r.get("parent", ""))


def _provider(r: dict, by_urn: dict) -> analyzer_pb2.AnalyzerProviderResource | None:
    ref = r.get("provider") or ""
    urn = ref.rsplit("::", 1)[0] if ref.count("::") >= 4 else ref  # a provider reference is "<urn>::<id>"
    p = by_urn.get(urn)
    if p is None:
        return None
    return analyzer_pb2.AnalyzerProviderResource(type=p["type"], properties=_struct(p["props"]), urn=p["urn"],
                                                 name=p["name"])


SEVERITIES = {1: "low", 2: "medium", 3: "high", 4: "critical"}  # analyzer.proto PolicySeverity


def _violations(response, default_urn: str, remediation: dict[str, str] | None = None) -> list[Violation]:
    return [Violation(d.policyName, LEVELS.get(d.enforcementLevel, "advisory"), d.message, d.urn or default_urn,
                      SEVERITIES.get(d.severity, ""), (remediation or {}).get(d.policyName, ""))
            for d in response.diagnostics]


def run_policies(plan: dict, policy_config: dict | None = None, dry_run: bool = True) -> tuple[list[Violation], dict]:
    with Analyzer(plan["project"], plan["stack"], dry_run, plan.get("config")) as analyzer:
        resolved = analyzer.configure(analyzer.info(), policy_config or {})
        return analyzer.analyze(plan), resolved


def load_policy_config(path: Path | None) -> dict:
    if path is None:
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise PolicyConfigError(f"cannot read policy config {path}: {exc}") from None


