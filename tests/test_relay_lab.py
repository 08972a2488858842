"""Store-and-forward on real Postfix: outage, drain, never-5xx, crash, primary refusals,
disk full, null sender. Messages are counted at the fake primary by a unique X-Lab-Id."""
import collections
import re
import subprocess
import threading
import time

import pytest

from lab.client import deliver, message, send_many
from tests.helpers import ids_at, lab_dir, wait_deferred

DOMAIN = "viktorbarzin.me"
LIMIT = 209715200


def test_outage_queues_everything_and_the_watcher_drains_each_exactly_once(lab, vm_files):
    primary = lab.sink()
    primary.stop()  # outage: nothing listens on the drain port
    relay = lab.relay(primary.port)
    sizes = {0: 12 * 1024 * 1024, 1: LIMIT - 2 * 1024 * 1024}  # one over 10 MB, one near the relay's limit

    sessions = send_many(relay.port, 200, "outage", lambda i: sizes.get(i, 1024 + (i * 7919) % 200_000))
    assert all(s.accepted for s in sessions.values()), [s.replies[-3:] for s in sessions.values() if not s.accepted]
    assert all(r.code < 400 for s in sessions.values() for r in s.replies if r.command != "connection")
    # Count the senders' messages: notify_classes may add a postmaster notice of the relay's own
    # (sender MAILER-DAEMON, to postmaster@ a protected domain), which drains like any mail.
    queued = relay.queue()
    ours = [q for q in queued if q["sender"] == "sender@example.com"]
    assert len(ours) == 200 and {q["queue_name"] for q in ours} <= {"deferred", "active", "incoming"}
    assert all(q["sender"] == "" and all(r["address"] == f"postmaster@{DOMAIN}" for r in q["recipients"])
               for q in queued if q not in ours), [q for q in queued if q not in ours]

    assert "not ready" in relay.run_watcher(vm_files)  # primary still down: the watcher waits
    primary.start()
    assert "flushing: viktorbarzin.me" in relay.run_watcher(vm_files)
    relay.wait_queue_empty(300)
    assert ids_at(primary) == collections.Counter({lab_id: 1 for lab_id in sessions})


def read_line(proc, timeout: float) -> str:
    import select
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, f"no output from the watcher within {timeout}s"
    return proc.stdout.readline()


def test_the_watcher_service_flushes_when_the_primary_returns(lab, vm_files):
    """drain.sh as the VM runs it (a looping service): silent while the queue is empty, one
    'not ready' line while the primary is down, a flush once it answers."""
    primary = lab.sink()
    primary.stop()
    relay = lab.relay(primary.port)
    watcher = relay.start_watcher(vm_files)
    for i in range(20):
        assert deliver(relay.port, "sender@example.com", [f"u{i}@{DOMAIN}"], message(f"svc-{i}"),
                       source="127.0.7.1").accepted
    first = read_line(watcher, timeout=120)
    assert "20 deferred" in first and "not ready" in first, first
    primary.start()
    relay.wait_queue_empty(300)
    relay.stop_watchers()
    rest = watcher.stdout.read()
    assert "not ready" not in rest and "answers, flushing: viktorbarzin.me" in rest, rest
    assert sorted(ids_at(primary)) == sorted(f"svc-{i}" for i in range(20))


