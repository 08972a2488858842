"""Run the real Pulumi program under the SDK's mock runtime against the fake cloud.

Records every RegisterResource request the engine would receive (props in wire form with
secrets and unknowns marked exactly as serialized, parent, provider and options) so the
plan can be written out and fed to the policy analyzer.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
import runpy
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from components.settings import PROJECT_FILE, required_secrets
from components.settings.access import TAILNET_KEY, TAILNET_KEY_ALIAS
from offline import cli_config

ROOT = Path(__file__).resolve().parent.parent
SECRET_SIG = "4dabf18193072939515e22adb298388d"
SECRET_MARK = "1b47061264138c4ac30d75fd1eb44270"
UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"
REDACTED = "[secret]"
REDACTED_IN_TEXT = "SECRET-REDACTED"  # inside documents (user_data YAML), where [secret] would change the syntax
PLACEHOLDER_SECRET = "offline-preview-placeholder-key"
# Where a secret has a format the program checks, its placeholder has that format too.
PLACEHOLDERS = {"wireguardPrivateKey": "T2ZmbGluZS1wcmV2aWV3LXBsYWNlaG9sZGVyLWtleSE="}  # 32 bytes of text


def placeholder(key: str) -> str:
    return PLACEHOLDERS.get(key, PLACEHOLDER_SECRET)

warnings.filterwarnings("ignore", category=DeprecationWarning)


class StackFileError(ValueError):
    pass


def read_stack_file(path: Path, project: str, stack: str | None = None) -> tuple[dict[str, str], dict[str, str], list[str]]:
    """_read_stack_file with room for the nesting the CLI reads (yaml.v3 allows 10,000 levels)."""
    return cli_config.with_deep_stack(_read_stack_file, path, project, stack)


def _read_stack_file(path: Path, project: str, stack: str | None = None) -> tuple[dict[str, str], dict[str, str], list[str]]:
    """Stack file -> (config, secret config, notes) of the project's namespace, exactly as the
    Pulumi CLI hands them to the program: read, defaults merged and validated by the CLI's own
    rules (offline/cli_config.py). `secure:` values cannot be decrypted offline; they become a
    placeholder that still flows through the program as a secret. A required secret that is
    unset gets a placeholder too, with a note that the CLI refuses the stack until it is set."""
    stack = stack or path.name.removeprefix("Pulumi.").removesuffix(".yaml")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise StackFileError(f"cannot read stack file {path}: {exc.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise StackFileError(f"{path}: not UTF-8 text (byte {exc.start}); the Pulumi CLI reads YAML as UTF-8") from None
    decls = cli_config.load_project(PROJECT_FILE)
    notes = [f"the Pulumi CLI warns: {w}" for w in cli_config.empty_value_warnings(text)]
    try:
        values = cli_config.read_stack(text, decls)
        unset = [k for k, d in decls.config.items() if d.secret and not d.has_default and not d.has_value
                 and f"{project}:{k}" not in values]
        for key in unset:  # placeholder offline; the CLI itself stops here
            values[f"{project}:{key}"] = cli_config.Value(placeholder(key), secure=True)
            notes.append(f"the Pulumi CLI will refuse this stack ({cli_config.missing_keys_error(stack, [key])}) "
                         f"until you run: pulumi config set --secret {key} <value>")
        values = cli_config.merge(stack, decls, values)
        for key in _unset_shape_secrets(project, values):  # the program itself stops here
            unset.append(key)
            values[f"{project}:{key}"] = cli_config.Value(placeholder(key), secure=True)
            notes.append(f"`pulumi preview` will refuse this stack ({project}:{key} is required by its shape) "
                         f"until you run: pulumi config set --secret {key} <value>")
    except cli_config.CliRefusal as exc:
        raise StackFileError("\n".join(f"{path}: {p}" for p in exc.problems)) from None
    plain, secret = {}, {}
    for full_key, value in values.items():
        ns, _, key = full_key.partition(":")
        if ns != project:
            continue  # provider config (oci:, cloudflare:) is not the program's
        if value.secure:
            secret[key] = placeholder(key)
            if key not in unset:
                notes.append(f"{full_key} is encrypted; the offline preview uses a placeholder secret")
        else:
            plain[key] = value.text
    notes += _octal_notes(text, plain)
    return plain, secret, notes


def _unset_shape_secrets(project: str, values: dict[str, cli_config.Value]) -> list[str]:
    """The secrets the stack's shape needs (components/settings/access.py required_secrets) that the
    stack file leaves at their empty default."""
    def text(key: str) -> str:
        value = values.get(f"{project}:{key}")
        return value.text if value is not None and not value.secure else ""
    def unset(key: str) -> bool:
        value = values.get(f"{project}:{key}")
        return value is None or (not value.secure and not value.text)
    return [key for key in required_secrets(text("tailnet"), text("drainTransport"))
            if unset(key) and not (key == TAILNET_KEY and not unset(TAILNET_KEY_ALIAS))]


def _octal_notes(text: str, plain: dict[str, str]) -> list[str]:
    """yaml.v3 still reads a leading-zero number as octal (resolve.go): 02526 reaches the
    program as 1366. The CLI accepts it; say so, since the author surely meant decimal."""
    notes = []
    for key, value in plain.items():
        written = re.search(rf"^\s*(?:[\w-]+:)?{re.escape(key)}:\s*([-+]?0[0-7_]+)\s*(?:#.*)?$", text, re.M)
        if written and written.group(1).replace("_", "").lstrip("+-") not in ("0", "") and value != written.group(1):
            notes.append(f"{key}: {written.group(1)} is read by the Pulumi CLI (yaml.v3) as octal, so the program "
                         f"receives {value}; write it without the leading zero if you meant "
                         f"{int(written.group(1).replace('_', '').lstrip('+-0') or '0')}")
    return notes


@dataclass
class Registration:
    type: str
    name: str
    urn: str
    custom: bool
    parent: str
    provider: str
    props: dict
    outputs: dict
    id: str
    protect: bool
    ignoreChanges: list[str]
    deleteBeforeReplace: bool
    dependencies: list[str]
    additionalSecretOutputs: list[str]
    propertyDependencies: dict[str, list[str]] = field(default_factory=dict)  # input -> the URNs it came from


@dataclass
class Run:
    project: str
    stack: str
    first_preview: bool
    resources: list[Registration]
    outputs: dict[str, Any]
    secrets: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str = ""
    config: dict[str, str] = field(default_factory=dict)  # PULUMI_CONFIG as the engine builds it
    secret_keys: list[str] = field(default_factory=list)


def _struct_to_dict(struct) -> dict:
    from google.protobuf import json_format
    return json_format.MessageToDict(struct, preserving_proto_field_name=True)


def run(stack_file: Path, stack: str = "example", first_preview: bool = False, second_run: bool = False,
        project: str = "backup-mx", overrides: dict[str, str] | None = None,
        secret_overrides: dict[str, str] | None = None, live_zones: dict[str, list[dict]] | None = None) -> Run:
    """Run __main__.py once under mocks. `overrides` replace raw config values and
    `secret_overrides` secret ones, None unsetting one back to its plain default (tests);
    `live_zones` (domain -> records) replace a zone's made-up records with real ones."""
    plain, secret, notes = read_stack_file(stack_file, project, stack)
    plain.update(overrides or {})
    for key, value in (secret_overrides or {}).items():
        if value is not None:
            secret[key] = value
        elif secret.pop(key, None) is not None:
            plain.setdefault(key, "")  # the CLI merges the key's declared default, ""
    live_own: list[dict] = []
    if second_run:
        previous = _run_once(project, stack, plain, secret, first_preview=False, live_own=[], live_zones=live_zones)
        if previous.error:
            return previous
        live_own = [r.outputs for r in previous.resources if r.type == "cloudflare:index/dnsRecord:DnsRecord"]
    result = _run_once(project, stack, plain, secret, first_preview, live_own, live_zones)
    result.notes = notes + result.notes
    result.config, result.secret_keys = engine_config(project, plain, secret)
    return result


