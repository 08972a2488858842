"""drainTransport wireguard: the settings, the rendered tunnel, the pack, and a real WireGuard
tunnel (Debian's wireguard-go and wireguard-tools) between the relay and a fake primary.

Lab overrides (listed): the tunnel interfaces are named per test run instead of wg0, the
firewall's endpoint is its veth address instead of its WAN name, and the relay's
smtp_connect_timeout is 5s so a dead tunnel defers mail in seconds instead of 30.
"""
import base64
import copy
import json
import os
import re
import shutil
import subprocess
import time

import pytest
import yaml

from backup_mx_rules import tunnel as wgconf
from components import settings
from components.wireguard import public_key
from lab import Lab, files_from_run
from lab.client import deliver, message
from lab.instance import stop_group
from offline import program
from tests.helpers import (
    REQUIRED,
    ROOT,
    SECRET,
    add_resource,
    edit_file,
    lab_dir,
    reported,
    resource,
    run_stack,
    set_config,
    set_user_data_doc,
    sh,
    user_data_doc,
    wait_deferred,
)

WIREGUARD = ROOT / "examples" / "Pulumi.wireguard.yaml"
RELAY_TUNNEL, PRIMARY_TUNNEL = "10.253.0.20", "10.253.0.1"
DOMAIN = "viktorbarzin.me"


def genkey() -> str:
    return subprocess.run(["wg", "genkey"], capture_output=True, text=True, check=True).stdout.strip()


def wg_pubkey(private: str) -> str:
    return subprocess.run(["wg", "pubkey"], input=private, capture_output=True, text=True,
                          check=True).stdout.strip()


@pytest.fixture(scope="module")
def keys():
    relay, primary = genkey(), genkey()
    return {"relay": relay, "primary": primary, "relay_pub": wg_pubkey(relay), "primary_pub": wg_pubkey(primary)}


def wg_run(keys, **overrides):
    return run_stack(WIREGUARD, overrides={"wireguardPeerPublicKey": keys["primary_pub"], **overrides},
                     secret_overrides={"headscalePreauthKey": SECRET, "wireguardPrivateKey": keys["relay"]})


@pytest.fixture(scope="module")
def wg_stack(keys):
    return wg_run(keys)


@pytest.fixture(scope="module")
def wg_plan(wg_stack):
    return program.plan(wg_stack, redacted=False)


# --- the key derivation, judged by wg(8) ------------------------------------------------

def test_public_key_derivation_matches_wg_pubkey():
    for _ in range(8):
        private = genkey()
        assert public_key(private) == wg_pubkey(private)


# --- settings ---------------------------------------------------------------------------

WG_RAW = {**REQUIRED, "drainTransport": "wireguard", "wireguardPeerPublicKey": base64.b64encode(b"p" * 32).decode(),
          "wireguardEndpoint": "home.example.net:51820", "wireguardRelayAddress": RELAY_TUNNEL,
          "wireguardPrimaryAddress": PRIMARY_TUNNEL}
GOOD_KEY = settings.SecretConfig(base64.b64encode(b"k" * 32).decode(), True)


def load_wg(key=GOOD_KEY, **changes):
    raw = {**WG_RAW, **changes}
    return settings.load("backup-mx", lambda k: raw.get(k), tailnet_key=settings.SecretConfig("k", True), wireguard_key=key)


def test_a_complete_wireguard_config_drains_to_the_tunnel():
    s = load_wg()
    assert (s.drain_host, s.drain_port, s.drain_source_address) == (PRIMARY_TUNNEL, 25, RELAY_TUNNEL)
    assert s.wireguard and s.wireguard.allowed_ips == f"{PRIMARY_TUNNEL}/32"


