"""make bench: our rendered relay against stock Postfix defaults with the same routing,
side by side in one run. Writes bench/results.json and bench/results.md. No assertions:
these are measurements on a noisy machine, reported as absolute figures and ratios.

    python -m bench [--messages 2000] [--patience 150] [--idle-seconds 600]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from components.postfix import POSTSCREEN_CONNECTIONS
from lab import Lab, LabError, Relay, files_from_run, make_tls
from lab.client import send_many
from lab.instance import stop_group
from offline import program

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench"


def stock_files(ours: dict[str, str]) -> dict[str, str]:
    """Stock Postfix: defaults everywhere, only the routing the relay needs (same maps)."""
    main = "\n".join([
        "compatibility_level = 3.6", "myhostname = mx2.bench.invalid", "mydestination =",
        "mynetworks = 127.0.0.1/32", "relay_domains = " + " ".join(
            line.split()[0] for line in ours["transport"].splitlines() if line.strip()),
        "relay_recipient_maps = texthash:/etc/postfix/relay_recipients",
        "transport_maps = texthash:/etc/postfix/transport", "alias_maps =", "alias_database =", ""])
    master = Path("/usr/share/postfix/master.cf.dist").read_text()
    return {**ours, "main.cf": main, "master.cf": master}


def pss_mb(relay: Relay) -> float:
    """Proportional set size of every process of the instance (its session), in MB."""
    master = relay.master_pid()
    if master is None:
        return 0.0
    sid = os.getsid(master)
    total = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.getsid(int(pid)) != sid:
                continue
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except (OSError, ProcessLookupError):
            continue
    return total / 1024


class CpuCap:
    """cgroup (v1 cpu or v2) limiting the relay's processes to a fraction of one CPU."""

    def __init__(self, name: str, fraction: float):
        v1 = Path("/sys/fs/cgroup/cpu")
        self.path = (v1 if v1.is_dir() else Path("/sys/fs/cgroup")) / f"backup-mx-bench-{name}"
        self.path.mkdir(exist_ok=True)
        period = 100000
        if (self.path / "cpu.cfs_quota_us").exists():
            (self.path / "cpu.cfs_period_us").write_text(str(period))
            (self.path / "cpu.cfs_quota_us").write_text(str(int(period * fraction)))
        else:
            (self.path / "cpu.max").write_text(f"{int(period * fraction)} {period}")

    def adopt(self, relay: Relay) -> None:
        master = relay.master_pid()
        assert master is not None, "the relay is not running"
        sid = os.getsid(master)
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                if os.getsid(int(pid)) == sid:
                    (self.path / "cgroup.procs").write_text(pid)
            except OSError:
                continue

    def remove(self) -> None:
        for _ in range(50):
            try:
                self.path.rmdir()
                return
            except OSError:
                time.sleep(0.2)


# smtp-source's concurrent sessions, all from 127.0.0.1: half of postscreen's per-client limit,
# since postscreen counts a connection until it has seen the close, so a session's next
# connection may overlap its last (at the limit itself smtp-source meets 421 at the banner).
SESSIONS = POSTSCREEN_CONNECTIONS // 2


def smtp_source(port: int, sessions: int, messages: int, size: int = 1024) -> float:
    started = time.monotonic()
    subprocess.run(["smtp-source", "-s", str(sessions), "-m", str(messages), "-l", str(size),
                    "-f", "bench@example.com", "-t", "user@viktorbarzin.me", "-M", "bench.example.com",
                    f"127.0.0.1:{port}"], check=True, capture_output=True, timeout=900)
    return time.monotonic() - started


def many_clients(port: int, sessions: int, per_session: int) -> None:
    """`sessions` concurrent clients, each from its own loopback address (postscreen limits
    connections per client, so one address cannot open 50)."""
    send_many(port, sessions * per_session, "mem", threads=sessions, source_of=lambda i: f"127.0.10.{i % sessions + 1}")


def wait_empty(relay: Relay, patience: float) -> float | None:
    """Seconds until the queue is empty, or None when it is not within `patience`."""
    try:
        return relay.wait_queue_empty(patience)
    except LabError:
        return None