def engine_config(project: str, plain: dict[str, str], secret: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """The stack config as the engine hands it to the program and the policy pack
    (PULUMI_CONFIG): "project:key" -> string, Pulumi.yaml defaults already merged by the
    CLI's rules (read_stack_file), secrets decrypted."""
    config = {f"{project}:{k}": v for k, v in {**plain, **secret}.items()}
    return config, [f"{project}:{k}" for k in secret]


def _run_once(project, stack, plain, secret, first_preview, live_own, live_zones=None) -> Run:
    import pulumi
    from pulumi.runtime import mocks
    from pulumi.runtime import settings as rt_settings

    from offline.fakecloud import DEFAULT_ZONE_SIZE, ZONE_SIZES, FakeCloud, Zone

    zones = []
    for entry in json.loads(plain.get("cloudflareZoneIds", "[]")):
        domain, _, zone_id = entry.partition("=")
        extra = [_record(o) for o in live_own if o.get("zoneId") == zone_id.strip()]
        real = (live_zones or {}).get(domain.strip().lower())
        zones.append(Zone(domain.strip(), zone_id.strip(), plain.get("primaryMxHost", f"mail.{domain}"),
                          ZONE_SIZES.get(domain.strip(), DEFAULT_ZONE_SIZE) + len(extra), extra, live=real,
                          primary_preference=_number(plain.get("primaryMxPreference"), 1.0)))
    cloud = FakeCloud(plain.get("ociRegion", "eu-frankfurt-1"), zones, first_preview=first_preview)

    class Monitor(mocks.MockMonitor):
        def __init__(self, m):
            super().__init__(m)
            self.registrations: list[Registration] = []

        def RegisterResource(self, request):
            response = super().RegisterResource(request)
            if request.type != "pulumi:pulumi:Stack":
                self.registrations.append(Registration(
                    type=request.type, name=request.name, urn=response.urn, custom=bool(request.custom),
                    parent=request.parent, provider=request.provider, props=_struct_to_dict(request.object),
                    outputs=_struct_to_dict(response.object), id=response.id, protect=bool(request.protect),
                    ignoreChanges=list(request.ignoreChanges), deleteBeforeReplace=bool(request.deleteBeforeReplace),
                    dependencies=list(request.dependencies),
                    additionalSecretOutputs=list(request.additionalSecretOutputs),
                    propertyDependencies={k: list(v.urns) for k, v in request.propertyDependencies.items()
                                          if v.urns}))
            return response

        def RegisterResourceOutputs(self, request):
            # A component's state becomes what it registers, as in the engine.
            for r in self.registrations:
                if r.urn == request.urn:
                    r.outputs = _struct_to_dict(request.outputs)
            return super().RegisterResourceOutputs(request)

    monitor = Monitor(cloud)
    rt_settings.reset_options()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    pulumi.runtime.set_all_config({f"{project}:{k}": v for k, v in {**plain, **secret}.items()},
                                  secret_keys=[f"{project}:{k}" for k in secret])
    mocks.set_mocks(cloud, project=project, stack=stack, preview=first_preview, monitor=monitor)
    error = ""
    outputs: dict[str, Any] = {}
    try:
        runpy.run_path(str(ROOT / "__main__.py"), run_name="__main__")
        loop.run_until_complete(pulumi.runtime.stack.wait_for_rpcs())
        root = pulumi.runtime.get_root_resource()
        assert isinstance(root, pulumi.runtime.stack.Stack)
        outputs = loop.run_until_complete(_resolve(root.outputs))
    except pulumi.RunError as exc:
        error = str(exc)
    except Exception as exc:  # the program's own failure is the result
        error = f"{type(exc).__name__}: {exc}"
    finally:
        _settle(loop)
        loop.close()
    return Run(project, stack, first_preview, monitor.registrations, outputs, secrets=list(secret.values()),
               error=error)


def _number(text: str | None, default: float) -> float:
    try:
        return float(text) if text is not None else default
    except ValueError:
        return default  # the settings name the bad value


def _settle(loop: asyncio.AbstractEventLoop) -> None:
    """A program that failed leaves the SDK's RPC tasks pending; cancel and reap them so the
    error is the only thing printed (no "Task was destroyed but it is pending")."""
    pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in pending:
        task.cancel()
    if pending:
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))