@pytest.mark.parametrize("key, changes, expected", [
    (None, {}, "wireguardPrivateKey: is required with drainTransport wireguard"),
    (settings.SecretConfig(GOOD_KEY.text, False), {}, "wireguardPrivateKey: is stored in plain text"),
    (settings.SecretConfig("zQ9-malformed-tunnel-key-7Kx", True), {}, "wireguardPrivateKey: is not a WireGuard key"),
    (GOOD_KEY, {"wireguardPeerPublicKey": "abc"}, "wireguardPeerPublicKey: 'abc' is not a WireGuard key"),
    (GOOD_KEY, {"wireguardEndpoint": "home.example.net"}, "wireguardEndpoint: 'home.example.net' is not host:port"),
    (GOOD_KEY, {"wireguardEndpoint": "home.example.net:70000"}, "is not host:port"),
    (GOOD_KEY, {"wireguardRelayAddress": "203.0.113.5"}, "wireguardRelayAddress: '203.0.113.5' is not a private"),
    (GOOD_KEY, {"wireguardPrimaryAddress": RELAY_TUNNEL}, "equals wireguardPrimaryAddress"),
    (GOOD_KEY, {"primaryMynetworks": json.dumps(["127.0.0.0/8", "10.253.0.0/24"])}, "lies inside primaryMynetworks"),
    (GOOD_KEY, {"vcnCidr": "10.253.0.0/24"}, "lies inside vcnCidr"),
    # The CLI merges drainPort's default (2526) into every stack, so only another value is seen.
    (GOOD_KEY, {"drainPort": "2527"}, "drainPort: applies to drainTransport nat only"),
    # Drains to nowhere (issue 21): the endpoint at loopback, at a relay, inside the tunnel; the
    # primary's tunnel address at the relay's own VCN address.
    (GOOD_KEY, {"wireguardEndpoint": "127.0.0.1:51820"}, "wireguardEndpoint: 127.0.0.1 is no host at all"),
    (GOOD_KEY, {"wireguardEndpoint": "localhost:51820"}, "wireguardEndpoint: 'localhost:51820' is not host:port"),
    (GOOD_KEY, {"wireguardEndpoint": "mx2.example.net:51820"}, "wireguardEndpoint: 'mx2.example.net' is a relay"),
    (GOOD_KEY, {"wireguardEndpoint": f"{PRIMARY_TUNNEL}:51820"}, "is inside the tunnel (AllowedIPs"),
    (GOOD_KEY, {"wireguardEndpoint": f"{RELAY_TUNNEL}:51820"}, "is inside the tunnel"),
    (GOOD_KEY, {"wireguardEndpoint": "10.42.0.10:51820"}, "wireguardEndpoint: 10.42.0.10 lies inside vcnCidr"),
    (GOOD_KEY, {"wireguardPrimaryAddress": "10.42.0.10"}, "wireguardPrimaryAddress: 10.42.0.10 lies inside vcnCidr"),
    (GOOD_KEY, {"drainHost": "mail.example.net"}, "drainHost: applies to drainTransport nat only"),
    (GOOD_KEY, {"drainTransport": "ipsec"}, "drainTransport: 'ipsec' is not allowed; allowed: nat, wireguard"),
])
def test_wireguard_config_errors_name_the_key(key, changes, expected):
    with pytest.raises(settings.ConfigError) as err:
        load_wg(key, **changes)
    assert expected in str(err.value)
    if key is not None:
        assert key.text not in str(err.value)  # a secret is named, never echoed


def test_tunnel_keys_without_the_wireguard_transport_are_refused():
    raw = {**REQUIRED, "wireguardEndpoint": "home.example.net:51820"}
    with pytest.raises(settings.ConfigError) as err:
        settings.load("backup-mx", lambda k: raw.get(k), tailnet_key=settings.SecretConfig("k", True))
    assert "wireguardEndpoint: is set but drainTransport is nat" in str(err.value)


# --- what the program renders and outputs -----------------------------------------------

