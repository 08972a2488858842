"""A throwaway rspamd with its own redis, on loopback: Debian's rspamd config tree plus the
local.d files given, scanning what rspamc sends it.

Overrides, listed: the workers' listen ports, CONFDIR/LOCAL_CONFDIR/DBDIR/RUNDIR/LOGDIR
(all under the instance's directory), redis at the instance's own port, and DNS pointed at a
closed port so that every lookup fails at once instead of leaving the machine. Stopped by
pid, never by name.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

from .instance import LabError, free_port, stop_group, wait_port

WORKERS = {"normal": "11333", "controller": "11334", "rspamd_proxy": "11332", "fuzzy": "11335"}
NO_DNS = 'dns { nameserver = ["127.0.0.1:9"]; timeout = 0.2s; retransmits = 1; }\n'


class Rspamd:
    def __init__(self, base: Path, local_d: dict[str, str], redis_password: str) -> None:
        self.base, self.local_d, self.redis_password = base, local_d, redis_password
        self.redis_port, self.port = free_port(), free_port()
        self.procs: list[subprocess.Popen] = []

    def start(self) -> "Rspamd":
        root = self.base / "conf"
        shutil.copytree("/etc/rspamd", root)
        conf = (root / "rspamd.conf").read_text()
        for worker, port in WORKERS.items():
            listen = self.port if worker == "normal" else free_port()
            conf = conf.replace(f'bind_socket = "localhost:{port}";', f'bind_socket = "127.0.0.1:{listen}";')
        (root / "rspamd.conf").write_text(conf)
        files = {"redis.conf": f'servers = "127.0.0.1:{self.redis_port}";\npassword = "{self.redis_password}";\n',
                 "options.inc": NO_DNS, **self.local_d}
        for name, text in files.items():
            (root / "local.d" / name).write_text(text)
        dirs = {d: self.base / d.lower() for d in ("DBDIR", "RUNDIR", "LOGDIR")}
        for d in dirs.values():
            d.mkdir()
            shutil.chown(d, "_rspamd", "_rspamd")
        try:  # whatever started is stopped if the rest does not come up
            self.procs.append(subprocess.Popen(
                ["redis-server", "--bind", "127.0.0.1", "--port", str(self.redis_port), "--save", "",
                 "--appendonly", "no", "--requirepass", self.redis_password],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
            wait_port(self.redis_port)
            self.procs.append(subprocess.Popen(
                ["rspamd", "-f", "-u", "_rspamd", "-g", "_rspamd", "-c", str(root / "rspamd.conf"),
                 f"--var=CONFDIR={root}", f"--var=LOCAL_CONFDIR={root}",
                 *(f"--var={k}={v}" for k, v in dirs.items())],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
            wait_port(self.port, timeout=120)  # rspamd compiles its TLD list and maps first
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for proc in reversed(self.procs):
            stop_group(proc, 10)
        self.procs.clear()

    def redis(self, *args: str) -> str:
        """redis-cli on this instance's redis, as `docker compose exec redis-mailcow` would run it."""
        return subprocess.run(["redis-cli", "-p", str(self.redis_port), "-a", self.redis_password,
                               "--no-auth-warning", *args], capture_output=True, text=True, check=True).stdout

    def scan(self, ip: str, message: bytes) -> tuple[str, list[str]]:
        """The action rspamd takes on a message from `ip`, and the symbols it found."""
        out = subprocess.run(["rspamc", "-h", f"127.0.0.1:{self.port}", "--ip", ip],
                             input=message, capture_output=True, timeout=60).stdout.decode()
        action = re.search(r"^Action: (.+)$", out, re.M)
        if action is None:
            raise LabError(f"rspamc gave no action: {out[-500:]}")
        return action.group(1), re.findall(r"^Symbol: (\S+)", out, re.M)

    def wait_action(self, ip: str, message: bytes, action: str, timeout: float = 60.0) -> list[str]:
        """Scan until rspamd takes `action` (a redis map is read on rspamd's own schedule)."""
        deadline = time.monotonic() + timeout
        while True:
            got, symbols = self.scan(ip, message)
            if got == action:
                return symbols
            if time.monotonic() > deadline:
                raise LabError(f"rspamd still says {got!r}, not {action!r}, after {timeout}s: {symbols}")
            time.sleep(0.5)
