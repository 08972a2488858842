"""Everyday spam on the rendered relay: a dictionary attack while the primary is up, then an
outage and the recovery, measured from the real logs and mailboxes.

Real Postfix on both sides: the relay from the rendered files with the rendered drain watcher
running as the VM runs it (a service), and a primary that knows VALID addresses and answers
`550 5.1.1 User unknown` at RCPT for any other (relay_recipient_maps, as real primaries do),
delivering onward to a final sink. tests/test_everyday_spam.py runs it scaled down;
`make bench-spam` runs the full scenario beside a no-junk baseline.
"""
from __future__ import annotations

import datetime
import os
import re
import shutil
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import Lab
from .client import deliver, message
from .instance import Relay
from .listserver import ListServer

DOMAIN = "viktorbarzin.me"
VALID = tuple(f"user{i}@{DOMAIN}" for i in range(20))
# Mail to this valid address is sent only during the outage: the relay has never seen it, so
# an outage message to it shows whether the relay takes a valid address it has never seen.
FRESH = VALID[-1]
LEGIT_SOURCE = "127.0.20.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Scenario:
    junk: int = 2000               # junk messages, to random nonexistent local parts
    spam_seconds: float = 300      # over this long, primary up
    after_seconds: float = 420     # then this long with the primary still up, no spam
    outage_seconds: float = 120    # then the primary is down this long
    legit_every: float = 10        # a legitimate message this often, all along
    sources: int = 12              # junk source addresses (127.0.10.x)
    patience: float = 600          # how long to wait for the recovery


@dataclass
class Result:
    mode: str
    junk_sent: int = 0
    junk_accepted: int = 0
    junk_deferred_4xx: int = 0
    replies_5xx: int = 0
    junk_rcpts_at_primary_up: int = 0   # RCPTs for junk addresses the primary saw while up
    junk_reattempts_per_10min: float = 0.0
    peak_rcpts_per_minute: int = 0      # every RCPT the primary saw from the relay, busiest minute
    relay_cpu_during: float = 0.0       # share of one core
    relay_cpu_after: float = 0.0
    legit_sent: int = 0
    legit_missing: int = 0  # accepted by the relay, not at the final sink by the end
    legit_duplicates: int = 0
    legit_latency_up_median_s: float | None = None
    outage_accepted: int = 0
    outage_sent: int = 0
    fresh_accepted: bool | None = None
    recovery_s: float | None = None     # primary back -> every outage message at the final sink
    watcher_lines: list[str] = field(default_factory=list)  # the drain watcher's output, seconds from the start
    list_syncs: list[str] = field(default_factory=list)  # recipients list: each sync's exit code and output
    dsns: int = 0
    queue_after: int = 0
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def primary_files(relay_files: dict[str, str]) -> dict[str, str]:
    main = "\n".join([
        "compatibility_level = 3.6", f"myhostname = mail.{DOMAIN}", "mydestination =", "mynetworks = 127.0.0.1/32",
        f"relay_domains = {DOMAIN}", "relay_recipient_maps = texthash:/etc/postfix/relay_recipients",
        "transport_maps = texthash:/etc/postfix/transport", "alias_maps =", "alias_database =",
        "smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination",
        "message_size_limit = 209715200", ""])
    return {**relay_files, "main.cf": main, "master.cf": Path("/usr/share/postfix/master.cf.dist").read_text(),
            "relay_recipients": "".join(f"{a} OK\n" for a in VALID), "transport": f"{DOMAIN} smtp:[127.0.0.1]:25\n"}


def cpu_seconds(pids: list[int]) -> float:
    """CPU time of each process and all its descendants, live or reaped (a reaped child's
    time is in its parent's cutime/cstime)."""
    children: dict[int, list[int]] = {}
    times: dict[int, int] = {}
    for p in filter(str.isdigit, os.listdir("/proc")):
        try:
            f = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(f[1]), []).append(int(p))
        times[int(p)] = sum(int(x) for x in f[11:15])  # utime stime cutime cstime
    total, todo, seen = 0, list(pids), set()
    while todo:
        pid = todo.pop()
        if pid not in seen:
            seen.add(pid)
            total += times.get(pid, 0)
            todo += children.get(pid, [])
    return total / CLK_TCK


class Arrivals:
    """First-seen time of each X-Lab-Id at the final sink (new files only)."""

    def __init__(self, sink):
        self.sink, self.seen, self.counts, self.files = sink, {}, {}, set()
        self.lock = threading.Lock()

    def poll(self) -> None:
        for path in self.sink.spool.glob("msg.*"):
            if path.name in self.files:
                continue
            try:
                text = path.read_text(errors="replace")
            except OSError:
                continue
            if not text.strip():
                continue  # smtp-sink's record of a refused transaction
            self.files.add(path.name)
            match = re.search(r"^X-Lab-Id: (\S+)", text, re.M)
            if match:
                with self.lock:
                    self.seen.setdefault(match.group(1), time.monotonic())
                    self.counts[match.group(1)] = self.counts.get(match.group(1), 0) + 1