def test_the_tunnel_is_rendered_and_the_firewall_peer_comes_out_as_data(wg_stack, keys):
    out = wg_stack.outputs
    assert out["drainTarget"]["postfix"] == f"smtp:[{PRIMARY_TUNNEL}]:25"
    assert out["drainSourceAddress"] == RELAY_TUNNEL
    peer = out["wireguardPeer"]
    assert peer["publicKey"] == keys["relay_pub"] and peer["allowedIps"] == f"{RELAY_TUNNEL}/32"
    enablement = out["primaryEnablement"]
    assert "pfsense" not in enablement, "no WAN NAT rule with the tunnel"
    assert enablement["wireguardPeer"] == peer and enablement["address"] == RELAY_TUNNEL
    assert "package" in peer["note"]
    files = files_from_run(wg_stack)
    assert f"[{PRIMARY_TUNNEL}]:25" in files["transport"]
    doc = yaml.safe_load(base64.b64decode(resource_user_data(wg_stack)).decode())
    conf = next(f for f in doc["write_files"] if f["path"] == "/etc/wireguard/wg0.conf")
    assert conf["permissions"] == "0600" and f"PrivateKey = {keys['relay']}" in conf["content"]
    assert re.search(rf"^AllowedIPs = {re.escape(PRIMARY_TUNNEL)}/32$", conf["content"], re.M)


def resource_user_data(run):
    inst = next(r for r in run.resources if r.type.endswith("instance:Instance"))
    return inst.props["metadata"]["user_data"]["value"]


def test_the_private_key_is_never_printed(wg_stack, keys, tmp_path):
    shown = json.dumps(program.public_outputs(wg_stack.outputs)) + json.dumps(program.plan(wg_stack))
    assert keys["relay"] not in shown
    assert keys["relay_pub"] in shown  # the public key is data the firewall needs
    inst = next(r for r in wg_stack.resources if r.type.endswith("instance:Instance"))
    assert inst.props["metadata"]["user_data"][program.SECRET_SIG] == program.SECRET_MARK


def test_the_nat_example_renders_no_tunnel(example_run):
    files = files_from_run(example_run)
    assert "DRAIN_TRANSPORT=nat" in files["backup-mx.env"] and "WG_INTERFACE" not in files["backup-mx.env"]
    assert "pfsense" in example_run.outputs["primaryEnablement"]


# --- the pack ---------------------------------------------------------------------------

def edit_conf(plan, edit, mode=None):
    plan = copy.deepcopy(plan)
    inst = resource(plan, "instance:Instance")
    doc = user_data_doc(inst)
    entry = next(f for f in doc["write_files"] if f["path"] == "/etc/wireguard/wg0.conf")
    entry["content"] = edit(entry["content"])
    if mode:
        entry["permissions"] = mode
    set_user_data_doc(inst, doc)
    return plan


def drop_conf(plan):
    plan = copy.deepcopy(plan)
    inst = resource(plan, "instance:Instance")
    doc = user_data_doc(inst)
    doc["write_files"] = [f for f in doc["write_files"] if not f["path"].startswith("/etc/wireguard/")]
    set_user_data_doc(inst, doc)
    return plan


def allowed(value):
    return lambda text: re.sub(r"^AllowedIPs = .*$", f"AllowedIPs = {value}", text, flags=re.M)


def not_secret(plan):
    plan = copy.deepcopy(plan)
    resource(plan, "instance:Instance")["options"]["additionalSecretOutputs"] = []
    return plan


def leak_key(plan, keys):
    return add_resource(plan, "cloudflare:index/dnsRecord:DnsRecord", "leak", {
        **resource(plan, "DnsRecord", "relay-a")["props"], "name": "leak.viktorbarzin.me", "type": "TXT",
        "content": keys["relay"]})