NEVER_5XX: dict[str, tuple[str, list[str], dict, dict]] = {
    # name: (mail_from, rcpts, data kwargs, deliver kwargs)
    "plain": ("a@example.com", [f"alice@{DOMAIN}"], {}, {}),
    "null sender (DSN)": ("", [f"alice@{DOMAIN}"], {}, {}),
    "60 recipients": ("a@example.com", [f"user{i}@{DOMAIN}" for i in range(60)], {}, {}),
    "plus address": ("a@example.com", [f"first.last+tag@{DOMAIN}"], {}, {}),
    "quoted local part": ("a@example.com", [f'"john smith"@{DOMAIN}'], {}, {}),
    "apostrophe": ("a@example.com", [f"o'brien@{DOMAIN}"], {}, {}),
    "special characters": ("a@example.com", [f"x=y#$&*{{}}~^`|/?@{DOMAIN}"], {}, {}),
    # Sender-specified routing (%, !) is refused for strangers (allow_untrusted_routing=no): 454, not 5xx.
    "source-routed local part": ("a@example.com", [f"user%example.org@{DOMAIN}"], {}, {}),
    "upper-case domain": ("a@example.com", [f"Alice@{DOMAIN.upper()}"], {}, {}),
    "nonexistent local part": ("a@example.com", [f"no-such-user-{time.time_ns()}@{DOMAIN}"], {}, {}),
    "unresolvable sender domain": ("a@nonexistent.invalid", [f"alice@{DOMAIN}"], {}, {}),
    "sender spoofing our domain": (f"ceo@{DOMAIN}", [f"alice@{DOMAIN}"], {}, {}),
    "8BITMIME": ("a@example.com", [f"alice@{DOMAIN}"], {"body_line": "é"}, {"mail_params": " BODY=8BITMIME"}),
    "SMTPUTF8": ("jörg@example.com", [f"jörg@{DOMAIN}"], {}, {"mail_params": " SMTPUTF8"}),
    "998-octet lines": ("a@example.com", [f"alice@{DOMAIN}"], {"body_line": "y" * 998}, {}),
    "4000-octet lines": ("a@example.com", [f"alice@{DOMAIN}"], {"body_line": "z" * 4000}, {}),
    "pipelining": ("a@example.com", [f"alice@{DOMAIN}", f"bob@{DOMAIN}"], {}, {"pipelining": True}),
    "HELO name with no DNS": ("a@example.com", [f"alice@{DOMAIN}"], {}, {"ehlo": "localhost"}),
    "bare IP HELO": ("a@example.com", [f"alice@{DOMAIN}"], {}, {"ehlo": "[192.0.2.1]"}),
    "40 Received headers": ("a@example.com", [f"alice@{DOMAIN}"],
                            {"received": 40}, {}),
    "dot-stuffed body": ("a@example.com", [f"alice@{DOMAIN}"], {"body_line": ".leading dot"}, {}),
    "declared SIZE at the relay's limit": ("a@example.com", [f"alice@{DOMAIN}"], {},
                                           {"mail_params": f" SIZE={LIMIT - 1024 * 1024}"}),
    "declared SIZE over the limit": ("a@example.com", [f"alice@{DOMAIN}"], {}, {"mail_params": f" SIZE={LIMIT + 1}"}),
    "pregreet talker": ("a@example.com", [f"alice@{DOMAIN}"], {}, {"pregreet": True}),
}


def utf8_report(relay, seen) -> str:
    """Why the SMTPUTF8 message is not the one deferred message: the listings seen, that
    message's own log lines, and every file under the relay's queue directory."""
    log = relay.log_text().splitlines()
    ids = {m.group(1) for ln in log if "jörg@" in ln and (m := re.search(r": ([0-9A-F]{6,}): ", ln))}
    files = sorted(str(p.relative_to(relay.base)) for p in (relay.base / "spool").rglob("*")
                   if p.is_file() and p.parent.name not in ("pid", "public", "private"))
    return "\n".join(["no single deferred SMTPUTF8 message after 120 s",
                      f"listings (first, last): {seen[:3]} {seen[-3:]}",
                      "its log lines:", *[ln for ln in log if "jörg@" in ln or any(i in ln for i in ids)],
                      "queue files:", *files])


