"""SMTP smuggling (CVE-2023-51764 class) on the rendered relay, real Postfix: DATA that carries
a bare-LF end of data followed by a second, forged transaction. The fake primary must receive
exactly one message per session, with the smuggled text inside its body. The same session
against a relay without smtpd_forbid_bare_newline (Debian 12's default, `no`) is the negative
control: there the primary receives the forged message as a message of its own."""
from lab.client import Client
from tests.helpers import ids_at

DOMAIN = "viktorbarzin.me"
SOURCE = "127.0.9.1"  # a stranger: outside smtpd_forbid_bare_newline_exclusions (127.0.0.1/32)
ENDINGS = {"LF.LF": b"\n.\n", "CRLF.LF": b"\r\n.\n", "LF.CRLF": b"\n.\r\n"}


def smuggle(port: int, lab_id: str, ending: bytes) -> list[int]:
    """One session: a message whose body hides `ending` + a forged MAIL/RCPT/DATA; returns the
    reply codes after the 354."""
    c = Client(port, SOURCE)
    try:
        c.read("banner")
        c.cmd("EHLO client.example.com")
        assert c.cmd("MAIL FROM:<sender@example.com>").code == 250
        assert c.cmd(f"RCPT TO:<alice@{DOMAIN}>").code == 250
        assert c.cmd("DATA").code == 354
        forged = (b"MAIL FROM:<ceo@" + DOMAIN.encode() + b">\n"
                  b"RCPT TO:<bob@" + DOMAIN.encode() + b">\nDATA\n"
                  b"From: ceo@" + DOMAIN.encode() + b"\nX-Lab-Id: " + lab_id.encode() + b"-forged\n\nSMUGGLED\n")
        body = (f"From: sender@example.com\r\nTo: alice@{DOMAIN}\r\nX-Lab-Id: {lab_id}\r\n\r\nfirst part"
                .encode() + ending + forged + b"\r\n.\r\n")
        c.send(body)
        codes = [c.read(".").code]
        c.send(b"QUIT\r\n")
        try:
            while True:
                codes.append(c.read("more").code)
        except (ConnectionError, OSError):
            pass
        return codes
    finally:
        c.close()


def run_sessions(lab, **relay_kw):
    primary = lab.sink()
    relay = lab.relay(primary.port, **relay_kw)
    replies = {name: smuggle(relay.port, f"smuggle-{name}", ending) for name, ending in ENDINGS.items()}
    relay.wait_queue_empty(120)
    return primary, replies


def test_the_rendered_relay_keeps_each_session_one_message(lab, vm_files):
    assert "smtpd_forbid_bare_newline = normalize" in vm_files["main.cf"]
    primary, replies = run_sessions(lab)
    assert all(code < 500 for codes in replies.values() for code in codes), replies
    got = ids_at(primary)
    assert got == {f"smuggle-{name}": 1 for name in ENDINGS}, got  # no forged message of its own
    for text in primary.messages():
        assert "SMUGGLED" in text and "MAIL FROM:<ceo@" in text  # the forged part stayed body text


def test_negative_control_without_the_setting_the_primary_gets_the_forgery(lab):
    primary, replies = run_sessions(lab, extra={"smtpd_forbid_bare_newline": "no"})
    got = ids_at(primary)
    forged = [name for name in ENDINGS if got.get(f"smuggle-{name}-forged")]
    assert forged, (got, replies)  # the probe can see smuggling where it is open