WG_MUTATIONS = {
    "AllowedIPs a default route": (lambda p, k: edit_conf(p, allowed("0.0.0.0/0")), "wireguard-tunnel"),
    "AllowedIPs the whole tunnel subnet": (lambda p, k: edit_conf(p, allowed("10.253.0.0/24")), "wireguard-tunnel"),
    "AllowedIPs a second network": (lambda p, k: edit_conf(p, allowed(f"{PRIMARY_TUNNEL}/32, 192.168.1.0/24")),
                                    "wireguard-tunnel"),
    "AllowedIPs on a second line": (lambda p, k: edit_conf(p, lambda t: t + "AllowedIPs = 0.0.0.0/0\n"),
                                    "wireguard-tunnel"),
    "a peer that is not the firewall": (lambda p, k: edit_conf(
        p, lambda t: t.replace(k["primary_pub"], k["relay_pub"])), "wireguard-tunnel"),
    "the key file world-readable": (lambda p, k: edit_conf(p, lambda t: t, mode="0644"), "wireguard-tunnel"),
    "a PostUp hook": (lambda p, k: edit_conf(p, lambda t: t.replace(
        "[Peer]", "PostUp = postconf -e relay_domains=example.com\n\n[Peer]")), "wireguard-tunnel"),
    "no tunnel config": (lambda p, k: drop_conf(p), "wireguard-tunnel"),
    "'#' and a form feed hide the Endpoint from wg": (lambda p, k: edit_conf(
        p, lambda t: re.sub(r"^Endpoint", "#\fEndpoint", t, flags=re.M)), "wireguard-tunnel"),
    "'[ Interface ]': wg-quick passes Address to wg, which refuses it": (lambda p, k: edit_conf(
        p, lambda t: t.replace("[Interface]", "[ Interface ]")), "wireguard-tunnel"),
    "metadata not an additional secret output": (lambda p, k: not_secret(p), "wireguard-tunnel"),
    "the private key in another resource": (leak_key, "wireguard-tunnel"),
    "the relay's tunnel address in the primary's mynetworks": (lambda p, k: set_config(
        p, "primaryMynetworks", ["127.0.0.0/8", "10.253.0.0/24"]), "vm-not-in-mynetworks"),
    "the drain to the primary's public name on 25, outside the tunnel": (lambda p, k: edit_file(
        p, "/transport", lambda t: t.replace(f"[{PRIMARY_TUNNEL}]:25", "[mail.viktorbarzin.me]:25")), "drain-port"),
    "the stack's primary tunnel address is not where the relay drains": (lambda p, k: set_config(
        p, "wireguardPrimaryAddress", "10.253.0.9"), "drain-port"),
    "drainTransport the pack cannot read": (lambda p, k: set_config(p, "drainTransport", "gre"), "wireguard-tunnel"),
}


def test_the_wireguard_stack_passes_the_pack(policies, wg_plan):
    assert reported(policies.check(wg_plan)) == set()
    assert policies.check(wg_plan, dry_run=False) == []


@pytest.mark.parametrize("form", [f"[{PRIMARY_TUNNEL}]", f"[{PRIMARY_TUNNEL}]:smtp"])
def test_the_tunnel_drain_without_a_port_is_port_25(policies, wg_plan, form):
    """smtp:[10.253.0.1] and smtp:[10.253.0.1]:smtp are the smtp service, port 25: the drain."""
    plan = edit_file(wg_plan, "/transport", lambda t: t.replace(f"[{PRIMARY_TUNNEL}]:25", form))
    assert reported(policies.check(plan)) == set(), [v.message for v in policies.check(plan)]


@pytest.mark.parametrize("case", sorted(WG_MUTATIONS))
def test_wireguard_mutation_is_reported_by_its_policy(policies, wg_plan, keys, case):
    mutate, policy = WG_MUTATIONS[case]
    violations = policies.check(mutate(wg_plan, keys))
    assert policy in reported(violations), [v.message for v in violations]
    assert keys["relay"] not in " ".join(v.message for v in violations)


# --- the pack reads wg0.conf as wg-quick and wg read it ------------------------------------

IP_ENDPOINT = "192.0.2.7:51820"


def _line(key):
    return lambda text: next(ln for ln in text.splitlines() if ln.startswith(key))


def _sub(key, new):
    """Replace the line starting with `key` by new(line)."""
    return lambda text: text.replace(_line(key)(text), new(_line(key)(text)))


