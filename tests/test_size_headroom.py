"""Size headroom on real Postfix: the largest message the relay accepts, drained to a real
Postfix primary whose message_size_limit is set as the enablement output says, arrives. The
negative control, a relay whose limit equals the primary's, takes a message the primary then
refuses: it would sit in the queue until it expires."""
import re
import time

import pytest

from components import primary as primary_snippets
from components import settings
from components.facts import SIZE_HEADROOM
from lab import files_from_run
from lab.client import Client
from lab.instance import run
from offline import program
from tests.helpers import EXAMPLE, ids_at, run_stack
from tests.primary_emulation import DOMAIN, RELAY_SOURCE, apply_verbatim, emulated_primary

LIMIT = settings.MESSAGE_SIZE_MIN  # the smallest messageSizeLimit keeps the messages at 10 MiB


def stack_settings() -> settings.Settings:
    raw = {**program.read_stack_file(EXAMPLE, "backup-mx")[0], "messageSizeLimit": str(LIMIT)}
    return settings.load("backup-mx", raw.get)


def exact_message(lab_id: str, size: int) -> bytes:
    """DATA content of exactly `size` bytes (no line starts with a dot)."""
    head = f"From: sender@example.com\r\nTo: alice@{DOMAIN}\r\nX-Lab-Id: {lab_id}\r\n\r\n".encode()
    line = b"y" * 998 + b"\r\n"
    body = line * ((size - len(head)) // len(line))
    rest = size - len(head) - len(body)
    return head + body + (b"z" * (rest - 2) + b"\r\n" if rest >= 2 else b"\r\n"[:rest])


def connect(port: int, timeout: float = 60) -> Client:
    """A session with a 220 greeting. smtpd allows one connection per client address
    (smtpd_client_connection_count_limit 1), and counts the previous one until it has told
    anvil it closed: a sender that reconnects at once may get a 4xx and a hang-up, and
    retries, as this does until the relay greets it."""
    deadline = time.monotonic() + timeout
    while True:
        c = Client(port, "127.0.9.1")
        try:
            banner = c.read("banner")
            if banner.code == 220:
                return c
            assert banner.code < 500, banner  # never 5xx
        except ConnectionError:
            pass
        c.close()
        assert time.monotonic() < deadline, "the relay never greeted with 220"
        time.sleep(0.2)


def offer(port: int, lab_id: str, size: int) -> bool:
    """One transaction without SIZE=, as a sender that declares nothing; True if taken."""
    c = connect(port)
    try:
        c.cmd("EHLO client.example.com")
        c.cmd("MAIL FROM:<sender@example.com>")
        c.cmd(f"RCPT TO:<alice@{DOMAIN}>")
        if c.cmd("DATA").code != 354:
            return False
        data = exact_message(lab_id, size)
        c.send(data + (b"" if data.endswith(b"\r\n") else b"\r\n") + b".\r\n")
        reply = c.read(".")
        assert reply.code < 500, reply  # never 5xx, even for a message over the limit
        return reply.code == 250
    finally:
        c.close()


def largest_accepted(port: int, prefix: str) -> tuple[int, list[str]]:
    """Bisect the size the relay just takes; returns it and the ids of every message taken."""
    low, high, taken = LIMIT - 3 * SIZE_HEADROOM, LIMIT + 1, []
    assert offer(port, f"{prefix}-low", low)
    taken.append(f"{prefix}-low")
    while high - low > 1:
        middle = (low + high) // 2
        if offer(port, f"{prefix}-{middle}", middle):
            low = middle
            taken.append(f"{prefix}-{middle}")
        else:
            high = middle
    return low, taken


def primary_as_enabled(primary, s: settings.Settings) -> dict:
    e = primary_snippets.enablement(s, [(s.relays[0].hostname, RELAY_SOURCE)])
    apply_verbatim(primary, e)
    run("postconf", "-c", str(primary.conf), "-e", f"{e['messageSize']['parameter']}={e['messageSize']['value']}")
    run("postfix", "-c", str(primary.conf), "reload")
    return e


@pytest.fixture(scope="module")
def small_files():
    return files_from_run(run_stack(overrides={"messageSizeLimit": str(LIMIT)}))


def test_the_largest_message_the_relay_accepts_reaches_the_primary(small_files, tls_dir):
    s = stack_settings()
    assert f"message_size_limit = {LIMIT - SIZE_HEADROOM}" in small_files["main.cf"]
    with emulated_primary(small_files, tls_dir) as (relay_lab, primary, final):
        e = primary_as_enabled(primary, s)
        assert e["messageSize"]["value"] == LIMIT and e["messageSize"]["relayAccepts"] == LIMIT - SIZE_HEADROOM
        relay = relay_lab.relay(primary.port, extra={"smtp_bind_address": RELAY_SOURCE})
        size, taken = largest_accepted(relay.port, "big")
        assert LIMIT - SIZE_HEADROOM - 65536 < size <= LIMIT - SIZE_HEADROOM, size  # queue-file records count too
        relay.wait_queue_empty(300)
        primary.wait_queue_empty(300)
        assert ids_at(final) == {lab_id: 1 for lab_id in taken}  # every message taken arrived, the largest too
        assert not re.search(r"status=(deferred|SOFTBOUNCE|bounced)", relay.log_text())


def test_negative_control_a_relay_without_headroom_strands_the_largest_message(small_files, tls_dir):
    s = stack_settings()
    with emulated_primary(small_files, tls_dir) as (relay_lab, primary, final):
        primary_as_enabled(primary, s)
        relay = relay_lab.relay(primary.port, extra={"smtp_bind_address": RELAY_SOURCE,
                                                     "message_size_limit": str(LIMIT)})
        size, taken = largest_accepted(relay.port, "nohead")
        assert size > LIMIT - SIZE_HEADROOM
        relay.wait_log(r"status=SOFTBOUNCE \(host \S+ said: 552 5\.3\.4 Error: message file too big", timeout=120)
        assert any(f"nohead-{size}" == q for q in relay_ids(relay))  # the largest stays on the relay


def relay_ids(relay) -> list[str]:
    found = []
    for q in relay.queue():
        out = run("postcat", "-c", str(relay.conf), "-hq", q["queue_id"], check=False).stdout
        found += re.findall(r"^X-Lab-Id: (\S+)", out, re.M)
    return found
