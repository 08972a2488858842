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

from components.settings import declarations

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


def read_stack_file(path: Path, project: str) -> tuple[dict[str, str], dict[str, str], list[str]]:
    """Stack file -> (plain config, secret config, notes), raw strings as the CLI passes them.

    Read the way the Pulumi CLI reads it (config.Value.UnmarshalYAML over Go's yaml.v3): a
    scalar value reaches the program as its text (`020` stays "020", `yes` stays "yes"), a
    `secure:` mapping is a secret, a list or mapping becomes JSON, and a key written twice is
    an error. A list item that yaml.v3 would turn into a number, boolean, null or timestamp is
    refused: quoted, it is unambiguous. `secure:` values cannot be decrypted offline; they and
    unset secret keys become a placeholder that still flows through the program as a secret."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise StackFileError(f"cannot read stack file {path}: {exc.strerror}") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise StackFileError(f"{path} is not valid YAML: {' '.join(str(exc).split())}") from None
    decls = declarations()
    plain, secret, notes = {}, {}, []
    config = _mapping_value(root, "config", path) if root is not None else None
    for key_node, value in (config.value if config is not None else []):
        full_key = key_node.value
        ns, _, key = full_key.partition(":")
        if ns != project:
            continue  # provider config (oci:, cloudflare:) is not the program's
        if key not in decls:
            raise StackFileError(f"{path}: {full_key} is not declared in Pulumi.yaml; "
                                 f"known keys: {', '.join(sorted(decls))}")
        if _is_secure(value):
            secret[key] = placeholder(key)
            notes.append(f"{full_key} is encrypted; the offline preview uses a placeholder secret")
        elif isinstance(value, yaml.ScalarNode):
            plain[key] = "" if _resolves_to(value) == "null" else value.value
        else:
            plain[key] = json.dumps(_collection(value, full_key, path))
    for key, decl in decls.items():
        if decl.get("secret") and "default" not in decl and key not in secret and key not in plain:
            secret[key] = placeholder(key)
            notes.append(f"{project}:{key} is not set; the offline preview uses a placeholder secret")
    return plain, secret, notes


_KIND = {yaml.MappingNode: "mapping", yaml.SequenceNode: "list", yaml.ScalarNode: "scalar"}


def _mapping_value(root: yaml.Node, name: str, path: Path) -> yaml.MappingNode | None:
    if not isinstance(root, yaml.MappingNode):
        raise StackFileError(f"{path}: a stack file is a mapping with a `config:` key; this one is a "
                             f"{_KIND.get(type(root), 'document')} (line {root.start_mark.line + 1})")
    _no_duplicates(root, path)
    found = next((v for k, v in root.value if isinstance(k, yaml.ScalarNode) and k.value == name), None)
    if found is None or (isinstance(found, yaml.ScalarNode) and _resolves_to(found) == "null"):
        return None
    if not isinstance(found, yaml.MappingNode):
        raise StackFileError(f"{path}: line {found.start_mark.line + 1}: `{name}:` must be a mapping of "
                             f"project:key: value entries, not a {_KIND.get(type(found), 'node')}")
    return found


def _no_duplicates(node: yaml.Node, path: Path) -> None:
    """yaml.v3 refuses a mapping that repeats a key, at any depth."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                line = key.start_mark.line + 1
                if key.value in seen:
                    raise StackFileError(f"{path}: line {line}: {key.value} is set twice (first on line "
                                         f"{seen[key.value]}); the Pulumi CLI refuses the file; keep one")
                seen[key.value] = line
            _no_duplicates(value, path)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _no_duplicates(item, path)


def _is_secure(node: yaml.Node) -> bool:
    return (isinstance(node, yaml.MappingNode) and len(node.value) == 1
            and node.value[0][0].value == "secure" and isinstance(node.value[0][1], yaml.ScalarNode))


# yaml.v3's resolve(): what an unquoted scalar inside a list or mapping becomes.
_V3_NULL = {"", "~", "null", "Null", "NULL"}
_V3_BOOL = {"true", "True", "TRUE", "false", "False", "FALSE"}
_V3_NUMBER = re.compile(r"[-+]?(\.[0-9]+|[0-9][0-9_]*(\.[0-9]*)?)([eE][-+]?[0-9]+)?|[-+]?0[xXoObB][0-9a-fA-F_]+"
                        r"|[-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN)")
