"""make lab / make lab-down: the rendered relay and a fake primary on loopback.

    python -m lab up [--config examples/Pulumi.seed.yaml]   start relay, fake primary, drain watcher
    python -m lab primary stop|start                  simulate an outage of the primary
    python -m lab status                              queue and delivered counts
    python -m lab down                                stop everything the lab started (by pid)
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from lab import Lab, LabError, Relay, Sink, files_from_run, make_tls
from lab.instance import port_free, require_postfix

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / "lab" / "run"
STATE = RUN / "state.json"
WATCH_EVERY_S = 5  # the VM's timer runs every 30 s; the lab is impatient


def vm_files(config: Path) -> tuple[dict[str, str], str]:
    from offline import program
    result = program.run(config, stack=config.name.removeprefix("Pulumi.").removesuffix(".yaml"))
    if result.error:
        raise LabError(result.error)
    relay_host = next(r.props["relayHostname"] for r in result.resources if r.type.endswith("BackupMx"))
    return files_from_run(result), relay_host


def lab_ports(env: dict[str, str]) -> tuple[int, int]:
    """LAB_PORT and LAB_DRAIN_PORT: whole numbers in 1..65535, and not the same port."""
    ports = []
    for name, default in (("LAB_PORT", "2525"), ("LAB_DRAIN_PORT", "2526")):
        text = env.get(name, default).strip()
        if not text.isdigit() or not 1 <= int(text) <= 65535:
            raise LabError(f"{name}={text!r} is not a TCP port; allowed: 1..65535 (default {default})")
        ports.append(int(text))
    if ports[0] == ports[1]:
        raise LabError(f"LAB_PORT and LAB_DRAIN_PORT are both {ports[0]}: the relay and the fake primary need "
                       "their own ports")
    return ports[0], ports[1]


def up(args) -> int:
    port, drain = lab_ports(dict(os.environ))
    require_postfix()
    if STATE.exists():
        raise LabError(f"a lab is already running ({STATE}); run `make lab-down` first")
    for p in (port, drain):
        if not port_free(p):
            raise LabError(f"port 127.0.0.1:{p} is taken; set LAB_PORT / LAB_DRAIN_PORT")
    files, relay_host = vm_files(args.config)
    RUN.mkdir(parents=True, exist_ok=True)
    RUN.chmod(0o755)
    (RUN / "files.json").write_text(json.dumps(files))
    lab = Lab(RUN, files, make_tls(RUN / "tls", relay_host))
    watcher = None
    try:
        sink = lab.sink(drain)
        relay = lab.relay(drain, port)
        relay.watcher_env(files)
        script = RUN / "relay" / "backup-mx-drain"
        script.write_text(files["backup-mx-drain"])
        watcher = subprocess.Popen(
            ["bash", "-c", f"while :; do bash {script} >> {RUN}/drain-watcher.log 2>&1; sleep {WATCH_EVERY_S}; done"],
            env={**os.environ, "BACKUP_MX_ENV": str(relay.base / "backup-mx.env")}, start_new_session=True,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        STATE.write_text(json.dumps({"port": port, "drain": drain, "sink_pid": sink.pid,
                                     "watcher_pid": watcher.pid, "relay": str(relay.conf)}))
    except BaseException:
        # Whatever started is stopped by its pid, and nothing is left for lab-down to miss.
        if watcher is not None:
            _kill(watcher.pid, group=True)
        lab.down()
        STATE.unlink(missing_ok=True)
        raise
    py = os.path.relpath(sys.executable, Path.cwd())
    print(f"""Lab is up (files from {args.config.name}, overrides listed in lab/instance.py Relay.overrides()):
  relay         127.0.0.1:{port}  (postscreen -> smtpd, config {relay.conf})
  fake primary  127.0.0.1:{drain}  (smtp-sink; messages in {sink.spool})
  drain watcher every {WATCH_EVERY_S}s, log {RUN}/drain-watcher.log

Send mail:        swaks --server 127.0.0.1:{port} --to alice@{relay_host.split('.', 1)[1]} --from bob@example.com
Watch the queue:  postqueue -c {relay.conf} -p
Relay log:        tail -f {relay.log}
Outage:           {py} -m lab primary stop     (mail queues; every client still gets 250)
Recovery:         {py} -m lab primary start    (the watcher flushes within {WATCH_EVERY_S}s)
Status:           {py} -m lab status
Stop everything:  make lab-down""")
    return 0


def _state() -> dict:
    if not STATE.exists():
        raise LabError("no lab is running (make lab)")
    return json.loads(STATE.read_text())


def _kill(pid: int, group: bool = False) -> None:
    try:
        os.killpg(pid, signal.SIGTERM) if group else os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass


def primary(args) -> int:
    state = _state()
    if args.action == "stop":
        _kill(state["sink_pid"])
        state["sink_pid"] = 0
        print("fake primary stopped: the relay now queues")
    else:
        if state["sink_pid"]:
            print("fake primary already running")
            return 0
        sink = Sink(RUN / "primary", state["drain"]).start()
        state["sink_pid"] = sink.pid
        print("fake primary started: the drain watcher will flush")
    STATE.write_text(json.dumps(state))
    return 0


def status(_args) -> int:
    state = _state()
    queued = subprocess.run(["postqueue", "-c", state["relay"], "-j"], capture_output=True, text=True).stdout
    delivered = len(list((RUN / "primary" / "received").glob("msg.*")))
    print(f"queued: {len([line for line in queued.splitlines() if line.strip()])}  delivered to the primary: "
          f"{delivered}  primary: {'up' if state['sink_pid'] else 'down'}")
    return 0


def down(_args) -> int:
    if not STATE.exists():
        print("no lab running")
        return 0
    state = _state()
    _kill(state["watcher_pid"], group=True)
    if state["sink_pid"]:
        _kill(state["sink_pid"])
    Relay(RUN / "relay", state["port"], state["drain"]).stop()
    STATE.unlink()
    import shutil
    shutil.rmtree(RUN, ignore_errors=True)
    print("lab stopped and removed")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up")
    p_up.add_argument("--config", type=Path, default=ROOT / "examples" / "Pulumi.seed.yaml")
    p_up.set_defaults(func=up)
    p_primary = sub.add_parser("primary")
    p_primary.add_argument("action", choices=["stop", "start"])
    p_primary.set_defaults(func=primary)
    sub.add_parser("status").set_defaults(func=status)
    sub.add_parser("down").set_defaults(func=down)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except LabError as exc:
        print(f"lab: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