def test_never_5xx_for_protected_recipients(lab):
    primary = lab.sink()
    relay = lab.relay(primary.port)
    results = {}
    for n, (name, (mail_from, rcpts, data_kw, kw)) in enumerate(NEVER_5XX.items()):
        # Strangers, not mynetworks; the pregreet talker from its own address (postscreen remembers passes).
        source = "127.0.1.99" if kw.get("pregreet") else "127.0.1.1"
        results[name] = deliver(relay.port, mail_from, rcpts, message(f"probe-{n}", **data_kw), source=source, **kw)
    assert len(results) >= 20
    for name, session in results.items():
        codes = [r.code for r in session.replies if r.command != "connection"]
        assert codes and all(c < 500 for c in codes), (name, session.replies)
        assert not any(r.command == "connection" for r in session.replies), (name, session.replies)
    # Oversize is refused temporarily (452: soft_bounce turns 552 into 452) and the sender keeps it.
    assert results["declared SIZE over the limit"].codes("MAIL") == [452]
    # A pregreet talker is deferred, never rejected.
    assert results["pregreet talker"].codes("RCPT") == [450]
    relay.wait_log(r"postscreen\[\d+\]: PREGREET \d+ after")
    accepted = [name for name, s in results.items() if s.accepted]
    assert results["source-routed local part"].codes("RCPT") == [454]
    assert set(accepted) == set(NEVER_5XX) - {"declared SIZE over the limit", "pregreet talker",
                                              "source-routed local part"}
    # smtp-sink (the fake primary) does not announce SMTPUTF8, so that one message stays queued
    # (soft-bounced, never bounced) until a primary that offers SMTPUTF8 answers, as Postfix does.
    # Wait for that state itself: showq can miss a file while qmgr moves it between queues, so
    # one listing may be momentarily short.
    deadline = time.monotonic() + 120
    seen = []  # each listing while waiting, for the failure message: which queue, why deferred
    while True:
        queue = relay.queue()
        seen.append([(q["queue_name"], q["recipients"][0].get("delay_reason", "")[:60]) for q in queue])
        if len(queue) == 1 and queue[0]["recipients"][0].get("delay_reason"):
            break
        if time.monotonic() > deadline:
            pytest.fail(utf8_report(relay, seen), pytrace=False)
        time.sleep(0.2)
    [left] = queue
    assert left["recipients"][0]["delay_reason"].startswith("SMTPUTF8 is required")
    assert len(ids_at(primary)) == len(accepted) - 1


def test_oversize_message_without_size_gets_452_after_data(lab):
    primary = lab.sink()
    relay = lab.relay(primary.port)
    session = deliver(relay.port, "a@example.com", [f"alice@{DOMAIN}"], message("huge", LIMIT + 4096),
                      source="127.0.2.1")
    assert session.codes(".") == [452], session.replies
    assert not session.accepted and all(c < 500 for c in session.codes())


def test_foreign_recipient_is_refused_and_never_relayed(lab):
    primary = lab.sink()
    relay = lab.relay(primary.port)
    session = deliver(relay.port, "a@example.com", ["victim@example.org"], message("foreign"), source="127.0.3.1")
    assert session.codes("RCPT") == [454]  # relay access denied; 4xx under soft_bounce
    assert not session.accepted
    mixed = deliver(relay.port, "a@example.com", ["victim@example.org", f"alice@{DOMAIN}"], message("mixed"),
                    source="127.0.3.2")
    assert mixed.codes("RCPT") == [454, 250] and mixed.accepted
    relay.wait_queue_empty(60)
    [received] = primary.messages()
    assert "X-Lab-Id: mixed" in received and "example.org" not in received.split("\n\n", 1)[0].split("X-Lab")[0]
    assert "victim@example.org" not in relay.log_text().split("to=<")[-1]


