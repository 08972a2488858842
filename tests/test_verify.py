"""The deploy-gate verifier against the lab: a passing deployment and each failing gate."""
import copy

import pytest

from lab import make_tls
from lab.dnszone import ZoneServer
from offline import program
from ops import verify

RELAY = "mx2.viktorbarzin.me"


@pytest.fixture
def outputs(example_run):
    out = copy.deepcopy(program.public_outputs(example_run.outputs))
    out["reservedIp"] = out["relays"][0]["reservedIp"] = "127.0.0.1"  # the lab relay stands in for the reserved IP
    return out


def zone(a="127.0.0.1", backup_pref=20, primary=True):
    records = {(RELAY, "A"): [a]}
    mx = [f"{backup_pref} {RELAY}."] + (["1 mail.viktorbarzin.me."] if primary else [])
    records[("viktorbarzin.me", "MX")] = mx
    return ZoneServer("127.0.0.1", 0, records)


def use_canary(monkeypatch, tmp_path, files, drain_port):
    """O3b runs the relay's installed canary over ssh; here the rendered one, pointed at the
    lab's primary (paths and the drain port are the overrides)."""
    script, env_file = tmp_path / "backup-mx-drain-canary", tmp_path / "backup-mx.env"
    script.write_text(files["backup-mx-drain-canary"])
    env_file.write_text(files["backup-mx.env"] + f"DRAIN_HOST=127.0.0.1\nDRAIN_PORT={drain_port}\n"
                        f"TEXTFILE_DIR={tmp_path}\n")
    monkeypatch.setattr(verify, "CANARY", f"env BACKUP_MX_ENV={env_file} python3 {script} --check")


@pytest.fixture
def deployment(lab, outputs, vm_files, monkeypatch, tmp_path):
    primary = lab.sink()
    relay = lab.relay(primary.port)
    use_canary(monkeypatch, tmp_path, vm_files, primary.port)
    outputs["drainTarget"] = {"host": "127.0.0.1", "port": primary.port, "postfix": ""}
    dns = zone()
    yield {"relay": relay, "primary": primary, "outputs": outputs, "dns": dns, "lab": lab}
    dns.close()


def gates(d, **kw):
    args = {"resolver": d["dns"].address, "smtp_port": d["relay"].port, "cafile": str(d["lab"].tls_dir / "fullchain.pem"),
            "ssh": ""}
    args.update(kw)
    return {g.name: g for g in verify.run(d["outputs"], **args)}


def test_a_healthy_deployment_passes_every_gate(deployment):
    result = gates(deployment)
    assert [(n, g.ok) for n, g in result.items()] == [
        ("O2 SMTP reachable", True), ("O4 STARTTLS certificate", True), ("MX set", True), ("O3 drain", True),
        ("O3b drain readiness", True)]
    assert "rcpt 250" in result["O3b drain readiness"].detail
    assert deployment["primary"].messages()  # the O3 probe really reached the primary


def test_port_25_rejected_points_at_the_os_firewall(deployment):
    from lab import free_port
    g = gates(deployment, smtp_port=free_port())  # nothing listens: like the image's REJECT
    assert not g["O2 SMTP reachable"].ok and "iptables" in g["O2 SMTP reachable"].detail


def test_another_host_answering_is_caught(deployment):
    g = gates(deployment, smtp_port=deployment["primary"].port)  # smtp-sink's banner names another host
    assert not g["O2 SMTP reachable"].ok and "does not name mx2.viktorbarzin.me" in g["O2 SMTP reachable"].detail


def test_untrusted_or_expiring_certificate_fails_o4(deployment, tmp_path):
    other_ca = make_tls(tmp_path / "other", RELAY)
    g = gates(deployment, cafile=str(other_ca / "fullchain.pem"))
    assert not g["O4 STARTTLS certificate"].ok and "certbot" in g["O4 STARTTLS certificate"].detail
    assert g["O2 SMTP reachable"].ok


def test_expiring_certificate_fails_o4(lab, outputs, tmp_path):
    short = make_tls(tmp_path / "short", RELAY, days=7)
    lab.tls_dir = short
    primary = lab.sink()
    relay = lab.relay(primary.port)
    dns = zone()
    try:
        g = {x.name: x for x in verify.run(outputs, dns.address, relay.port, str(short / "fullchain.pem"), None)}
    finally:
        dns.close()
    assert not g["O4 STARTTLS certificate"].ok and "expires in" in g["O4 STARTTLS certificate"].detail


@pytest.mark.parametrize("kwargs,expected", [
    ({"a": "198.51.100.99"}, "expected [127.0.0.1]"),
    ({"backup_pref": 10}, "backup mx2.viktorbarzin.me at 20 missing"),
    ({"primary": False}, "primary mail.viktorbarzin.me at 1 missing"),
])
def test_mx_set_drift_fails(deployment, kwargs, expected):
    deployment["dns"].close()
    deployment["dns"] = zone(**kwargs)
    g = gates(deployment, ssh=None)
    assert not g["MX set"].ok and expected in g["MX set"].detail, g["MX set"].detail