def _record(outputs: dict) -> dict:
    record = {"type": outputs.get("type"), "name": outputs.get("name"), "content": outputs.get("content")}
    if "priority" in outputs:
        record["priority"] = outputs["priority"]
    return record


async def _resolve(exports: dict) -> dict:
    import pulumi

    async def one(value):
        out = pulumi.Output.from_input(value)
        if not await out.is_known():
            return UNKNOWN
        if await out.is_secret():
            return {SECRET_SIG: SECRET_MARK, "value": await out.future()}
        return await out.future()

    return {k: await one(v) for k, v in exports.items()}


# --- serialization --------------------------------------------------------------------

def redact(value: Any, secrets: list[str]) -> Any:
    """Replace secret values (also inside base64 blobs such as user_data) with [secret]."""
    if isinstance(value, dict):
        return {k: redact(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, secrets) for v in value]
    if isinstance(value, str) and secrets:
        decoded = _b64(value)
        if decoded is not None and any(f in decoded for s in secrets for f in _written_forms(s)):
            return base64.b64encode(redact(decoded, secrets).encode()).decode()
        for s in secrets:
            if value == s:
                return REDACTED
            for form in _written_forms(s):
                value = value.replace(form, REDACTED_IN_TEXT)
    return value


def _written_forms(secret: str) -> list[str]:
    """Every way the secret can appear inside a document: as is, and escaped the way YAML
    (double- or single-quoted, ASCII-only or not) and JSON write it. Longest first."""
    forms = {secret, secret.replace("'", "''"), json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1]}
    for unicode in (False, True):
        dumped = yaml.dump(secret, Dumper=yaml.SafeDumper, default_style='"', width=10**9, allow_unicode=unicode)
        forms.add(dumped.strip().removesuffix("...").strip()[1:-1])
    return sorted((f for f in forms if f), key=len, reverse=True)