def _junk_address() -> str:
    return f"{uuid.uuid4().hex[:12]}@{DOMAIN}"


def _primary_rcpts(primary: Relay) -> list[tuple[float, str]]:
    """(time, recipient) for each RCPT the primary refused and (time, "") for each message it
    took (one recipient each here), from its log."""
    out = []
    for line in primary.log_text().splitlines():
        m = re.search(r"NOQUEUE: reject: RCPT from \S+: \d\d\d [^<]*<([^>]+)>", line)
        if m:
            out.append((_log_time(line), m.group(1).lower()))
        elif re.search(r"postfix/smtpd\[\d+\]: [0-9A-F]+: client=", line):
            out.append((_log_time(line), ""))
    return out


def _log_time(line: str) -> float:
    """maillog_file's timestamp ('Dec 07 08:38:48', local time, no year)."""
    stamp = datetime.datetime.strptime(f"{datetime.date.today().year} {line[:15]}", "%Y %b %d %H:%M:%S")
    return stamp.timestamp()


def run(label: str, files: dict[str, str], tls: Path | None, base: Path, sc: Scenario) -> Result:
    """One scenario run, labelled `label`; the relay does whatever the rendered `files` say."""
    result = Result(label)
    base.mkdir(parents=True, exist_ok=True)
    labs = [Lab(base / "final", files, None), Lab(base / "p", primary_files(files), None), Lab(base / "r", files, tls)]
    try:
        return _run(result, files, sc, *labs)
    finally:
        for lab in reversed(labs):  # the relay (and its watcher, by pid), the primary, the sink
            lab.down()
        shutil.rmtree(base, ignore_errors=True)


def _run(result: Result, files: dict[str, str], sc: Scenario, final_lab: Lab, primary_lab: Lab, relay_lab: Lab) -> Result:
    final = final_lab.sink(name="final")
    primary = primary_lab.relay(final.port, name="primary")
    relay = relay_lab.relay(primary.port)
    listed = "RECIPIENTS=list" in files["backup-mx.env"].splitlines()
    # recipients list: the primary publishes its valid addresses; the relay syncs them first.
    lists = ListServer(relay_lab.base / "list", "".join(a + "\n" for a in VALID)) if listed else None

    def sync() -> None:
        assert lists is not None
        done = relay.sync_recipients(files, lists.url, lists.ca_bundle)
        result.list_syncs.append(f"{done.returncode} {(done.stdout + done.stderr).strip()}")

    try:
        if lists:
            sync()
        return _scenario(result, files, sc, relay, primary, final, lists, sync)
    finally:
        if lists:
            lists.close()


