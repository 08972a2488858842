"""The rendered cloud-init firewall steps on an OCI-image-shaped rules.v4, in network namespaces.

Three test hosts: the relay (198.51.100.1 / 203.0.113.1), a homelab host inside homelabCidr
(198.51.100.7) and a stranger (203.0.113.99). Probes are real TCP connections."""
import os
import subprocess
import textwrap

import pytest

from lab import files_from_run
from rehearsal.image import OCI_RULES_V4
from tests.helpers import BREAK_GLASS, ROOT, run_stack, sh

OCI_IMAGE_RULES = OCI_RULES_V4  # one home for the OCI image's shape: the rehearsal's image
PROBE_PORTS = list(range(1, 1025)) + [2525, 2526, 3306, 8080, 9100, 9154, 9090, 10050]
LISTEN = [22, 25, 80, 9100, 9154, 8080]

SCAN = textwrap.dedent("""\
    import errno, socket, sys
    from concurrent.futures import ThreadPoolExecutor
    target, ports = sys.argv[1], [int(p) for p in sys.argv[2].split(",")]
    def probe(port):
        s = socket.socket(); s.settimeout(3)
        try:
            s.connect((target, port)); return port
        except ConnectionRefusedError:
            return port  # passed the firewall; nothing listens there
        except OSError as exc:
            if exc.errno == errno.EHOSTUNREACH or isinstance(exc, TimeoutError):
                return None  # REJECT (icmp-host-prohibited)
            raise
        finally:
            s.close()
    with ThreadPoolExecutor(64) as pool:
        found = [p for p in pool.map(probe, ports) if p is not None]
    print(",".join(map(str, found)))
    """)
LISTENER = textwrap.dedent("""\
    import socket, sys, time
    socks = []
    for port in map(int, sys.argv[1].split(",")):
        s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", port)); s.listen(16); socks.append(s)
    print("ready", flush=True)
    time.sleep(600)
    """)


@pytest.fixture
def hosts(tmp_path):
    tag = f"bmx{os.getpid() % 100000}"
    relay, home, stranger = f"{tag}r", f"{tag}h", f"{tag}s"
    for ns in (relay, home, stranger):
        sh("ip", "netns", "add", ns)
    try:
        for peer, relay_ip, peer_ip, link in ((home, "198.51.100.1/24", "198.51.100.7/24", "h"),
                                              (stranger, "203.0.113.1/24", "203.0.113.99/24", "s")):
            a, b = f"{tag}{link}0", f"{tag}{link}1"
            sh("ip", "link", "add", a, "netns", relay, "type", "veth", "peer", "name", b, "netns", peer)
            sh("ip", "addr", "add", relay_ip, "dev", a, ns=relay)
            sh("ip", "addr", "add", peer_ip, "dev", b, ns=peer)
            sh("ip", "link", "set", a, "up", ns=relay)
            sh("ip", "link", "set", b, "up", ns=peer)
        for ns in (relay, home, stranger):
            sh("ip", "link", "set", "lo", "up", ns=ns)
        sh("sysctl", "-qw", "net.ipv4.icmp_ratelimit=0", ns=relay)  # answer every REJECT at once
        sh("iptables-restore", ns=relay, input=OCI_IMAGE_RULES)
        listener = subprocess.Popen(["ip", "netns", "exec", relay, "python3", "-c", LISTENER,
                                     ",".join(map(str, LISTEN))], stdout=subprocess.PIPE, text=True)
        assert listener.stdout and listener.stdout.readline().strip() == "ready"
        yield {"relay": relay, "home": home, "stranger": stranger}
        listener.kill()
        listener.wait()
    finally:
        for ns in (relay, home, stranger):
            subprocess.run(["ip", "netns", "del", ns], check=False)


def open_ports(ns, target):
    out = sh("python3", "-c", SCAN, target, ",".join(map(str, PROBE_PORTS)), ns=ns).stdout.strip()
    return {int(p) for p in out.split(",") if p}


def run_firewall(vm_files, hosts, tmp_path, *args):
    script = tmp_path / "backup-mx-firewall"
    script.write_text(vm_files["backup-mx-firewall"])
    env_file = tmp_path / "backup-mx.env"
    env_file.write_text(vm_files["backup-mx.env"])
    env = {**os.environ, "BACKUP_MX_ENV": str(env_file), "RULES_V4": str(tmp_path / "rules.v4")}
    return sh("bash", str(script), *args, ns=hosts["relay"], env=env)