def test_kill_9_mid_load_loses_nothing_that_got_250(lab):
    primary = lab.sink()
    relay = lab.relay(primary.port)
    results = {}
    done = threading.Event()

    def load():
        results.update(send_many(relay.port, 500, "crash", lambda i: 2048, threads=10))
        done.set()

    loader = threading.Thread(target=load)
    loader.start()
    deadline = time.monotonic() + 120
    while len(relay.queue()) + len(primary.messages()) < 150 and time.monotonic() < deadline:
        time.sleep(0.02)
    relay.kill9()
    loader.join(timeout=600)
    assert done.is_set()
    acked = {lab_id for lab_id, s in results.items() if s.accepted}
    assert 0 < len(acked) < 500  # the kill really landed mid-load
    relay.start()
    relay.flush()
    relay.wait_queue_empty(180)
    received = ids_at(primary)
    lost = acked - set(received)
    duplicates = {k: v for k, v in received.items() if v > 1}
    print(f"\ncrash: {len(acked)} acked, {len(received)} delivered, lost {len(lost)}, duplicates {len(duplicates)}")
    assert lost == set()


# Postfix's own retry schedule, scaled down (on the VM 600s..3600s, queue_run_delay 60s).
SCALED_BACKOFF = {"minimal_backoff_time": "5s", "maximal_backoff_time": "10s", "queue_run_delay": "5s"}


def test_primary_4xx_then_5xx_keeps_mail_queued_and_sends_no_dsn(lab, vm_files):
    """A 4xx from the primary is the watcher's to retry; a 5xx is kept by soft_bounce, with no
    DSN, and left to Postfix's backoff: once the primary stops refusing (an exemption pasted
    late), the mail arrives within maximal_backoff_time + queue_run_delay (scaled here; 1 h
    1 min on the VM), and the watcher, which holds none of it, neither probes nor flushes."""
    primary = lab.sink(mode=["-r", "RCPT"])  # 4xx to every recipient
    relay = lab.relay(primary.port, extra=SCALED_BACKOFF)
    for i in range(5):
        assert deliver(relay.port, "sender@example.com", [f"u{i}@{DOMAIN}"], message(f"refused-{i}"),
                       source="127.0.4.1").accepted
    relay.wait_log(r"status=deferred \(host 127\.0\.0\.1\[127\.0\.0\.1\] said: 4\d\d")
    primary.stop()
    primary.mode = ["-f", "RCPT"]  # now 5xx, like a policyd-spf 550 on the primary
    primary.start()
    wait_deferred(relay, 5, timeout=60)
    assert "answers, flushing" in relay.run_watcher(vm_files)  # 4xx mail: the watcher's
    relay.wait_log(r"status=SOFTBOUNCE \(host 127\.0\.0\.1\[127\.0\.0\.1\] said: 5\d\d", timeout=60)
    wait_deferred(relay, 5, refused=True, timeout=60)
    queue = relay.queue()
    assert len(queue) == 5 and all(q["sender"] == "sender@example.com" for q in queue)  # no bounce created
    assert "sender non-delivery notification" not in relay.log_text()
    assert not re.search(r"status=bounced", relay.log_text())
    assert not primary.messages()
    assert relay.run_watcher(vm_files) == ""  # refused mail: not the watcher's, no probe, no flush
    primary.stop()
    primary.mode = []
    primary.start()
    relay.wait_queue_empty(60)  # the bound, 15 s here, with room for a busy machine; 600 s unscaled
    assert sorted(ids_at(primary)) == [f"refused-{i}" for i in range(5)]


def test_null_sender_mail_expires_after_the_bounce_lifetime(lab):
    """Residual risk, shown with lifetimes scaled down (bounce 15s, queue 10m): inbound mail with
    an empty envelope sender (DSNs, auto-replies) dies after bounce_queue_lifetime during an outage."""
    primary = lab.sink()
    primary.stop()
    relay = lab.relay(primary.port, extra={"bounce_queue_lifetime": "15s", "maximal_queue_lifetime": "10m",
                                           "minimal_backoff_time": "5s", "maximal_backoff_time": "10s",
                                           "queue_run_delay": "5s"})
    assert deliver(relay.port, "", [f"alice@{DOMAIN}"], message("dsn"), source="127.0.5.1").accepted
    assert deliver(relay.port, "a@example.com", [f"alice@{DOMAIN}"], message("normal"), source="127.0.5.2").accepted
    relay.wait_log(r"from=<>, status=expired, returned to sender", timeout=90)
    queue = relay.queue()
    assert [q["sender"] for q in queue] == ["a@example.com"]
    primary.start()
    relay.flush()
    relay.wait_queue_empty(60)
    assert sorted(ids_at(primary)) == ["normal"]


