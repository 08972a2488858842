"""Offline preview: the real program under the mock runtime, then the real policy pack.

    python -m offline.preview [--config Pulumi.example.yaml] [--first-preview] [--second-run]
                              [--policy-config policy/policy-config.json] [--no-policy] [--out build]

Writes build/ (user-data.yaml, the Postfix files, outputs.json, plan.json), prints the plan
and the policy results the way `pulumi preview --policy-pack policy` would, and exits
non-zero on a config error (2) or a mandatory policy violation (1).
"""
from __future__ import annotations

import argparse
import base64
import json
import sys
import time
from pathlib import Path

import yaml

from components.dns import record_key
from offline import livezone, program

ROOT = Path(__file__).resolve().parent.parent
DEFERRED = "can't run policy"


def write_build(out: Path, plan: dict, outputs: dict) -> dict[str, str]:
    out.mkdir(parents=True, exist_ok=True)
    (out / "plan.json").write_text(json.dumps(plan, indent=2, sort_keys=True) + "\n")
    (out / "outputs.json").write_text(json.dumps(program.public_outputs(outputs), indent=2) + "\n")
    written = {}
    monitoring = outputs.get("monitoring")
    if isinstance(monitoring, dict):
        (out / "monitoring").mkdir(exist_ok=True)
        for name, text in monitoring.items():
            (out / "monitoring" / name).write_text(text)
            written[f"monitoring/{name}"] = name
    for r in plan["resources"]:
        user_data = (r["props"].get("metadata") or {}).get("user_data")
        if isinstance(user_data, dict):
            user_data = user_data.get("value")
        if not isinstance(user_data, str) or user_data == program.UNKNOWN:
            continue
        text = base64.b64decode(user_data).decode()
        (out / "user-data.yaml").write_text(text)
        for f in yaml.safe_load(text).get("write_files", []):
            if f["path"].startswith("/etc/backup-mx/postfix/"):
                name = f["path"].rsplit("/", 1)[-1]
                (out / name).write_text(f["content"])
                written[name] = f["path"]
    return written


def print_plan(plan: dict, outputs: dict) -> None:
    names = {r["urn"]: r["name"] for r in plan["resources"]}
    print(f"Previewing stack '{plan['stack']}' offline (mock runtime, fake cloud"
          f"{', first preview: ids unknown' if plan['firstPreview'] else ''})\n")
    print(f"     {'Type':<42} {'Name':<36} Parent")
    for r in plan["resources"]:
        flags = ("P" if r["options"]["protect"] else " ") + ("I" if r["options"]["ignoreChanges"] else " ")
        print(f" +{flags} {r['type']:<42} {r['name']:<36} {names.get(r['parent'], '')}")
    print(f"\n {len(plan['resources'])} resources to create  (P = protected, I = ignoreChanges)\n")
    intent = next(r["props"] for r in plan["resources"] if r["type"] == "backupmx:index:BackupMx")
    shown = program.public_outputs(outputs)
    rows = [("protected domains", ", ".join(intent["domains"])),
            ("primary", f"{intent['primaryMxHost']}  MX {int(intent['primaryMxPreference'])}")]
    deployed = shown.get("relays")
    ips = {r["relayHostname"]: r["reservedIp"] for r in deployed} if isinstance(deployed, list) else {}
    for relay in intent["relays"]:  # the declared relays; their IPs once known
        rows.append(("relay", f"{relay['hostname']}  MX {int(relay['mxPreference'])}  reserved IP "
                              f"{ips.get(relay['hostname'], '[unknown until pulumi up]')}  "
                              f"{relay['faultDomain'] or 'fault domain: OCI picks'}"))
    rows += [("drain", shown["drainTarget"]["postfix"]),
            ("queue / bounce lifetime", f"{intent['queueLifetime']} / {intent['bounceLifetime']}"),
            ("message size limit", str(int(intent["messageSizeLimit"]))),
            *zone_budget_rows(plan)]
    mta_sts = shown.get("mtaSts")
    if isinstance(mta_sts, dict):
        rows += [("MTA-STS", f"mode {mta_sts['mode']}, id {mta_sts['id']}, mx {', '.join(mta_sts['mx'])}"),
                 *(("  policy URL", url) for url in mta_sts["urls"]),
                 *((f"  {name}", value) for records in mta_sts["records"].values() for name, value in records.items())]
    print(" Relay settings:")
    for label, value in rows:
        print(f"   {label:<26} {value}")
    print()


ZONE_BUDGET = 200  # the pack's zone-record-budget default (the Cloudflare Free quota)
ZONE_ENTRY_TYPES = ("cloudflare:index/dnsRecord:DnsRecord", "cloudflare:index/workersCustomDomain:WorkersCustomDomain")