# Forms of the rendered wg0.conf, each judged by wg-quick up in a namespace: what the pack reads
# must be what the tunnel gets, and the pack passes nothing the tunnel does not get.
CONF_FORMS = {
    "as rendered": lambda t: t,
    "a form feed after '#' hides the Endpoint": _sub("Endpoint", lambda ln: "#\f" + ln),
    "a file separator after '#' hides the AllowedIPs": _sub("AllowedIPs", lambda ln: "#\x1c" + ln),
    "CRLF line ends": lambda t: t.replace("\n", "\r\n"),
    "spaces and a form feed inside the Endpoint": _sub("Endpoint", lambda ln: ln.replace(":", " \f: ")),
    "a vertical tab inside AllowedIPs": _sub("AllowedIPs", lambda ln: ln.replace("/", "/\v")),
    "lower-case section and keys": lambda t: t.replace("[Interface]", "[interface]").replace(
        "Address", "address").replace("Endpoint", "endpoint"),
    "'[ Interface ]' is not wg-quick's section": lambda t: t.replace("[Interface]", "[ Interface ]"),
    "a second AllowedIPs after a comment": _sub("AllowedIPs", lambda ln: ln + " # , 0.0.0.0/0"),
    "a comment line hiding a default route": _sub("AllowedIPs", lambda ln: ln + "\n# AllowedIPs = 0.0.0.0/0"),
    "a default route on a second line": _sub("AllowedIPs", lambda ln: ln + "\nAllowedIPs = 0.0.0.0/0"),
    "a no-break space before '='": _sub("Endpoint", lambda ln: ln.replace(" =", "\u00a0=")),
    "a key before any section": lambda t: "ListenPort = 51820\n" + t,
    "a form feed at the end of Address": _sub("Address", lambda ln: ln + "\f"),
    "Address with a form feed inside": _sub("Address", lambda ln: ln.replace("/", "\f/")),
}


@pytest.fixture(scope="module")
def ip_endpoint_conf(keys):
    run = wg_run(keys, wireguardEndpoint=IP_ENDPOINT)
    doc = yaml.safe_load(base64.b64decode(resource_user_data(run)).decode())
    return next(f["content"] for f in doc["write_files"] if f["path"] == "/etc/wireguard/wg0.conf")


@pytest.fixture(scope="module")
def wg_netns():
    ns = f"bmxwq{os.getpid() % 100000}"
    sh("ip", "netns", "add", ns)
    try:
        yield ns
    finally:
        for pid in sh("ip", "netns", "pids", ns, check=False).stdout.split():
            stop_pid(int(pid))
        sh("ip", "netns", "del", ns, check=False)


def stop_pid(pid):
    try:
        os.kill(pid, 15)
    except ProcessLookupError:
        pass


def wg_quick_view(ns, path):
    """wg-quick up the file in `ns`, read what the interface got, and take it down again.
    None when wg-quick up fails."""
    name = path.stem
    up = sh("wg-quick", "up", str(path), ns=ns, check=False)
    if up.returncode != 0:
        sh("ip", "link", "del", name, ns=ns, check=False)
        return None
    try:
        shown = wgconf.parse(sh("wg", "showconf", name, ns=ns).stdout)
        addrs = sorted(re.findall(r"\binet6? (\S+) scope global", sh("ip", "-o", "addr", "show", "dev", name,
                                                                        ns=ns).stdout))
    finally:
        sh("wg-quick", "down", str(path), ns=ns, check=False)
    (peer,) = shown.of("peer")
    return {"address": addrs, "publickey": peer.get("publickey"), "endpoint": peer.get("endpoint"),
            "allowedips": wgconf._listed(peer.get("allowedips", []))}


def pack_view(text):
    conf = wgconf.parse(text)
    if len(conf.of("peer")) != 1:
        return "refused"
    peer = conf.of("peer")[0]
    try:
            return {"address": conf.addresses(),
                "publickey": peer.get("publickey"), "endpoint": peer.get("endpoint"),
                "allowedips": wgconf._listed(peer.get("allowedips", []))}
    except ValueError:
        return "refused"