@pytest.fixture
def small_spool():
    base = lab_dir("diskfull")
    spool = base / "relay" / "spool"
    spool.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=340m", "tmpfs", str(spool)], check=True)
    yield base
    subprocess.run(["umount", "-l", str(spool)], check=False)


def test_disk_full_answers_4xx_loses_nothing_and_recovers(small_spool, vm_files, tls_dir):
    from lab import Lab
    lab = Lab(small_spool, vm_files, tls_dir)
    try:
        primary = lab.sink()
        primary.stop()
        relay = lab.relay(primary.port)
        acked: list[str] = []
        refused: list[str] = []
        for i in range(40):
            s = deliver(relay.port, "a@example.com", [f"alice@{DOMAIN}"], message(f"fill-{i}", 4 * 1024 * 1024),
                        source="127.0.6.1")
            assert all(c < 500 for c in s.codes()), s.replies
            (acked if s.accepted else refused).append(f"fill-{i}")
            if refused:
                break
        # smtpd wants 1.5 x message_size_limit free before it takes a message.
        assert refused and acked, (acked, refused)
        assert 452 in [r.code for r in s.replies]
        primary.start()
        relay.flush()
        relay.wait_queue_empty(120)
        assert sorted(ids_at(primary)) == sorted(acked)
        assert deliver(relay.port, "a@example.com", [f"alice@{DOMAIN}"], message("after"),
                       source="127.0.6.1").accepted
    finally:
        lab.down()


@pytest.mark.parametrize("action", ["enforce", "drop"])
def test_dnsbl_listed_client_is_deferred_never_rejected(lab, action):
    """postscreen's DNSBL path against a lab DNS server: a listed client gets 450 (enforce) or
    421 (drop: its documented 521, under soft_bounce), never a 5xx; a client the resolver-refusal
    answer (127.255.255.254) would mark is ignored thanks to the reply filter."""
    from lab.dnsbl import dnsbl_server
    dns = dnsbl_server("127.0.0.153", ["zen.spamhaus.org", "bl.spamcop.net", "b.barracudacentral.org"],
                      {"127.0.8.2": "127.0.0.2", "127.0.8.4": "127.255.255.254"})
    resolv = lab.base / "resolv.conf"
    lab.base.mkdir(parents=True, exist_ok=True)
    resolv.write_text("nameserver 127.0.0.153\noptions timeout:1 attempts:2\n")
    try:
        primary = lab.sink()
        relay = lab.relay(primary.port, resolv_conf=resolv, extra={"postscreen_dnsbl_action": action})
        listed = deliver(relay.port, "a@example.com", [f"alice@{DOMAIN}"], message("listed"), source="127.0.8.2")
        clean = deliver(relay.port, "a@example.com", [f"alice@{DOMAIN}"], message("clean"), source="127.0.8.3")
        refused_resolver = deliver(relay.port, "a@example.com", [f"alice@{DOMAIN}"], message("resolver"),
                                   source="127.0.8.4")
    finally:
        dns.close()
    assert "2.8.0.127.zen.spamhaus.org" in dns.queries
    assert not listed.accepted and all(c < 500 for c in listed.codes()), listed.replies
    if action == "enforce":
        assert listed.codes("RCPT") == [450]
    else:
        assert 421 in listed.codes(), listed.replies
    assert clean.accepted and refused_resolver.accepted
    relay.wait_log(r"DNSBL rank \d+ for \[127\.0\.8\.2\]")
    relay.wait_queue_empty(60)
    assert sorted(ids_at(primary)) == ["clean", "resolver"]
