"""What tests share besides fixtures: the stack files, the program run, plan editing, lab dirs."""
import base64
import collections
import copy
import json
import re
import subprocess
import tempfile
import time
from pathlib import Path

import yaml

from offline import program
from offline.preview import DEFERRED

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
EXAMPLE = ROOT / "examples" / "Pulumi.seed.yaml"  # the ADR's seed deployment; the tests' names are its own
TWO_DOMAINS = ROOT / "examples" / "Pulumi.twodomains.yaml"
BREAK_GLASS = ROOT / "examples" / "Pulumi.breakglass.yaml"
TWO_RELAYS = ROOT / "examples" / "Pulumi.tworelays.yaml"
# The required stack keys, as the CLI hands them to the program (lists as JSON).
REQUIRED = {
    "domains": json.dumps(["example.net"]),
    "cloudflareZoneIds": json.dumps(["example.net=" + "a" * 32]),
    "primaryMxHost": "mail.example.net",
    "ociCompartmentId": "ocid1.tenancy.oc1..aaaaaaaaabc",
    "homelabCidr": "198.51.100.7/32",
    "certbotEmail": "ops@example.net",
    "headscaleLoginServer": "https://hs.example.net",
}
SECRET = "hskey-5d41402abc4b2a76b9719d911017c592"  # a recognisable preauth key for leak checks


def stack_secrets(stack_file=EXAMPLE, tailnet_key=SECRET) -> dict[str, str]:
    """The secrets a test run of the stack gets: the offline preview's placeholders for what its
    shape needs (none for the tailnet with tailnet none), the tailnet key recognisable."""
    _, secret, _ = program.read_stack_file(stack_file, "backup-mx")
    if "headscalePreauthKey" in secret:
        secret["headscalePreauthKey"] = tailnet_key
    return secret


def run_stack(stack_file=EXAMPLE, **kw):
    kw.setdefault("secret_overrides", stack_secrets(stack_file))
    result = program.run(stack_file, stack=stack_file.stem.split(".")[-1], **kw)
    assert not result.error, result.error
    return result


# Plan editing: tests edit the artifacts, not the renderers.

def resource(plan, type_suffix, name_part=""):
    found = [r for r in plan["resources"] if r["type"].endswith(type_suffix) and name_part in r["name"]]
    assert found, f"no {type_suffix} {name_part}"
    return found[0]


def unwrap(value):
    if isinstance(value, dict) and value.get(program.SECRET_SIG) == program.SECRET_MARK:
        return value["value"]
    return value


def metadata(r, where):
    """The metadata map; in state the engine keeps it wholly secret (additionalSecretOutputs)."""
    return unwrap(r[where]["metadata"])


def user_data_doc(r, where="props"):
    return yaml.safe_load(base64.b64decode(unwrap(metadata(r, where)["user_data"])).decode())


def set_user_data_doc(r, doc, where=("props", "outputs")):
    text = "#cloud-config\n" + yaml.safe_dump(doc, sort_keys=False)
    encoded = base64.b64encode(text.encode()).decode()
    for w in where:
        metadata(r, w)["user_data"] = {program.SECRET_SIG: program.SECRET_MARK, "value": encoded}


def edit_file(plan, path_suffix, edit):
    """Apply edit(text) -> text to a write_files entry of the instance's user_data."""
    plan = copy.deepcopy(plan)
    inst = resource(plan, "instance:Instance")
    doc = user_data_doc(inst)
    entry = next(f for f in doc["write_files"] if f["path"].endswith(path_suffix))
    entry["content"] = edit(entry["content"])
    set_user_data_doc(inst, doc)
    return plan


def set_main_cf(plan, name, value):
    def edit(text):
        lines = [ln for ln in text.splitlines() if not ln.startswith(f"{name} ") and not ln.startswith(f"{name}=")]
        if value is not None:
            lines.append(f"{name} = {value}")
        return "\n".join(lines) + "\n"
    return edit_file(plan, "/main.cf", edit)



LAB_DIRS: list[Path] = []


def lab_dir(name):
    path = Path(tempfile.mkdtemp(prefix=f"backup-mx-{name}-", dir="/tmp"))
    path.chmod(0o755)  # Postfix's unprivileged processes traverse it
    LAB_DIRS.append(path)
    return path


# Plan mutations and verdicts, shared by the pack's tests.