def test_oci_image_rules_block_the_relay_before_cloud_init(hosts):
    assert open_ports(hosts["stranger"], "203.0.113.1") == {22}
    assert open_ports(hosts["home"], "198.51.100.1") == {22}


def test_rendered_firewall_opens_smtp_http_and_exporters_for_the_homelab_only(hosts, vm_files, tmp_path):
    assert "HOMELAB_CIDR=198.51.100.7/32" in vm_files["backup-mx.env"]
    run_firewall(vm_files, hosts, tmp_path)
    run_firewall(vm_files, hosts, tmp_path)  # idempotent: a re-run adds nothing
    assert open_ports(hosts["stranger"], "203.0.113.1") == {22, 25, 80}
    assert open_ports(hosts["home"], "198.51.100.1") == {22, 25, 80, 9100, 9154}
    saved = (tmp_path / "rules.v4").read_text().splitlines()
    inputs = [ln for ln in saved if ln.startswith("-A INPUT")]
    assert sum("--dport 25 " in ln for ln in inputs) == 1
    reject = next(i for i, ln in enumerate(inputs) if "-j REJECT" in ln)
    for port in ("25", "80", "9100", "9154"):
        assert next(i for i, ln in enumerate(inputs) if f"--dport {port} " in ln) < reject


def test_tailnet_step_moves_ssh_off_the_public_interfaces(hosts, vm_files, tmp_path):
    run_firewall(vm_files, hosts, tmp_path)
    sh("ip", "link", "add", "tailscale0", "type", "veth", "peer", "name", "ts-peer", ns=hosts["relay"])
    run_firewall(vm_files, hosts, tmp_path, "--tailnet-ssh")
    assert open_ports(hosts["stranger"], "203.0.113.1") == {25, 80}
    assert open_ports(hosts["home"], "198.51.100.1") == {25, 80, 9100, 9154}
    saved = (tmp_path / "rules.v4").read_text()
    assert "-A INPUT -i tailscale0 -p tcp -m tcp --dport 22 -j ACCEPT" in saved


@pytest.fixture(scope="module")
def break_glass_files():
    return files_from_run(run_stack(BREAK_GLASS))


def test_break_glass_ssh_is_open_to_the_homelab_only_and_survives_the_tailnet_step(hosts, break_glass_files,
                                                                                    tmp_path):
    assert "BREAK_GLASS_SSH=true" in break_glass_files["backup-mx.env"]
    run_firewall(break_glass_files, hosts, tmp_path)
    sh("ip", "link", "add", "tailscale0", "type", "veth", "peer", "name", "ts-peer", ns=hosts["relay"])
    run_firewall(break_glass_files, hosts, tmp_path, "--tailnet-ssh")
    assert open_ports(hosts["stranger"], "203.0.113.1") == {25, 80}
    assert open_ports(hosts["home"], "198.51.100.1") == {22, 25, 80, 9100, 9154}
    saved = (tmp_path / "rules.v4").read_text()
    assert "-A INPUT -s 198.51.100.7/32 -p tcp -m tcp --dport 22 -j ACCEPT" in saved


def test_without_a_tailnet_public_ssh_closes_at_the_first_run_and_break_glass_stays(hosts, tmp_path):
    """tailnet none: no tailnet step ever comes, so the first run drops the image's public SSH
    ACCEPT; SSH is the homelab's break-glass rule alone (and the OCI console)."""
    files = files_from_run(run_stack(ROOT / "examples" / "Pulumi.notailnet.yaml"))
    assert "TAILNET=none" in files["backup-mx.env"] and "BREAK_GLASS_SSH=true" in files["backup-mx.env"]
    run_firewall(files, hosts, tmp_path)
    run_firewall(files, hosts, tmp_path)  # idempotent
    assert open_ports(hosts["stranger"], "203.0.113.1") == {25, 80}
    assert open_ports(hosts["home"], "198.51.100.1") == {22, 25, 80, 9100, 9154}
    saved = (tmp_path / "rules.v4").read_text()
    assert "tailscale0" not in saved and "-A INPUT -s 198.51.100.7/32 -p tcp -m tcp --dport 22 -j ACCEPT" in saved