def first_delivery(sink, started: float, patience: float, before: int = 0) -> float | None:
    while time.monotonic() - started < patience:
        if len(list(sink.spool.glob("msg.*"))) > before:
            return time.monotonic() - started
        time.sleep(0.05)
    return None


def start_keepalive(files: dict[str, str], base: Path) -> subprocess.Popen:
    """accountMode free's rendered keep-alive at idle priority, busy all the time: its worst case."""
    script, env = base / "backup-mx-keepalive", base / "keepalive.env"
    script.write_text(files["backup-mx-keepalive"])
    env.write_text(files["backup-mx.env"] + "KEEPALIVE_BUSY_S=86400\nKEEPALIVE_PERIOD_S=86401\n")
    return subprocess.Popen(["chrt", "--idle", "0", "bash", str(script)], env={**os.environ, "BACKUP_MX_ENV": str(env)},
                            start_new_session=True)


def measure(name: str, files: dict[str, str], tls: Path | None, args, base: Path, watcher: bool,
            cap: float = 0.0, keepalive: dict[str, str] | None = None) -> dict:
    lab = Lab(base / name, files, tls)
    result: dict = {}
    cgroup = CpuCap(name, cap) if cap else None
    companion = None
    try:
        primary = lab.sink()
        primary.stop()
        relay = lab.relay(primary.port)
        if cgroup:
            cgroup.adopt(relay)  # the master's future children inherit the cap
        if keepalive is not None:
            companion = start_keepalive(keepalive, base / name)
            if cgroup:
                (cgroup.path / "cgroup.procs").write_text(str(companion.pid))
        result.update(_accept(relay, args))
        if watcher:
            proc = relay.start_watcher(files)
            if cgroup:
                (cgroup.path / "cgroup.procs").write_text(str(proc.pid))
        result.update(_recovery(relay, primary, args))
        result.update(_drain(relay, primary, args))
        result.update(_peak(relay, args))
    finally:
        if companion is not None:
            stop_group(companion, 10)
        lab.down()
        if cgroup:
            cgroup.remove()
    return result


def _accept(relay, args) -> dict:
    """Accept throughput: SESSIONS sessions into a relay whose primary is down (queue only). The last
    run's mail stays queued for the recovery measurement."""
    accept = []
    for i in range(args.repeats):
        if i:
            run_ = subprocess.run(["postsuper", "-c", str(relay.conf), "-d", "ALL"], capture_output=True)
            assert run_.returncode == 0, run_.stderr
        accept.append(args.messages / smtp_source(relay.port, SESSIONS, args.messages))
    return {"accept_msgs_per_s": round(statistics.median(accept), 1), "accept_runs": [round(x, 1) for x in accept]}


def _recovery(relay, primary, args) -> dict:
    """Recovery: the primary returns at t0; ours runs the drain watcher service (drain.sh,
    looping), in the relay's cgroup when capped. Repeated outages give a median; a
    configuration that does not recover within patience is measured once."""
    firsts, empties = [], []
    for i in range(args.recoveries):
        if i:
            primary.stop()
            smtp_source(relay.port, SESSIONS, args.messages)
        time.sleep(args.settle)
        before = len(list(primary.spool.glob("msg.*")))
        primary.start()
        t0 = time.monotonic()
        first = first_delivery(primary, t0, args.patience, before)
        empty = wait_empty(relay, max(1.0, args.patience - (time.monotonic() - t0)))
        firsts.append(_round(first))
        empties.append(_round(None if empty is None else time.monotonic() - t0))
        if empty is None:
            break
    result: dict = {"recovery_first_delivery_s": _median(firsts), "recovery_empty_s": _median(empties),
              "recovery_runs": {"first_delivery_s": firsts, "empty_s": empties}}
    relay.stop_watchers()
    if empties[-1] is None:
        deferred = relay.queue()
        # Postfix stores a deferred message's next attempt time as its queue file's mtime.
        next_times = [p.stat().st_mtime for p in Path(relay.base, "spool", "deferred").rglob("*") if p.is_file()]
        wait = max(0.0, min(next_times) - time.time()) if next_times else 0.0
        result["recovery_empty_note"] = (
            f"{len(deferred)} of {args.messages} still queued after the {args.patience:.0f}s patience; "
            f"Postfix's backoff schedules the next attempt in {wait:.0f}s more "
            f"(queue file mtimes; minimal_backoff_time {relay.postconf('minimal_backoff_time')['minimal_backoff_time']})")
        result["patience_s"] = args.patience
    return result