def _b64(text: str) -> str | None:
    if len(text) < 16 or len(text) % 4:
        return None
    try:
        return base64.b64decode(text, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None


def public_outputs(outputs: dict) -> dict:
    """Stack outputs as `pulumi stack output --json` shows them: secrets as [secret]."""
    def show(v):
        if isinstance(v, dict) and v.get(SECRET_SIG) == SECRET_MARK:
            return REDACTED
        if isinstance(v, dict):
            return {k: show(x) for k, x in v.items()}
        if isinstance(v, list):
            return [show(x) for x in v]
        return "[unknown]" if v == UNKNOWN else v
    return {k: show(v) for k, v in outputs.items()}


def plan(result: Run, redacted: bool = True) -> dict:
    """The plan: every registration as the engine sends it to an analyzer. `redacted` (for
    files and printing) replaces secret values; the analyzer gets them in their secret
    envelope, as the engine sends them."""
    def hide(value):
        return redact(value, result.secrets) if redacted else value
    resources = []
    for r in result.resources:
        resources.append({
            "type": r.type, "name": r.name, "urn": r.urn, "custom": r.custom, "parent": r.parent,
            "provider": r.provider, "id": r.id,
            "props": hide(r.props), "outputs": hide(_mark_secret_outputs(r)),
            "options": {"protect": r.protect, "ignoreChanges": r.ignoreChanges,
                        "deleteBeforeReplace": r.deleteBeforeReplace,
                        "additionalSecretOutputs": r.additionalSecretOutputs},
            "dependencies": r.dependencies, "propertyDependencies": r.propertyDependencies,
        })
    config = {k: (REDACTED if redacted and k in result.secret_keys else v) for k, v in result.config.items()}
    return {"project": result.project, "stack": result.stack, "firstPreview": result.first_preview,
            "config": config, "resources": resources}


def _mark_secret_outputs(r: Registration) -> dict:
    """State keeps the secretness of inputs and of additionalSecretOutputs, as the engine does."""
    out = dict(r.outputs)
    for key, value in r.props.items():
        if isinstance(value, dict) and value.get(SECRET_SIG) == SECRET_MARK and key in out:
            out[key] = value
    for key in r.additionalSecretOutputs:
        if key in out and not (isinstance(out[key], dict) and out[key].get(SECRET_SIG) == SECRET_MARK):
            out[key] = {SECRET_SIG: SECRET_MARK, "value": out[key]}
    return out