def zone_budget_rows(plan: dict) -> list[tuple[str, str]]:
    """Per zone: live records + what this stack adds (DNS records and Worker custom domains,
    which Cloudflare adds a record for) against the budget; the pack enforces the same sum."""
    dns = next(r["props"] for r in plan["resources"] if r["type"] == "backupmx:index:Dns")
    rows = []
    for zone in dns["zones"]:
        live_keys = set(zone["liveRecordKeys"]) if isinstance(zone["liveRecordKeys"], list) else set()
        # a Worker custom domain's record is the address record at its host (the pack's rule)
        worker_hosts = {k.split(" ")[1] for k in live_keys if k.split(" ")[0].upper() in ("A", "AAAA", "CNAME")}
        added = 0
        for r in plan["resources"]:
            p = r["props"]
            if r["type"] not in ZONE_ENTRY_TYPES or p.get("zoneId") != zone["zoneId"]:
                continue
            if "content" in p and record_key(p["type"], p["name"], p["content"], p.get("priority")) in live_keys:
                continue
            if "hostname" in p and str(p["hostname"]).lower().rstrip(".") in worker_hosts:
                continue
            added += 1
        live = zone["liveRecordCount"]
        if isinstance(live, (int, float)):
            figure = f"{int(live)} live + {added} from this stack = {int(live) + added}"
        else:
            figure = f"{live} live + {added} from this stack"
        rows.append((f"zone {zone['domain']}", f"{figure} (budget {ZONE_BUDGET}: under it, or the pack refuses)"))
    return rows


def live_zones(files: list[Path], config: Path, stack: str) -> dict[str, list[dict]]:
    """--live-zone files, each assigned to the protected domain its records lie in."""
    if not files:
        return {}
    plain, _, _ = program.read_stack_file(config, "backup-mx", stack)
    domains = [d.lower().rstrip(".") for d in json.loads(plain.get("domains", "[]"))]
    found: dict[str, list[dict]] = {}
    for path in files:
        for domain, records in livezone.for_domains(livezone.load(path), domains).items():
            if domain in found:
                raise livezone.LiveZoneError(f"--live-zone {path}: a second file for {domain}")
            found[domain] = records
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=ROOT / "Pulumi.example.yaml", help="stack file")
    parser.add_argument("--stack", help="stack name (default: from the file name)")
    parser.add_argument("--first-preview", action="store_true", help="ids and IPs unknown, as before the first up")
    parser.add_argument("--second-run", action="store_true", help="the zone already holds this stack's records")
    parser.add_argument("--policy-config", type=Path, help="JSON as for --policy-pack-config")
    parser.add_argument("--live-zone", type=Path, action="append", default=[], metavar="FILE",
                        help="a protected zone's real records (Cloudflare BIND export or records-API JSON), "
                             "once per zone, instead of the fake zone")
    parser.add_argument("--no-policy", action="store_true", help="skip the policy pack")
    parser.add_argument("--out", type=Path, default=ROOT / "build")
    args = parser.parse_args(argv)
    stack = args.stack or args.config.name.removeprefix("Pulumi.").removesuffix(".yaml")

    code = _preview(args, stack)
    outcome = "rendered, policies skipped" if code == 0 and args.no_policy else OUTCOMES[code]
    print(f"preview: {outcome} (exit {code})", flush=True)
    return code


# The last line of every preview names its outcome on stdout (a failure's message is on
# stderr), because `make preview` turns every failure into make's own exit 2.
OUTCOMES = {0: "clean", 1: "policy violation", 2: "bad input (stack config, policy config or live zone)"}


def _preview(args, stack: str) -> int:
    started = time.monotonic()
    try:
        live = live_zones(args.live_zone, args.config, stack)
        result = program.run(args.config, stack=stack, first_preview=args.first_preview,
                             second_run=args.second_run, live_zones=live)
    except (program.StackFileError, livezone.LiveZoneError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if result.error:
        print(f"error: {result.error}", file=sys.stderr)
        return 2
    plan = program.plan(result)
    written = write_build(args.out, plan, result.outputs)
    print_plan(plan, result.outputs)
    for note in result.notes:
        print(f" note: {note}")
    print(f" wrote {args.out}/: plan.json, outputs.json, user-data.yaml, {', '.join(sorted(written))}")
    print(f" program: {time.monotonic() - started:.2f}s\n")
    if args.no_policy:
        return 0

    from offline import analyzer
    started = time.monotonic()
    try:
        violations, _ = analyzer.run_policies(program.plan(result, redacted=False),
                                              analyzer.load_policy_config(args.policy_config),
                                              dry_run=True)
    except analyzer.PolicyConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    deferred = [v for v in violations if v.message.startswith(DEFERRED)]
    real = [v for v in violations if v not in deferred]
    print(f"Policies ({analyzer.PACK_DIR.relative_to(ROOT)}, {time.monotonic() - started:.2f}s):")
    if not real:
        print("    no violations")
    for v in real:
        print(v.line())
    for v in deferred:
        print(f"    [deferred to pulumi up]  {v.policy}: {v.message.split('during preview: ')[-1]}")
    mandatory = [v for v in real if v.level == "mandatory"]
    print(f"\n{len(mandatory)} mandatory, {len(real) - len(mandatory)} advisory violation(s)")
    return 1 if mandatory else 0


if __name__ == "__main__":
    sys.exit(main())
