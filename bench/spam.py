"""make bench-spam: the everyday-spam scenario (lab/spam.py) in full, for each recipients mode,
beside a no-junk baseline, in one run. Writes bench/spam-results.json (and prints it). No assertions: the figures are
measurements; the scaled run in make test (tests/test_everyday_spam.py) asserts the bounds.

    python -m bench.spam [--junk 2000] [--spam-seconds 300]
                         [--after-seconds 420] [--outage-seconds 120] [--stack examples/Pulumi.seed.yaml]
                         [--label after] [--out bench/spam-results.json]
                         [--modes baseline,catchall,list,verify]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
from pathlib import Path

from lab import files_from_run, make_tls
from lab.spam import Scenario, run
from offline import program

ROOT = Path(__file__).resolve().parent.parent
LIST_URL = "https://mail.viktorbarzin.me/recipients.txt"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--junk", type=int, default=2000)
    parser.add_argument("--spam-seconds", type=float, default=300)
    parser.add_argument("--after-seconds", type=float, default=420)
    parser.add_argument("--outage-seconds", type=float, default=120)
    parser.add_argument("--stack", type=Path, default=ROOT / "examples" / "Pulumi.seed.yaml")
    parser.add_argument("--label", default="after", help="names this run in the results file (e.g. before)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "spam-results.json")
    parser.add_argument("--modes", default="baseline,catchall,list,verify",
                        help="comma-separated: baseline (catchall, no junk) and the recipients modes")
    args = parser.parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="backup-mx-spam-", dir="/tmp"))
    base.chmod(0o755)
    tls = make_tls(base / "tls", "mx2.viktorbarzin.me")
    full = Scenario(junk=args.junk, spam_seconds=args.spam_seconds, after_seconds=args.after_seconds,
                    outage_seconds=args.outage_seconds)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    runs = [(m, Scenario(**{**full.__dict__, "junk": 0}) if m == "baseline" else full) for m in modes]
    machine = (f"{platform.node()} {platform.machine()} {os.cpu_count()} cores, Postfix "
               f"{subprocess.run(['postconf', '-d', '-h', 'mail_version'], capture_output=True, text=True).stdout.strip()}")
    doc = json.loads(args.out.read_text()) if args.out.exists() else {}
    doc[args.label] = {"machine": machine, "scenario": full.__dict__, "runs": {}}
    for mode, sc in runs:
        print(f"spam bench [{args.label}] {mode}: {sc}", flush=True)
        overrides = {"recipients": "catchall" if mode == "baseline" else mode}
        if mode == "list":  # the scenario serves the list itself (lab/spam.py); the URL is a placeholder
            overrides["recipientListUrl"] = LIST_URL
        files = files_from_run(program.run(args.stack, overrides=overrides))
        result = run(mode, files, tls, base / mode, sc)
        doc[args.label]["runs"][mode] = result.as_dict()
        print(json.dumps(result.as_dict()), flush=True)
        args.out.write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
