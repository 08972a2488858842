"""Open-relay probes on the rendered relay (real Postfix): whatever a stranger sends, nothing
for a destination outside the protected domains is ever queued, and nothing gets 5xx.

The relay runs with the rendered inet_interfaces (all), so every address of this machine is
one of its own, as every VM interface is on Oracle; the listener alone is moved to loopback."""
import ipaddress
import subprocess

from lab.client import deliver, message

DOMAIN = "viktorbarzin.me"


def own_addresses():
    out = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True, check=True).stdout
    found = {str(ipaddress.ip_interface(line.split()[3]).ip) for line in out.splitlines()}
    assert "127.0.0.1" in found
    return sorted(found)


def probes():
    literals = [f"victim@[{ip}]" for ip in own_addresses()]
    return {
        **{f"own IP literal {a}": a for a in literals},
        "own IP literal, other loopback": "victim@[127.0.0.2]",
        "foreign IP literal": "victim@[192.0.2.77]",
        "IPv6 loopback literal": "victim@[IPv6:::1]",
        "IPv6 literal": "victim@[IPv6:2001:db8::1]",
        "localhost": "victim@localhost",
        "localhost.localdomain": "victim@localhost.localdomain",
        "the relay's own name": "victim@mx2.viktorbarzin.me",
        "bare local part": "victim",
        "percent hack via own literal": "victim%example.org@[127.0.0.1]",
        "percent hack via localhost": "victim%example.org@localhost",
        "percent hack, no domain": "victim%example.org",
        "bang path": "example.org!victim",
        "bang path via own literal": "example.org!victim@[127.0.0.1]",
        "source route to a foreign domain": "@viktorbarzin.me:victim@example.org",
        "source route via own literal": "@[127.0.0.1]:victim@example.org",
        "quoted local part hiding a foreign address": '"victim@example.org"',
        "quoted local part with own literal": '"victim@example.org"@[127.0.0.1]',
        # Sender-specified routing inside a protected domain (allow_untrusted_routing=no).
        "quoted foreign address in a protected domain": f'"victim@example.org"@{DOMAIN}',
        "percent hack in a protected domain": f"victim%example.org@{DOMAIN}",
        "bang path in a protected domain": f"example.org!victim@{DOMAIN}",
        "lookalike suffix": f"victim@{DOMAIN}.example.org",
        "lookalike hyphen": "victim@viktorbarzin-me.example",
        "lookalike prefix": f"victim@evil{DOMAIN}",
        "lookalike punycode": "victim@xn--viktorbarzn-xyz.me",
        "subdomain": f"victim@sub.{DOMAIN}",
        "deep subdomain": f"victim@a.b.{DOMAIN}",
        "foreign domain": "victim@example.org",
        "empty recipient": "",
    }


# Forms that do name a protected domain: taken, queued for that domain, drained to the primary,
# which is the authority on its own local parts.
PROTECTED_FORMS = {
    "trailing dot": f"alice@{DOMAIN}.",
    "upper case": f"alice@{DOMAIN.upper()}",
    "source route ending in a protected domain": f"@example.org:alice@{DOMAIN}",
    # RFC 5321 4.5.1: <postmaster> must be taken unqualified (smtpd exempts it from every
    # restriction); myorigin makes it the first protected domain's postmaster.
    "postmaster without domain": "postmaster",
}


def queued_domains(relay):
    return {r["address"].rpartition("@")[2].lower().rstrip(".") for q in relay.queue() for r in q["recipients"]}


def test_no_stranger_can_queue_mail_for_any_other_destination(lab):
    primary = lab.sink()
    primary.stop()  # outage: whatever is accepted stays in the queue, where we look for it
    relay = lab.relay(primary.port)
    assert relay.postconf("inet_interfaces") == {"inet_interfaces": "all"}
    results = {}
    for n, (name, rcpt) in enumerate(probes().items()):
        results[name] = deliver(relay.port, "a@example.com", [rcpt], message(f"probe-{n}"), source="127.0.9.1")
    for name, session in results.items():
        codes = session.codes("RCPT")
        assert codes and all(400 <= c < 500 for c in codes), (name, session.replies)
        assert not session.accepted, (name, session.replies)
    assert results["subdomain"].codes("RCPT") == [450]
    assert "User unknown in relay recipient table" in results["subdomain"].replies[-2].text
    assert relay.queue() == []

    taken = {}
    for n, (name, rcpt) in enumerate(PROTECTED_FORMS.items()):
        taken[name] = deliver(relay.port, "a@example.com", [rcpt], message(f"protected-{n}"), source="127.0.9.2")
        assert taken[name].accepted, (name, taken[name].replies)
    assert len(relay.queue()) == len(PROTECTED_FORMS)
    assert queued_domains(relay) == {DOMAIN}


def test_loopback_clients_cannot_relay_either(lab):
    """mynetworks (loopback) gets no relay right: a process on the VM is a stranger too."""
    primary = lab.sink()
    primary.stop()
    relay = lab.relay(primary.port)
    for rcpt in ("victim@example.org", "victim@[127.0.0.1]", f"victim@sub.{DOMAIN}"):
        session = deliver(relay.port, "a@example.com", [rcpt], message("loopback"), source="127.0.0.1")
        assert not session.accepted and all(400 <= c < 500 for c in session.codes("RCPT")), (rcpt, session.replies)
    assert relay.queue() == []