@pytest.mark.parametrize("form", sorted(CONF_FORMS))
def test_the_pack_reads_wg0_conf_as_wg_quick_and_wg_do(ip_endpoint_conf, wg_netns, keys, tmp_path, form):
    text = CONF_FORMS[form](ip_endpoint_conf)
    path = tmp_path / f"bmxq{os.getpid() % 10000}.conf"
    path.write_text(text)
    path.chmod(0o600)
    real = wg_quick_view(wg_netns, path)
    try:
        ours = pack_view(text)
    except wgconf.ConfError:
        ours = "refused"
    problems = (["refused"] if ours == "refused" else
                wgconf.conf_problems(text, RELAY_TUNNEL, PRIMARY_TUNNEL, keys["primary_pub"], IP_ENDPOINT))
    if real is None:
        assert problems, "wg-quick up fails on this form, and the pack passes it"
    else:
        assert ours == real, "the pack reads another tunnel than wg-quick sets up"
        intended = {"address": [f"{RELAY_TUNNEL}/32"], "publickey": [keys["primary_pub"]],
                    "endpoint": [IP_ENDPOINT], "allowedips": [f"{PRIMARY_TUNNEL}/32"]}
        assert (problems == []) == (real == intended), problems


def test_the_conf_forms_cover_both_verdicts(ip_endpoint_conf, keys):
    """The corpus above holds forms the pack passes and forms it refuses, so neither branch is empty."""
    verdicts = set()
    for change in CONF_FORMS.values():
        text = change(ip_endpoint_conf)
        try:
            verdicts.add(not wgconf.conf_problems(text, RELAY_TUNNEL, PRIMARY_TUNNEL, keys["primary_pub"],
                                                  IP_ENDPOINT))
        except wgconf.ConfError:
            verdicts.add(False)
    assert verdicts == {True, False}


# --- the lab: a real tunnel ---------------------------------------------------------------

