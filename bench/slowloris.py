"""A many-address slowloris against the rendered relay: how long a legitimate sender waits.

    python -m bench.slowloris [--before] [--addresses 60] [--per-address 5]

--before restores the limits the relay shipped with until the slowloris round (25 processes,
20 connections per client, smtpd_timeout 300 s, deadlines only under stress), side by side
with today's. Prints one JSON line: the wait of three legitimate senders (seconds, None when
not accepted within the patience), the sessions the attack held and the PSS of smtpd, cleanup
and postscreen while it held them. No assertion: a measurement on a noisy machine.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import time

from lab import Lab, files_from_run, make_tls
from lab.slowloris import Attack, legit_wait
from offline import program
from tests.helpers import EXAMPLE, lab_dir

BEFORE = {"default_process_limit": "25", "smtpd_client_connection_count_limit": "20",
          "smtpd_timeout": "${stress?{10}:{300}}s",
          "smtpd_per_request_deadline": "${smtpd_per_record_deadline?{$smtpd_per_record_deadline}:{${stress?{yes}:{no}}}}"}


def pss_kb(command: str) -> tuple[int, int]:
    """(processes, total PSS in kB) of every process whose name is `command`."""
    count = total = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if open(f"/proc/{pid}/comm").read().strip() != command:
                continue
            rollup = open(f"/proc/{pid}/smaps_rollup").read()
        except OSError:
            continue
        match = re.search(r"^Pss:\s+(\d+)", rollup, re.M)
        count, total = count + 1, total + (int(match.group(1)) if match else 0)
    return count, total


def measure(before: bool, addresses: int, per_address: int, patience: float) -> dict:
    files = files_from_run(program.run(EXAMPLE))
    base = lab_dir("slowloris")
    lab = Lab(base / "lab", files, make_tls(base / "tls", "mx2.viktorbarzin.me"))
    try:
        primary = lab.sink()
        relay = lab.relay(primary.port, extra=BEFORE if before else {})
        quiet, _ = legit_wait(relay.port, "127.0.30.1", "quiet", patience)
        attack = Attack(relay.port, [f"127.0.20.{i}" for i in range(1, addresses + 1)], per_source=per_address,
                        max_seconds=3 * patience + 120).start()
        try:
            attack.wait_holding(min(20, addresses), 120)
            attack.stop.wait(15)  # let the attack reach its steady state
            memory = {name: pss_kb(name) for name in ("smtpd", "cleanup", "postscreen")}
            held = attack.holding
            waits = [legit_wait(relay.port, f"127.0.31.{i + 1}", f"legit-{i}", patience) for i in range(3)]
        finally:
            attack.end()
        return {"config": "before" if before else "rendered", "quiet_wait_s": quiet, "held_sessions": held,
                "legit_wait_s_and_attempts": waits, "pss_kb": memory, "addresses": addresses,
                "per_address": per_address, "measured_at": time.strftime("%Y-%m-%d %H:%M:%S")}
    finally:
        lab.down()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", action="store_true")
    parser.add_argument("--addresses", type=int, default=60)
    parser.add_argument("--per-address", type=int, default=5)
    parser.add_argument("--patience", type=float, default=150)
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.before, args.addresses, args.per_address, args.patience)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
