"""Deploy-gate verifier: check the ADR's go-live gates against a deployment, from its outputs.

    python -m ops.verify [--outputs FILE] [--resolver IP[:PORT]] [--smtp-port 25]
                             [--cafile PEM] [--ssh "ssh ubuntu@mx2"]

Without --outputs it runs `pulumi stack output --json`. Gates, for every relay of the stack
(`relays` output): O2 (TCP 25 and a 220 banner naming the relay), O4 (STARTTLS with a
certificate valid for the relay host, > 14 days left), MX set (every MX record at its
preference, each relay's A record = its reserved IP) and, with --ssh, O3 (a probe message
from the relay to the drain target; with several relays the --ssh command names the relay as
{relay}, e.g. "ssh ubuntu@{relay}", replaced by its first label) and O3b (the relay's drain
readiness canary: the drain stream's EHLO, MAIL with a strict-SPF sender and a large SIZE,
RCPT, stopped before DATA). Every failure names the likely cause. Exit status 1 if any gate
fails.
"""
from __future__ import annotations

import argparse
import json
import re
import shlex
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass

MIN_CERT_DAYS = 14


@dataclass
class Gate:
    name: str
    ok: bool
    detail: str


def _smtp_lines(sock_file) -> tuple[int, list[str]]:
    lines = []
    while True:
        line = sock_file.readline().decode(errors="replace").rstrip("\r\n")
        if not line:
            raise ConnectionError("connection closed")
        lines.append(line)
        if len(line) < 4 or line[3] != "-":
            return int(line[:3]), lines


def smtp_gates(host: str, port: int, relay: str, cafile: str | None, timeout: float = 10) -> list[Gate]:
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except ConnectionRefusedError:
        return [Gate("O2 SMTP reachable", False,
                     f"{host}:{port} refused the connection: Postfix is not listening, or the OS firewall still "
                     "REJECTs 25 (the OCI image's iptables rule; did cloud-init's firewall step run?)"),
                Gate("O4 STARTTLS certificate", False, "skipped: no SMTP connection")]
    except OSError as exc:
        return [Gate("O2 SMTP reachable", False,
                     f"{host}:{port} did not answer ({exc}): the VCN security list lacks TCP 25 from 0.0.0.0/0, or "
                     "Oracle blocks inbound 25 for this tenancy (open a service request)"),
                Gate("O4 STARTTLS certificate", False, "skipped: no SMTP connection")]
    with sock:
        f = sock.makefile("rb")
        try:
            code, banner = _smtp_lines(f)
        except (OSError, ConnectionError) as exc:
            return [Gate("O2 SMTP reachable", False, f"no banner ({exc}): postscreen or smtpd is failing on the VM"),
                    Gate("O4 STARTTLS certificate", False, "skipped")]
        if code != 220 or relay not in banner[-1]:
            return [Gate("O2 SMTP reachable", False,
                         f"banner {banner[-1]!r} does not name {relay}: another host owns this address (A record or "
                         "reserved IP mismatch) or myhostname is wrong"),
                    Gate("O4 STARTTLS certificate", False, "skipped")]
        gates = [Gate("O2 SMTP reachable", True, banner[-1])]
        sock.sendall(b"EHLO verify.invalid\r\n")
        _, ehlo = _smtp_lines(f)
        if not any(line[4:].upper().startswith("STARTTLS") for line in ehlo):
            return gates + [Gate("O4 STARTTLS certificate", False,
                                 "STARTTLS is not offered: smtpd_tls_security_level or the key pair is missing")]
        sock.sendall(b"STARTTLS\r\n")
        code, _ = _smtp_lines(f)
        context = ssl.create_default_context(cafile=cafile)
        try:
            with context.wrap_socket(sock, server_hostname=relay) as tls:
                cert = tls.getpeercert()
                assert cert is not None  # verified handshake: the peer sent one
        except ssl.SSLCertVerificationError as exc:
            return gates + [Gate("O4 STARTTLS certificate", False,
                                 f"certificate not valid for {relay} ({exc.verify_message}): certbot has not replaced "
                                 "the bootstrap self-signed pair yet; check port 80 (HTTP-01) and that the A record "
                                 "points at the reserved IP")]
        days = (ssl.cert_time_to_seconds(str(cert["notAfter"])) - time.time()) / 86400
        if days <= MIN_CERT_DAYS:
            return gates + [Gate("O4 STARTTLS certificate", False,
                                 f"certificate expires in {days:.1f} days: certbot renewal is failing "
                                 "(certbot.timer, port 80)")]
        return gates + [Gate("O4 STARTTLS certificate", True, f"valid for {relay}, {days:.0f} days left")]