def test_missing_nat_rule_fails_o3(deployment):
    deployment["primary"].stop()
    g = gates(deployment)
    assert not g["O3 drain"].ok and f"NAT rule for {deployment['relay'].drain_port} " in g["O3 drain"].detail
    assert not g["O3b drain readiness"].ok and "cannot reach the drain target" in g["O3b drain readiness"].detail


def test_primary_refusing_drained_mail_fails_o3(deployment):
    primary = deployment["primary"]
    primary.stop()
    primary.mode = ["-f", "RCPT"]
    primary.start()
    g = gates(deployment)
    assert not g["O3 drain"].ok and "policyd-spf" in g["O3 drain"].detail
    assert not g["O3b drain readiness"].ok and "refuses the drain stream" in g["O3b drain readiness"].detail


def test_cli_reads_outputs_file_and_exits_nonzero_on_failure(deployment, tmp_path, capsys):
    import json
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps(deployment["outputs"]))
    code = verify.main(["--outputs", str(path), "--resolver", deployment["dns"].address, "--smtp-port",
                        str(deployment["relay"].port)])  # system CAs do not trust the lab certificate
    out = capsys.readouterr().out
    assert code == 1 and "PASS  O2 SMTP reachable" in out and "FAIL  O4 STARTTLS certificate" in out


# --- two relays: every gate per relay ------------------------------------------------------

MX3 = "mx3.viktorbarzin.me"


@pytest.fixture
def two_relays(tls_dir, monkeypatch, tmp_path):
    from lab import Lab, files_from_run, free_port
    from tests.helpers import TWO_RELAYS, lab_dir, run_stack
    run = run_stack(TWO_RELAYS)
    out = copy.deepcopy(program.public_outputs(run.outputs))
    base = lab_dir("verify-two")
    port = free_port("127.0.0.2")
    labs, bundle = [], base / "ca.pem"
    with bundle.open("w") as ca:
        for relay, address in zip(out["relays"], ("127.0.0.2", "127.0.0.3"), strict=True):
            relay["reservedIp"] = address  # each lab relay's own address stands in for its reserved IP
            host = relay["relayHostname"]
            certs = make_tls(base / host, host)
            ca.write((certs / "fullchain.pem").read_text())
            labs.append(Lab(base / f"lab-{host}", files_from_run(run, host), certs))
    try:
        primary = labs[0].sink()
        for lab_, relay in zip(labs, out["relays"], strict=True):
            lab_.relay(primary.port, port=port, listen=relay["reservedIp"], name="relay")
        out["drainTarget"] = {"host": "127.0.0.1", "port": primary.port, "postfix": ""}
        use_canary(monkeypatch, tmp_path, files_from_run(run, RELAY), primary.port)
        records = {(r["relayHostname"], "A"): [r["reservedIp"]] for r in out["relays"]}
        records[("viktorbarzin.me", "MX")] = [f"20 {RELAY}.", f"20 {MX3}.", "1 mail.viktorbarzin.me."]
        yield {"outputs": out, "port": port, "cafile": str(bundle), "records": records, "primary": primary}
    finally:
        for lab_ in labs:
            lab_.down()


def test_two_relays_are_each_checked_by_every_gate(two_relays):
    d = two_relays
    dns = ZoneServer("127.0.0.1", 0, d["records"])
    try:
        # Like ssh, the prefix hands the joined words to a shell ({relay} is the host it would reach).
        result = {g.name: g for g in verify.run(d["outputs"], dns.address, d["port"], d["cafile"],
                                                  """sh -c 'eval "$*"' {relay}""")}
    finally:
        dns.close()
    assert {n: g.ok for n, g in result.items()} == {
        f"O2 SMTP reachable ({RELAY})": True, f"O4 STARTTLS certificate ({RELAY})": True,
        f"O2 SMTP reachable ({MX3})": True, f"O4 STARTTLS certificate ({MX3})": True, "MX set": True,
        f"O3 drain ({RELAY})": True, f"O3 drain ({MX3})": True, f"O3b drain readiness ({RELAY})": True,
        f"O3b drain readiness ({MX3})": True}, {n: g.detail for n, g in result.items()}
    assert len(d["primary"].messages()) == 2  # one O3 probe from each relay; the canary stops before DATA


def test_two_relays_a_missing_second_record_or_a_single_ssh_fails(two_relays):
    d = two_relays
    records = {k: v for k, v in d["records"].items() if k != (MX3, "A")}
    records[("viktorbarzin.me", "MX")] = [f"20 {RELAY}.", "1 mail.viktorbarzin.me."]
    dns = ZoneServer("127.0.0.1", 0, records)
    try:
        result = {g.name: g for g in verify.run(d["outputs"], dns.address, d["port"], d["cafile"], "")}
    finally:
        dns.close()
    assert not result["MX set"].ok
    assert f"A {MX3}" in result["MX set"].detail and f"backup {MX3} at 20 missing" in result["MX set"].detail
    assert not result["O3 drain"].ok and "{relay}" in result["O3 drain"].detail