class Tunnel:
    """The relay's end in this namespace, the firewall's end (and the fake primary) in its own,
    joined by a veth; both ends run Debian's wireguard-go, configured with wg(8)."""

    def __init__(self, base, files, keys, peer):
        tag = os.getpid() % 100000
        self.ns, self.relay_if, self.primary_if = f"bmxwg{tag}", f"wgr{tag}", f"wgp{tag}"
        self.veth = f"bmxwv{tag}"
        self.base, self.files, self.keys, self.peer = base, files, keys, peer
        self.procs = {}

    def start(self):
        sh("ip", "netns", "add", self.ns)
        sh("ip", "link", "add", self.veth, "type", "veth", "peer", "name", "eth0", "netns", self.ns)
        sh("ip", "addr", "add", "172.31.254.1/30", "dev", self.veth)
        sh("ip", "link", "set", self.veth, "up")
        sh("ip", "addr", "add", "172.31.254.2/30", "dev", "eth0", ns=self.ns)
        for dev in ("eth0", "lo"):
            sh("ip", "link", "set", dev, "up", ns=self.ns)
        self.primary_up(with_peer=False)
        self.relay_up()

    def wireguard_go(self, name, ns=None):
        proc = subprocess.Popen((["ip", "netns", "exec", ns] if ns else []) + ["wireguard-go", "-f", name],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self.procs[name] = proc
        deadline = time.monotonic() + 15
        while not os.path.exists(f"/var/run/wireguard/{name}.sock"):
            assert proc.poll() is None and time.monotonic() < deadline, f"wireguard-go {name} did not start"
            time.sleep(0.05)

    def relay_up(self):
        """What wg-quick@wg0 does with the rendered wg0.conf: the interface, the config without
        wg-quick's own keys, the address, and a route for each AllowedIPs."""
        conf = self.base / "wg0.conf"
        conf.write_text(self.files["wg0.conf"].replace("home.viktorbarzin.me:51820", "172.31.254.2:51820"))
        conf.chmod(0o600)
        stripped = self.base / "wg0.stripped"
        stripped.write_text(sh("wg-quick", "strip", str(conf)).stdout)
        self.wireguard_go(self.relay_if)
        sh("wg", "setconf", self.relay_if, str(stripped))
        for address in re.findall(r"^Address = (\S+)$", self.files["wg0.conf"], re.M):
            sh("ip", "addr", "add", address, "dev", self.relay_if)
        sh("ip", "link", "set", self.relay_if, "up")
        allowed = ",".join(re.findall(r"^AllowedIPs = (.+)$", self.files["wg0.conf"], re.M))
        for net in allowed.split(","):
            sh("ip", "route", "add", net.strip(), "dev", self.relay_if)

    def relay_down(self):
        """wg-quick@wg0 stopped: the interface is gone."""
        stop_group(self.procs.pop(self.relay_if), 10)
        sh("ip", "link", "del", self.relay_if, check=False)

    def primary_up(self, with_peer):
        key = self.base / "primary.key"
        key.write_text(self.keys["primary"] + "\n")
        key.chmod(0o600)
        self.wireguard_go(self.primary_if, ns=self.ns)
        sh("wg", "set", self.primary_if, "private-key", str(key), "listen-port", "51820", ns=self.ns)
        sh("ip", "addr", "add", f"{self.peer['primaryAddress']}/32", "dev", self.primary_if, ns=self.ns)
        sh("ip", "link", "set", self.primary_if, "up", ns=self.ns)
        sh("ip", "route", "add", self.peer["allowedIps"], "dev", self.primary_if, ns=self.ns)
        if with_peer:
            self.add_peer()

    def add_peer(self):
        """The firewall's peer entry, from the stack's wireguardPeer output."""
        sh("wg", "set", self.primary_if, "peer", self.peer["publicKey"], "allowed-ips", self.peer["allowedIps"],
                ns=self.ns)

    def stop(self):
        for name in list(self.procs):
            stop_group(self.procs.pop(name), 10)
        sh("ip", "link", "del", self.relay_if, check=False)
        sh("ip", "link", "del", self.veth, check=False)
        sh("ip", "netns", "del", self.ns, check=False)


@pytest.fixture
def tunnel_lab(wg_stack, keys, tls_dir):
    if not (shutil.which("wireguard-go") and shutil.which("wg")):
        pytest.fail("wireguard-go and wireguard-tools are missing: run ./.ci/system-deps")
    files = files_from_run(wg_stack)
    inst_doc = yaml.safe_load(base64.b64decode(resource_user_data(wg_stack)).decode())
    files["wg0.conf"] = next(f["content"] for f in inst_doc["write_files"] if f["path"] == "/etc/wireguard/wg0.conf")
    base = lab_dir("wireguard")
    tunnel = Tunnel(base, files, keys, wg_stack.outputs["wireguardPeer"])
    lab = Lab(base / "lab", files, tls_dir)
    try:
        tunnel.start()
        primary = lab.sink(25, listen=PRIMARY_TUNNEL, netns=tunnel.ns)
        relay = lab.relay(25, drain_host=PRIMARY_TUNNEL, extra={"smtp_connect_timeout": "5s"},
                          env_overrides={"WG_INTERFACE": tunnel.relay_if})
        yield tunnel, relay, primary, files
    finally:
        lab.down()
        tunnel.stop()


def send(relay, prefix, count):
    for i in range(count):
        session = deliver(relay.port, "sender@example.com", [f"user{i}@{DOMAIN}"], message(f"{prefix}-{i:03d}"),
                          source="127.0.1.1")
        assert session.accepted, session.replies[-3:]


def drain_until_empty(relay, files, timeout=180):
    """Run the rendered watcher once at a time until the queue is empty; return its log lines."""
    log: list[str] = []
    deadline = time.monotonic() + timeout
    while relay.queue():
        assert time.monotonic() < deadline, f"still queued: {len(relay.queue())}; watcher said {log[-3:]}"
        log += relay.run_watcher(files).splitlines()
        time.sleep(0.5)
    return log


def ids(sink):
    return sorted(m.group(1) for text in sink.messages() for m in [re.search(r"^X-Lab-Id: (\S+)", text, re.M)] if m)


def test_mail_is_held_while_the_peer_is_missing_or_the_tunnel_down_and_drains_exactly_once(tunnel_lab):
    tunnel, relay, primary, files = tunnel_lab
    # 1. The firewall lost the relay's peer (post-mortem 2026-07-18): mail is held, and why is logged.
    send(relay, "peerless", 10)
    wait_deferred(relay, 10)
    said = relay.run_watcher(files)
    assert "not ready" in said and "no WireGuard handshake with the firewall yet" in said, said
    assert ids(primary) == []
    # 2. The peer comes back (from the stack's wireguardPeer output): every message, once.
    tunnel.add_peer()
    said = "\n".join(drain_until_empty(relay, files))
    assert "answers, flushing" in said
    assert ids(primary) == [f"peerless-{i:03d}" for i in range(10)]
    # 3. The relay's tunnel goes down (wg-quick@wg0 stopped): held again, and why is logged.
    tunnel.relay_down()
    send(relay, "tunnelless", 5)
    wait_deferred(relay, 5)
    said = relay.run_watcher(files)
    assert "not ready" in said and f"tunnel {tunnel.relay_if} does not exist" in said, said
    # 4. Back up: the held mail drains, and nothing drained before comes twice.
    tunnel.relay_up()
    drain_until_empty(relay, files)
    assert ids(primary) == sorted([f"peerless-{i:03d}" for i in range(10)] + [f"tunnelless-{i:03d}" for i in range(5)])


# --- the alert, unit-tested by promtool ----------------------------------------------------

PEER_ALERT_TEST = """
rule_files: [backup-mx-rules.yml]
evaluation_interval: 1m
tests:
  - name: no handshake while the queue grows fires
    interval: 1m
    input_series:
      - series: 'backup_mx_wireguard_latest_handshake_timestamp_seconds{job="backup-mx-node"}'
        values: '0x90'
      - series: 'postfix_showq_message_size_bytes_count{job="backup-mx-postfix", queue="deferred"}'
        values: '1+1x90'
    alert_rule_test:
      - {eval_time: 5m, alertname: BackupMxDrainPeerUnreachable, exp_alerts: []}
      - eval_time: 60m
        alertname: BackupMxDrainPeerUnreachable
        exp_alerts: [{exp_labels: {severity: warning}, exp_annotations: ANNOTATIONS}]
  - name: handshakes every minute keep it quiet, however the queue grows
    interval: 1m
    input_series:
      - series: 'backup_mx_wireguard_latest_handshake_timestamp_seconds{job="backup-mx-node"}'
        values: '0+60x90'
      - series: 'postfix_showq_message_size_bytes_count{job="backup-mx-postfix", queue="deferred"}'
        values: '1+1x90'
    alert_rule_test:
      - {eval_time: 60m, alertname: BackupMxDrainPeerUnreachable, exp_alerts: []}
  - name: a dead tunnel with a steady queue stays quiet
    interval: 1m
    input_series:
      - series: 'backup_mx_wireguard_latest_handshake_timestamp_seconds{job="backup-mx-node"}'
        values: '0x90'
      - series: 'postfix_showq_message_size_bytes_count{job="backup-mx-postfix", queue="deferred"}'
        values: '0x90'
    alert_rule_test:
      - {eval_time: 60m, alertname: BackupMxDrainPeerUnreachable, exp_alerts: []}
"""


def test_drain_peer_alert_fires_only_while_the_queue_grows(wg_stack, tmp_path):
    files = program.public_outputs(wg_stack.outputs)["monitoring"]
    (tmp_path / "backup-mx-rules.yml").write_text(files["backup-mx-rules.yml"])
    rules = yaml.safe_load(files["backup-mx-rules.yml"])["groups"][0]["rules"]
    rule = next(r for r in rules if r["alert"] == "BackupMxDrainPeerUnreachable")
    assert "package peer" in rule["annotations"]["description"]
    (tmp_path / "peer.test.yml").write_text(PEER_ALERT_TEST.replace("ANNOTATIONS", json.dumps(rule["annotations"])))
    out = subprocess.run(["promtool", "test", "rules", str(tmp_path / "peer.test.yml")], capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_wireguard_tunnel_has_at_least_three_mutations():
    assert sum(1 for _, policy in WG_MUTATIONS.values() if policy == "wireguard-tunnel") >= 3