def mx_gate(outputs: dict, resolver: str | None) -> Gate:
    import dns.exception
    import dns.resolver
    res = dns.resolver.Resolver(configure=resolver is None)
    if resolver:
        host, _, port = resolver.partition(":")
        res.nameservers, res.port = [host], int(port or 53)
    res.lifetime = 10
    problems = []
    for relay in relays_of(outputs):
        host, ip = relay["relayHostname"], relay["reservedIp"]
        try:
            addresses = sorted(r.address for r in res.resolve(host, "A"))
        except dns.exception.DNSException as exc:
            addresses = []
            problems.append(f"A {host}: {exc.__class__.__name__}")
        if addresses != [ip]:
            problems.append(f"A {host} is {addresses}, expected [{ip}] (run pulumi up; the record is managed by "
                            "this stack)")
    for domain, mx in outputs["mxRecords"].items():
        try:
            found = {(str(r.exchange).rstrip(".").lower(), r.preference) for r in res.resolve(domain, "MX")}
        except dns.exception.DNSException as exc:
            problems.append(f"MX {domain}: {exc.__class__.__name__}")
            continue
        for role, record in [("primary", mx["primary"])] + [("backup", b) for b in mx.get("backups", [mx["backup"]])]:
            want = (record["host"], record["preference"])
            if want not in found:
                fix = "restore the primary's MX in the zone" if role == "primary" else "run pulumi up"
                problems.append(f"MX {domain}: {role} {want[0]} at {want[1]} missing (found {sorted(found)}); {fix}")
    return Gate("MX set", not problems, "; ".join(problems) or "every MX record and A record is as deployed")


PROBE = r"""exec 3<>/dev/tcp/{host}/{port} || exit 90
say() {{ printf '%s\r\n' "$1" >&3; }}
reply() {{ while IFS= read -r -t 30 line <&3; do echo "$line"; case "$line" in [0-9][0-9][0-9]-*) ;; *) break;; esac; done; }}
reply; say 'EHLO {relay}'; reply; say 'MAIL FROM:<postmaster@{domain}>'; reply
say 'RCPT TO:<postmaster@{domain}>'; reply; say 'DATA'; reply
printf 'Subject: backup-mx drain probe\r\nX-Backup-Mx-Probe: O3\r\n\r\nprobe\r\n.\r\n' >&3; reply; say QUIT; reply"""


def drain_gate(outputs: dict, ssh: str, relay: str) -> Gate:
    drain, domain = outputs["drainTarget"], outputs["domains"][0]
    script = PROBE.format(host=drain["host"], port=drain["port"], relay=relay, domain=domain)
    cmd = shlex.split(ssh) + ["bash", "-c", shlex.quote(script) if ssh else script]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    replies = [line for line in proc.stdout.splitlines() if line[:3].isdigit()]
    finals = [line for line in replies if len(line) < 4 or line[3] == " "]
    if proc.returncode == 90 or not finals:
        return Gate("O3 drain", False, f"the relay cannot reach {drain['host']}:{drain['port']}: the pfSense WAN NAT "
                                       f"rule for {drain['port']} is missing (out .primaryEnablement.pfsense) or the "
                                       "primary is down")
    text = " | ".join(finals)
    if any(f.startswith("450") and "hostname" in f for f in finals):
        return Gate("O3 drain", False, f"{text}: the primary lacks the check_client_access exemption for the relay")
    if any(f[0] == "5" for f in finals):
        return Gate("O3 drain", False, f"{text}: the primary refuses drained mail (policyd-spf skip_addresses or "
                                       "rspamd force_actions missing)")
    if not (len(finals) >= 6 and finals[5].startswith("250")):  # the reply to the end of DATA
        return Gate("O3 drain", False, f"{text}: the primary did not accept the probe message")
    return Gate("O3 drain", True, f"the primary accepted the probe: {finals[5]}")