def _scenario(result: Result, files: dict[str, str], sc: Scenario, relay: Relay, primary: Relay, final,
              lists: ListServer | None, sync) -> Result:
    arrivals = Arrivals(final)
    stop = threading.Event()
    legit_sent: dict[str, tuple[float, bool, str]] = {}  # id -> (sent at, accepted, phase)
    phase = {"name": "up"}
    lock = threading.Lock()

    def note_codes(session) -> None:
        bad = sum(1 for r in session.replies if 500 <= r.code < 600)
        with lock:
            result.replies_5xx += bad

    def legit_loop() -> None:
        n = outage_n = 0
        while not stop.is_set():
            lab_id = f"legit-{n:04d}"
            rcpt = VALID[n % (len(VALID) - 1)]
            if phase["name"] == "outage":
                rcpt = FRESH if outage_n % 2 == 0 else rcpt  # the first outage message is to FRESH
                outage_n += 1
            sent = time.monotonic()
            s = deliver(relay.port, "friend@example.com", [rcpt], message(lab_id), source=LEGIT_SOURCE)
            note_codes(s)
            with lock:
                legit_sent[lab_id] = (sent, s.accepted, phase["name"] + (" fresh" if rcpt == FRESH else ""))
            n += 1
            stop.wait(sc.legit_every)

    def junk_loop(k: int, count: int) -> None:
        source = f"127.0.10.{k + 1}"
        gap = sc.spam_seconds / max(count, 1)
        start = time.monotonic()
        for i in range(count):
            if stop.is_set():
                return
            s = deliver(relay.port, "offers@spam.example", [_junk_address()], message(f"junk-{k}-{i}"), source=source)
            note_codes(s)
            with lock:
                result.junk_sent += 1
                if s.accepted:
                    result.junk_accepted += 1
                elif any(400 <= r.code < 500 for r in s.replies if r.command == "RCPT"):
                    result.junk_deferred_4xx += 1
            delay = start + (i + 1) * gap - time.monotonic()
            if delay > 0:
                stop.wait(delay)

    def poll_loop() -> None:
        while not stop.is_set():
            arrivals.poll()
            stop.wait(0.5)

    threads = []
    started = time.monotonic()

    def read_watcher(proc) -> None:
        for line in proc.stdout:
            result.watcher_lines.append(f"{time.monotonic() - started:7.1f} {line.rstrip()}")

    try:
        watcher = relay.start_watcher(files)
        reader = threading.Thread(target=read_watcher, args=(watcher,), daemon=True)
        reader.start()
        pids = lambda: [p for p in [relay.master_pid()] if p] + [w.pid for w in relay.watchers]  # noqa: E731
        t0, cpu0 = time.monotonic(), cpu_seconds(pids())
        wall0 = time.time()
        threads = [threading.Thread(target=legit_loop), threading.Thread(target=poll_loop)]
        per = [sc.junk // sc.sources + (1 if k < sc.junk % sc.sources else 0) for k in range(sc.sources)]
        junkers = [threading.Thread(target=junk_loop, args=(k, c)) for k, c in enumerate(per) if c]
        for t in threads + junkers:
            t.start()
        for t in junkers:
            t.join(sc.spam_seconds + 600)
        if not junkers:
            time.sleep(sc.spam_seconds)  # the baseline: the same window, legitimate mail only
        t1, cpu1 = time.monotonic(), cpu_seconds(pids())
        spam_elapsed = t1 - t0
        time.sleep(sc.after_seconds)  # an observation window: what the relay does on its own
        t2, cpu2 = time.monotonic(), cpu_seconds(pids())
        wall2 = time.time()
        result.relay_cpu_during = round((cpu1 - cpu0) / max(t1 - t0, 1e-9), 4)
        result.relay_cpu_after = round((cpu2 - cpu1) / max(t2 - t1, 1e-9), 4)

        phase["name"] = "outage"
        result.watcher_lines.append(f"{time.monotonic() - started:7.1f} [scenario] primary down")
        primary.stop()
        if lists:  # the list is published by the primary: down with it; the last good copy stays
            lists.close()
            sync()
        time.sleep(sc.outage_seconds)
        phase["name"] = "recovered"
        back = time.monotonic()
        primary.start()
        result.watcher_lines.append(f"{time.monotonic() - started:7.1f} [scenario] primary back")
        outage_ids = lambda: [i for i, (_, ok, ph) in legit_sent.items() if ph.startswith("outage") and ok]  # noqa: E731
        deadline = back + sc.patience
        while time.monotonic() < deadline:
            arrivals.poll()
            with lock:
                pending = [i for i in outage_ids() if i not in arrivals.seen]
            if not pending:
                result.recovery_s = round(max([arrivals.seen[i] for i in outage_ids()] + [back]) - back, 2)
                break
            time.sleep(0.2)
        stop.set()
        for t in threads:
            t.join(120)
        # the last legit messages reach the final sink
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            arrivals.poll()
            if all(i in arrivals.seen for i, (_, ok, _) in legit_sent.items() if ok):
                break
            time.sleep(0.2)

        rcpts = _primary_rcpts(primary)
        junk_up = [r for r in rcpts if wall0 - 1 <= r[0] <= wall2 + 1 and r[1] and r[1] not in VALID]
        result.junk_rcpts_at_primary_up = len(junk_up)
        if result.junk_accepted:
            window = (t2 - t0) / 600
            result.junk_reattempts_per_10min = round(
                max(0, len(junk_up) - result.junk_accepted) / result.junk_accepted / window, 3)
        per_minute: dict[int, int] = {}
        for when, _ in rcpts:
            per_minute[int(when // 60)] = per_minute.get(int(when // 60), 0) + 1
        result.peak_rcpts_per_minute = max(per_minute.values(), default=0)
        accepted = {i for i, (_, ok, _) in legit_sent.items() if ok}
        result.legit_sent = len(legit_sent)
        result.legit_missing = len([i for i in accepted if i not in arrivals.seen])
        result.legit_duplicates = sum(c - 1 for i, c in arrivals.counts.items() if i.startswith("legit") and c > 1)
        up = sorted(arrivals.seen[i] - legit_sent[i][0] for i in accepted
                    if legit_sent[i][2] == "up" and i in arrivals.seen)
        result.legit_latency_up_median_s = round(up[len(up) // 2], 2) if up else None
        outage = [i for i, v in legit_sent.items() if v[2].startswith("outage")]
        result.outage_sent = len(outage)
        result.outage_accepted = len([i for i in outage if legit_sent[i][1]])
        fresh = [legit_sent[i][1] for i in outage if legit_sent[i][2] == "outage fresh"]
        result.fresh_accepted = all(fresh) if fresh else None
        result.dsns = len(re.findall(r"sender non-delivery notification|status=bounced", relay.log_text()))
        result.queue_after = len([q for q in relay.queue() if q["sender"] != "offers@spam.example"])
        result.notes.append(f"spam phase {spam_elapsed:.0f}s, observation {t2 - t1:.0f}s")
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    return result