DELETE = object()  # set_prop/set_config: remove the key


def reported(violations, level=None):
    return {v.policy for v in violations if not v.message.startswith(DEFERRED) and (level is None or v.level == level)}


def set_prop(plan, type_suffix, path, value, name_part="", where=("props", "outputs")):
    plan = copy.deepcopy(plan)
    r = resource(plan, type_suffix, name_part)
    for w in where:
        node = r[w]
        for key in path[:-1]:
            node = node.setdefault(key, {})
        if value is DELETE:
            node.pop(path[-1], None)
        else:
            node[path[-1]] = value
    return plan


def set_config(plan, key, value):
    """Change one stack config value as the engine passes it to the pack (PULUMI_CONFIG)."""
    import json
    plan = copy.deepcopy(plan)
    full = f"backup-mx:{key}"
    if value is DELETE:
        plan["config"].pop(full, None)
    else:
        plan["config"][full] = json.dumps(value) if isinstance(value, list) else str(value)
    return plan


def add_resource(plan, type_, name, props, options=None, property_dependencies=None):
    """A resource added under the BackupMx component: an OCI one inherits the component's OCI
    provider, as a child resource does in Pulumi."""
    plan = copy.deepcopy(plan)
    parent = resource(plan, "index:BackupMx")["urn"]
    urn = f"urn:pulumi:example::backup-mx::{type_}::{name}"
    provider = resource(plan, "instance:Instance")["provider"] if type_.startswith("oci:") else ""
    plan["resources"].append({
        "type": type_, "name": name, "urn": urn, "custom": True, "parent": parent, "provider": provider, "id": name,
        "propertyDependencies": copy.deepcopy(property_dependencies or {}),
        "props": copy.deepcopy(props), "outputs": copy.deepcopy(props), "dependencies": [],
        "options": {"protect": False, "ignoreChanges": [], "deleteBeforeReplace": False,
                    "additionalSecretOutputs": [], **(options or {})}})
    return plan


def drop_resource(plan, type_suffix, name_part=""):
    plan = copy.deepcopy(plan)
    plan["resources"].remove(resource(plan, type_suffix, name_part))
    return plan


def sh(*cmd, ns=None, check=True, timeout=120, **kw):
    """Run a command, inside network namespace `ns` when given."""
    full = (["ip", "netns", "exec", ns] if ns else []) + list(cmd)
    return subprocess.run(full, capture_output=True, text=True, check=check, timeout=timeout, **kw)


def ids_at(sink) -> "collections.Counter[str]":
    """How many times each X-Lab-Id reached the fake primary."""
    found: collections.Counter[str] = collections.Counter()
    for text in sink.messages():
        match = re.search(r"^X-Lab-Id: (\S+)", text, re.M)
        if match:
            found[match.group(1)] += 1
    return found


def with_live_count(plan, count):
    """The plan with the (first) zone's live record count set to `count`, and its live record
    keys padded or trimmed to match with CNAMEs of their own, as one lookup of the zone gives
    both. A count that is not a number is set alone."""
    plan = copy.deepcopy(plan)
    for where in ("props", "outputs"):
        zone = resource(plan, "index:Dns")[where]["zones"][0]
        zone["liveRecordCount"] = count
        if isinstance(count, int) and isinstance(zone.get("liveRecordKeys"), list):
            keys, domain = list(zone["liveRecordKeys"]), zone["domain"]
            pad = (f"CNAME pad{i:03d}.{domain} ingress.{domain}" for i in range(count))
            while len(keys) < count:
                keys.append(next(pad))
            while len(keys) > count:
                keys.remove(next(k for k in reversed(keys) if k.startswith("CNAME ")))
            zone["liveRecordKeys"] = sorted(keys)
    return plan


def wait_deferred(relay, count: int, refused: bool = False, timeout: float = 120) -> None:
    """Wait until the relay's queue is `count` messages, all in the deferred queue (with
    `refused`, each recipient last refused by the primary with 5xx)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        queue = relay.queue()
        if len(queue) == count and all(m["queue_name"] == "deferred" for m in queue) and (
                not refused or all(re.search(r"said: 5\d\d", r.get("delay_reason", ""))
                                   for m in queue for r in m["recipients"])):
            return
        time.sleep(0.2)
    raise AssertionError(f"not {count} deferred: {[(m['queue_id'], m['queue_name']) for m in relay.queue()]}")