CANARY = "sudo /usr/local/sbin/backup-mx-drain-canary --check"  # installed on every relay by cloud-init


def canary_gate(ssh: str) -> Gate:
    proc = subprocess.run(shlex.split(ssh) + shlex.split(CANARY), capture_output=True, text=True, timeout=180)
    lines = proc.stdout.strip().splitlines()
    text = " | ".join(lines) or proc.stderr.strip()[-300:]
    if proc.returncode == 0 and lines and lines[-1].endswith(" ready"):
        return Gate("O3b drain readiness", True, text)
    if not lines:
        return Gate("O3b drain readiness", False, f"the canary did not run ({text}): is the relay provisioned "
                                                  "(backup-mx-extras done)?")
    if any(re.match(r"\S+ 0 ", line) for line in lines):
        cause = "the relay cannot reach the drain target (NAT rule, tunnel, or the primary is down)"
    elif any(re.match(r"\S+ 4\d\d .*(hostname|reverse)", line, re.I) for line in lines):
        cause = "the primary defers the relay's address for FCrDNS: apply primaryEnablement.postfix.checkClientAccess"
    elif any(re.match(r"\S+ 4\d\d ", line) for line in lines):
        cause = "the primary defers the drain stream (anvil limits, greylisting, a policy service): see the replies"
    else:
        cause = ("the primary refuses the drain stream (policyd-spf skip_addresses, rspamd, or a size limit below "
                 "the relay's)")
    return Gate("O3b drain readiness", False, f"{text}: {cause}")


def relays_of(outputs: dict) -> list[dict]:
    """Every relay of the stack; outputs from before relayCount list one at the top level."""
    return outputs.get("relays") or [{"relayHostname": outputs["relayHostname"], "reservedIp": outputs["reservedIp"]}]


def _named(gate: Gate, relay: str, several: bool) -> Gate:
    return Gate(f"{gate.name} ({relay})", gate.ok, gate.detail) if several else gate


def run(outputs: dict, resolver: str | None, smtp_port: int, cafile: str | None, ssh: str | None) -> list[Gate]:
    relays = relays_of(outputs)
    several = len(relays) > 1
    gates = [_named(g, r["relayHostname"], several)
             for r in relays for g in smtp_gates(r["reservedIp"], smtp_port, r["relayHostname"], cafile)]
    gates.append(mx_gate(outputs, resolver))
    if ssh is None:
        return gates
    if several and "{relay}" not in ssh:
        return gates + [Gate("O3 drain", False, "--ssh reaches one host, but the stack has "
                                                f"{len(relays)} relays; name each as {{relay}}, e.g. "
                                                "--ssh 'ssh ubuntu@{relay}'")]
    for r in relays:
        host = r["relayHostname"]
        command = ssh.replace("{relay}", host.split(".")[0])
        gates.append(_named(drain_gate(outputs, command, host), host, several))
        gates.append(_named(canary_gate(command), host, several))
    return gates


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--outputs", help="a file with `pulumi stack output --json`")
    parser.add_argument("--resolver", help="DNS server IP[:PORT] (default: the system resolver)")
    parser.add_argument("--smtp-port", type=int, default=25)
    parser.add_argument("--cafile", help="CA bundle to verify the STARTTLS certificate (default: system)")
    parser.add_argument("--ssh", help='command prefix that runs a shell on the relay, e.g. "ssh ubuntu@mx2"')
    args = parser.parse_args(argv)
    if args.outputs:
        outputs = json.loads(open(args.outputs).read())
    else:
        outputs = json.loads(subprocess.run(["pulumi", "stack", "output", "--json"], check=True,
                                            capture_output=True, text=True).stdout)
    gates = run(outputs, args.resolver, args.smtp_port, args.cafile, args.ssh)
    for g in gates:
        print(f"{'PASS' if g.ok else 'FAIL'}  {g.name}: {g.detail}")
    return 0 if all(g.ok for g in gates) else 1


if __name__ == "__main__":
    sys.exit(main())