_V3_TIMESTAMP = re.compile(r"[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}([Tt ].*)?")


def _resolves_to(node: yaml.ScalarNode) -> str:
    if node.style is not None or node.tag not in ("tag:yaml.org,2002:str", "tag:yaml.org,2002:null",
                                                  "tag:yaml.org,2002:bool", "tag:yaml.org,2002:int",
                                                  "tag:yaml.org,2002:float", "tag:yaml.org,2002:timestamp"):
        return "string"
    text = node.value
    if text in _V3_NULL:
        return "null"
    if text in _V3_BOOL:
        return "boolean"
    if _V3_NUMBER.fullmatch(text):
        return "number"
    if _V3_TIMESTAMP.fullmatch(text):
        return "timestamp"
    return "string"


def _collection(node: yaml.Node, full_key: str, path: Path):
    if isinstance(node, yaml.SequenceNode):
        return [_collection(item, full_key, path) for item in node.value]
    if isinstance(node, yaml.MappingNode):
        return {k.value: _collection(v, full_key, path) for k, v in node.value}
    assert isinstance(node, yaml.ScalarNode)
    kind = _resolves_to(node)
    if kind != "string":
        raise StackFileError(f"{path}: line {node.start_mark.line + 1}: {full_key}: item {node.value!r} is read "
                             f"by the Pulumi CLI as a {kind}, not text; quote it (\"{node.value}\")")
    return node.value


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
        secret_overrides: dict[str, str] | None = None) -> Run:
    """Run __main__.py once under mocks. `overrides` replace raw config values (tests)."""
    plain, secret, notes = read_stack_file(stack_file, project)
    plain.update(overrides or {})
    secret.update(secret_overrides or {})
    live_own: list[dict] = []
    if second_run:
        previous = _run_once(project, stack, plain, secret, first_preview=False, live_own=[])
        if previous.error:
            return previous
        live_own = [r.outputs for r in previous.resources if r.type == "cloudflare:index/dnsRecord:DnsRecord"]
    result = _run_once(project, stack, plain, secret, first_preview, live_own)
    result.notes = notes + result.notes
    result.config, result.secret_keys = engine_config(project, plain, secret)
    return result


def engine_config(project: str, plain: dict[str, str], secret: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """The stack config as the engine hands it to the program and the policy pack
    (PULUMI_CONFIG): "project:key" -> string, Pulumi.yaml defaults applied, secrets decrypted."""
    decls = declarations()
    config = {}
    for key, decl in decls.items():
        if key in secret:
            config[f"{project}:{key}"] = secret[key]
        elif key in plain:
            config[f"{project}:{key}"] = plain[key]
        elif "default" in decl:
            default = decl["default"]
            config[f"{project}:{key}"] = json.dumps(default) if isinstance(default, (list, dict)) else (
                str(default).lower() if isinstance(default, bool) else str(default))
    return config, [f"{project}:{k}" for k in secret]


def _run_once(project, stack, plain, secret, first_preview, live_own) -> Run:
    import pulumi
    from pulumi.runtime import mocks
    from pulumi.runtime import settings as rt_settings

    from offline.fakecloud import DEFAULT_ZONE_SIZE, ZONE_SIZES, FakeCloud, Zone

    zones = []
    for entry in json.loads(plain.get("cloudflareZoneIds", "[]")):
        domain, _, zone_id = entry.partition("=")
        extra = [_record(o) for o in live_own if o.get("zoneId") == zone_id.strip()]
        zones.append(Zone(domain.strip(), zone_id.strip(), plain.get("primaryMxHost", f"mail.{domain}"),
                          ZONE_SIZES.get(domain.strip(), DEFAULT_ZONE_SIZE) + len(extra), extra))
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
                    additionalSecretOutputs=list(request.additionalSecretOutputs)))
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
            "dependencies": r.dependencies,
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
