"""The Linux NAT rule (`primaryEnablement.natRules.linux`) on a real router, in network namespaces.

A router namespace with a WAN and a LAN side, the primary on the LAN listening on 25, the
relay on the WAN side at its reserved IP, and a stranger on the same WAN link. The rule text
runs verbatim under bash with WAN and PRIMARY_LAN set; probes are real TCP connections."""
import os
import subprocess
import textwrap

import pytest

from offline import program
from tests.helpers import run_stack, sh

LAN_PRIMARY = "192.168.50.10"
ROUTER_WAN, ROUTER_LAN = "203.0.113.1", "192.168.50.1"
STRANGER = "203.0.113.99"
BANNER = textwrap.dedent("""\
    import socket, sys
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", 25)); s.listen(16)
    print("ready", flush=True)
    while True:
        c, _ = s.accept(); c.sendall(b"220 primary ESMTP\\r\\n"); c.close()
    """)
PROBE = textwrap.dedent("""\
    import socket, sys
    source, target, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    s = socket.socket(); s.settimeout(3); s.bind((source, 0))
    try:
        s.connect((target, port)); print(s.recv(100).decode().strip() or "connected")
    except ConnectionRefusedError:
        print("refused")
    except OSError:
        print("dropped")
    """)


@pytest.fixture
def network():
    tag = f"bmn{os.getpid() % 100000}"
    router, relay, primary = f"{tag}g", f"{tag}r", f"{tag}p"
    made = []
    listener = None
    try:
        for ns in (router, relay, primary):
            sh("ip", "netns", "add", ns)
            made.append(ns)
            sh("ip", "link", "set", "lo", "up", ns=ns)
        sh("ip", "link", "add", f"{tag}w0", "netns", router, "type", "veth", "peer", "name", f"{tag}w1", "netns", relay)
        sh("ip", "link", "add", f"{tag}l0", "netns", router, "type", "veth", "peer", "name", f"{tag}l1", "netns", primary)
        for ns, dev, addr in ((router, f"{tag}w0", f"{ROUTER_WAN}/24"), (router, f"{tag}l0", f"{ROUTER_LAN}/24"),
                              (primary, f"{tag}l1", f"{LAN_PRIMARY}/24")):
            sh("ip", "addr", "add", addr, "dev", dev, ns=ns)
            sh("ip", "link", "set", dev, "up", ns=ns)
        sh("ip", "link", "set", f"{tag}w1", "up", ns=relay)
        sh("ip", "route", "add", "default", "via", ROUTER_LAN, ns=primary)
        sh("sysctl", "-qw", "net.ipv4.ip_forward=1", ns=router)
        sh("iptables", "-P", "FORWARD", "DROP", ns=router)  # a router forwards only what its rules allow
        listener = subprocess.Popen(["ip", "netns", "exec", primary, "python3", "-c", BANNER], stdout=subprocess.PIPE,
                                    text=True, start_new_session=True)
        assert listener.stdout and listener.stdout.readline().strip() == "ready"
        yield {"router": router, "relay": relay, "primary": primary, "wan": f"{tag}w0", "relay_dev": f"{tag}w1"}
    finally:
        if listener is not None:
            listener.kill()
            listener.wait()
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], check=False)


def probe(net, source, target, port):
    return sh("python3", "-c", PROBE, source, target, str(port), ns=net["relay"]).stdout.strip()


def test_the_linux_rule_forwards_the_drain_from_the_relay_only(network):
    outputs = program.public_outputs(run_stack().outputs)
    rule = outputs["primaryEnablement"]["natRules"]["linux"]["iptables"]
    relay_ip = outputs["reservedIp"]
    for addr in (relay_ip, STRANGER):
        sh("ip", "addr", "add", f"{addr}/24", "dev", network["relay_dev"], ns=network["relay"])
    sh("ip", "route", "add", "default", "via", ROUTER_WAN, ns=network["relay"])
    assert probe(network, relay_ip, ROUTER_WAN, 2526) == "refused"  # before the rule: nothing there
    env = {**os.environ, "WAN": network["wan"], "PRIMARY_LAN": LAN_PRIMARY}
    sh("bash", "-euo", "pipefail", "-c", rule, ns=network["router"], env=env)
    assert probe(network, relay_ip, ROUTER_WAN, 2526) == "220 primary ESMTP"
    assert probe(network, STRANGER, ROUTER_WAN, 2526) == "refused"  # not forwarded for anyone else
    assert probe(network, relay_ip, LAN_PRIMARY, 25) == "dropped"  # only the forwarded port reaches the LAN


def test_the_linux_rule_refuses_to_run_without_its_values(network):
    rule = program.public_outputs(run_stack().outputs)["primaryEnablement"]["natRules"]["linux"]["iptables"]
    result = sh("bash", "-euo", "pipefail", "-c", rule, ns=network["router"], check=False,
                env={**os.environ, "WAN": network["wan"]})
    assert result.returncode != 0 and "PRIMARY_LAN" in result.stderr
    assert "DNAT" not in sh("iptables", "-t", "nat", "-S", ns=network["router"]).stdout