def _drain(relay, primary, args) -> dict:
    """Drain throughput: empty the queue, queue again with the primary down, then flush."""
    relay.flush()
    relay.wait_queue_empty(900)
    drains = []
    for _ in range(args.repeats):
        primary.stop()
        smtp_source(relay.port, SESSIONS, args.messages)
        time.sleep(1)
        primary.start()
        t0 = time.monotonic()
        relay.flush()
        relay.wait_queue_empty(900)
        drains.append(args.messages / (time.monotonic() - t0))
    return {"drain_msgs_per_s": round(statistics.median(drains), 1), "drain_runs": [round(x, 1) for x in drains]}


def _peak(relay, args) -> dict:
    """Peak memory under 50 concurrent sessions."""
    peak = [0.0]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], pss_mb(relay))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    many_clients(relay.port, 50, max(1, args.messages // 50))
    done.set()
    sampler.join()
    return {"peak_pss_mb": round(peak[0], 1),
            "process_limit": relay.postconf("default_process_limit")["default_process_limit"]}


def _round(value):
    return None if value is None else round(value, 2)


def _median(values: list) -> float | None:
    """Median of the runs; a run that did not recover within patience counts as the slowest."""
    known = [v for v in values if v is not None]
    if len(known) < len(values) and len(known) <= len(values) // 2:
        return None
    return round(statistics.median(known + [float("inf")] * (len(values) - len(known))), 2)


def watcher_idle_cpu(files: dict[str, str], tls: Path, base: Path, seconds: float) -> dict:
    """CPU the drain watcher service itself uses on a relay with an empty queue: the bash
    loop and every child it reaped (utime+stime+cutime+cstime of its pid)."""
    print(f"  measuring the idle watcher for {seconds:.0f}s ...", flush=True)
    lab = Lab(base / "idle", files, tls)
    try:
        primary = lab.sink()
        relay = lab.relay(primary.port)
        proc = relay.start_watcher(files)
        started = time.monotonic()
        time.sleep(seconds)
        fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = sum(int(x) for x in fields[11:15])
        elapsed = time.monotonic() - started
        cpu_s = ticks / os.sysconf("SC_CLK_TCK")
        return {"seconds": round(elapsed), "cpu_s": round(cpu_s, 2), "cpu_percent": round(100 * cpu_s / elapsed, 3)}
    finally:
        lab.down()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--patience", type=float, default=150.0, help="seconds to wait for a recovery")
    parser.add_argument("--idle-seconds", type=float, default=600.0,
                        help="measure the drain watcher's own CPU on an idle relay for this long; 0 skips")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds the outage lasts after the load")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each throughput figure (median reported)")
    parser.add_argument("--recoveries", type=int, default=5, help="outages per configuration (median reported)")
    parser.add_argument("--cpu-cap", type=float, default=0.125,
                        help="also measure with the relay capped to this share of one CPU (1/8 OCPU); 0 skips")
    parser.add_argument("--capped-messages", type=int, default=400)
    parser.add_argument("--keepalive", action="store_true",
                        help="only the accountMode free cost: ours at --cpu-cap with and without the keep-alive")
    args = parser.parse_args(argv)
    if args.keepalive:
        return keepalive_cost(args)

    ours = files_from_run(program.run(ROOT / "examples" / "Pulumi.seed.yaml"))
    base = Path(tempfile.mkdtemp(prefix="backup-mx-bench-", dir="/tmp"))
    try:
        base.chmod(0o755)
        tls = make_tls(base / "tls", "mx2.viktorbarzin.me")
        print(f"bench: {args.messages} x 1 KB messages, patience {args.patience:.0f}s", flush=True)
        results = {}
        for name, files, tls_dir, watcher in (("ours", ours, tls, True), ("stock", stock_files(ours), None, False)):
            print(f"  measuring {name} ...", flush=True)
            results[name] = measure(name, files, tls_dir, args, base, watcher)
            print(f"  {name}: {json.dumps(results[name])}", flush=True)
        capped = None
        if args.cpu_cap:
            small = argparse.Namespace(**{**vars(args), "messages": args.capped_messages, "repeats": 1})  # recoveries kept
            capped = {"cpu": args.cpu_cap, "messages": args.capped_messages}
            for name, files, tls_dir, watcher in (("ours", ours, tls, True), ("stock", stock_files(ours), None, False)):
                print(f"  measuring {name} capped to {args.cpu_cap} CPU ...", flush=True)
                capped[name] = measure(f"{name}-capped", files, tls_dir, small, base, watcher, cap=args.cpu_cap)
                print(f"  {name} capped: {json.dumps(capped[name])}", flush=True)
        idle = watcher_idle_cpu(ours, tls, base, args.idle_seconds) if args.idle_seconds else None
        machine = (f"{platform.node()} {platform.machine()} {os.cpu_count()} cores, "
                   f"{subprocess.run(['postconf', '-d', '-h', 'mail_version'], capture_output=True, text=True).stdout.strip()} "
                   f"Postfix, Python {platform.python_version()}")
        doc = {"machine": machine, "messages": args.messages, "watcher_idle": idle,
               "drain_ratio": round(results["ours"]["drain_msgs_per_s"] / results["stock"]["drain_msgs_per_s"], 2),
               "accept_ratio": round(results["ours"]["accept_msgs_per_s"] / results["stock"]["accept_msgs_per_s"], 2),
               "cpu_cap": capped, **results}
        if "recovery_empty_note" in results["stock"]:
            doc["stock"]["recovery_empty_note"] = results["stock"]["recovery_empty_note"]
        OUT.mkdir(exist_ok=True)
        (OUT / "results.json").write_text(json.dumps(doc, indent=2) + "\n")
        (OUT / "results.md").write_text(render_md(doc))
        print((OUT / "results.md").read_text())
        return 0
    finally:
        shutil.rmtree(base, ignore_errors=True)


def keepalive_cost(args) -> int:
    """Accept and drain throughput of ours, capped to --cpu-cap, with and without the keep-alive
    (busy all the time, idle priority, in the relay's cgroup); runs alternate, medians reported."""
    free = files_from_run(program.run(ROOT / "examples" / "Pulumi.free.yaml"))
    base = Path(tempfile.mkdtemp(prefix="backup-mx-bench-", dir="/tmp"))
    small = argparse.Namespace(**{**vars(args), "messages": args.capped_messages, "repeats": 1, "recoveries": 1})
    runs: dict[str, list[dict]] = {"without": [], "with": []}
    try:
        base.chmod(0o755)
        tls = make_tls(base / "tls", "mx2.viktorbarzin.me")
        for i in range(args.repeats):
            for label in ("without", "with"):
                print(f"  keep-alive {label}, run {i + 1} ...", flush=True)
                r = measure(f"ka-{label}-{i}", free, tls, small, base, True, cap=args.cpu_cap,
                            keepalive=free if label == "with" else None)
                runs[label].append({k: r[k] for k in ("accept_msgs_per_s", "drain_msgs_per_s",
                                                      "recovery_first_delivery_s")})
        doc: dict = {"cpu_cap": args.cpu_cap, "messages": args.capped_messages, "runs": runs}
        for key in ("accept_msgs_per_s", "drain_msgs_per_s"):
            without = statistics.median(r[key] for r in runs["without"])
            with_ = statistics.median(r[key] for r in runs["with"])
            doc[key] = {"without": round(without, 1), "with": round(with_, 1), "ratio": round(with_ / without, 2)}
        doc["machine"] = f"{platform.node()} {platform.machine()} {os.cpu_count()} cores"
        (OUT / "keepalive.json").write_text(json.dumps(doc, indent=2) + "\n")
        print(json.dumps(doc, indent=2))
        return 0
    finally:
        shutil.rmtree(base, ignore_errors=True)


def render_md(doc: dict) -> str:
    o, s = doc["ours"], doc["stock"]

    def v(x, unit=""):
        return "not within patience" if x is None else f"{x}{unit}"

    rows = [
        ("recovery: first delivery after the primary returns", v(o["recovery_first_delivery_s"], " s"),
         v(s["recovery_first_delivery_s"], " s"), "ours ≤ 10 s"),
        ("recovery: queue empty", v(o["recovery_empty_s"], " s"), v(s["recovery_empty_s"], " s"), "ours ≤ 120 s"),
        ("drain throughput after a flush", f"{o['drain_msgs_per_s']} msg/s", f"{s['drain_msgs_per_s']} msg/s",
         f"ratio {doc['drain_ratio']} (target ≥ 0.9)"),
        (f"accept throughput, {SESSIONS} sessions", f"{o['accept_msgs_per_s']} msg/s", f"{s['accept_msgs_per_s']} msg/s",
         f"ratio {doc['accept_ratio']} (target ≥ 0.8)"),
        ("peak memory, 50 sessions (PSS, all processes)", f"{o['peak_pss_mb']} MB", f"{s['peak_pss_mb']} MB",
         "ours ≤ 200 MB"),
    ]
    lines = ["# Bench results\n", f"Machine: {doc['machine']}. {doc['messages']} × 1 KB messages per figure; "
             f"drain watcher service probing every 3 s (drain.sh as the VM runs it). One run, side by side; "
             f"throughputs are the median of {len(o['drain_runs'])} runs "
             f"(ours drain {o['drain_runs']}, stock drain {s['drain_runs']}, ours accept {o['accept_runs']}, "
             f"stock accept {s['accept_runs']} msg/s). Recovery figures are medians over repeated outages "
             f"(ours first delivery {o['recovery_runs']['first_delivery_s']} s, empty "
             f"{o['recovery_runs']['empty_s']} s; stock {s['recovery_runs']['first_delivery_s']} s, measured once "
             f"when it does not recover within patience).\n",
             "| measure | ours (rendered config) | stock defaults, same routing | target |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    if "recovery_empty_note" in s:
        lines += ["", f"Stock recovery: {s['recovery_empty_note']}."]
    idle = doc.get("watcher_idle")
    if idle:
        lines += ["", f"Drain watcher on an idle relay (empty queue): {idle['cpu_s']} CPU-seconds over "
                      f"{idle['seconds']} s, {idle['cpu_percent']} % of one core (the bash loop and every "
                      "child it reaped)."]
    cap = doc.get("cpu_cap")
    if not cap:
        lines += ["", "CPU cap (1/8 OCPU cgroup emulation): not measured in this run.", ""]
        return "\n".join(lines)
    co, cs = cap["ours"], cap["stock"]
    lines += ["", f"## Relay capped to {cap['cpu']} CPU (cgroup; emulates the 1/8-OCPU VM), "
                  f"{cap['messages']} × 1 KB messages, one run each", "",
              "| measure | ours, capped | stock, capped |", "|---|---|---|",
              f"| recovery: first delivery (median of {len(co['recovery_runs']['first_delivery_s'])}) | "
              f"{v(co['recovery_first_delivery_s'], ' s')} | "
              f"{v(cs['recovery_first_delivery_s'], ' s')} |",
              f"| recovery: queue empty | {v(co['recovery_empty_s'], ' s')} | {v(cs['recovery_empty_s'], ' s')} |",
              f"| drain throughput | {co['drain_msgs_per_s']} msg/s | {cs['drain_msgs_per_s']} msg/s |",
              f"| accept throughput, {SESSIONS} sessions | {co['accept_msgs_per_s']} msg/s | {cs['accept_msgs_per_s']} msg/s |",
              f"| peak memory (PSS), 50 sessions | {co['peak_pss_mb']} MB | {cs['peak_pss_mb']} MB |", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
