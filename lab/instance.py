"""Throwaway Postfix instances on loopback, from the exact rendered files.

Used by `make lab` and by the tests. Only listen addresses, ports and paths are changed,
and every change is listed in `overrides()`. Never touches the machine's default
Postfix instance: everything lives under the instance's own directory.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

POSTFIX_BINARIES = ("postfix", "postconf", "postqueue", "postsuper", "smtp-sink", "smtp-source")
RENDERED = ("main.cf", "master.cf", "relay_recipients", "transport")


class LabError(RuntimeError):
    pass


def require_postfix() -> None:
    missing = [b for b in POSTFIX_BINARIES if shutil.which(b, path="/usr/sbin:/usr/bin:/sbin:/bin") is None]
    if missing:
        raise LabError(f"Postfix tools not found: {', '.join(missing)}. Install Debian's postfix package "
                       "(apt-get install postfix swaks), or run .ci/run once.")
    if os.geteuid() != 0:
        raise LabError("the lab runs Postfix instances as root (postfix start needs it); run it as root")


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_port(port: int, host: str = "127.0.0.1", timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise LabError(f"nothing answers on {host}:{port} after {timeout}s")


def wait_listening(netns: str, host: str, port: int, timeout: float = 15.0) -> None:
    """wait_port inside a network namespace: a listening socket on host:port there."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(["ip", "netns", "exec", netns, "ss", "-ltnH", f"sport = :{port}"],
                             capture_output=True, text=True).stdout
        if f"{host}:{port}" in out:
            return
        time.sleep(0.05)
    raise LabError(f"nothing listens on {host}:{port} in netns {netns} after {timeout}s")


def run(*cmd: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(cmd), capture_output=True, text=True, **kw)
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def stop_group(proc: subprocess.Popen, grace: float) -> None:
    """Stop a process started with start_new_session=True and everything in its group:
    SIGTERM, then SIGKILL after `grace` seconds. By pid, never by name."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _settings(main_cf: str, names: tuple[str, ...]) -> dict[str, str]:
    """The last setting of each name in main.cf text (single-line values, as rendered)."""
    found = {}
    for line in main_cf.split("\n"):
        name, sep, value = line.partition("=")
        if sep and name.strip() in names and line[:1] not in (" ", "\t", "#"):
            found[name.strip()] = value.strip()
    return found


def settle(directory: Path) -> None:
    """Date the files back a minute: Postfix rereads a file modified within the last second
    ("pausing to let file cool down", 0.3 s at a time), which costs seconds per start."""
    old = time.time() - 60
    for path in Path(directory).iterdir():
        if path.is_file():
            os.utime(path, (old, old))


def set_main_params(text: str, values: dict[str, str]) -> str:
    """main.cf with each named parameter's lines (and their continuation lines) replaced by
    one `name = value` line at the end; every other byte is kept."""
    out, skipping = [], False
    for line in text.split("\n"):
        if skipping and line[:1] in (" ", "\t") and line.strip():
            continue
        name = line.split("=", 1)[0].strip() if "=" in line and line[:1] not in (" ", "\t", "#") else None
        skipping = name in values
        if not skipping:
            out.append(line)
    body = "\n".join(out)
    return body + ("" if body.endswith("\n") else "\n") + "".join(f"{k} = {v}\n" for k, v in values.items())


_ENTRY = re.compile(r"^(\S+)(\s+)(\S+)(\s+\S+\s+\S+\s+)(\S+)(\s.*)$")


def move_listener(text: str, address: str) -> str:
    """master.cf with the public SMTP listener (`smtp inet ...`) moved to `address`; the rest
    of its line, its options and every other line are kept verbatim. Chroot is turned off
    on entries that ask for it (the lab has no jail)."""
    lines = []
    for line in text.split("\n"):
        m = _ENTRY.match(line) if line[:1] not in (" ", "\t", "#", "") else None
        if m:
            name, sp, kind, middle, chroot, rest = m.groups()
            if name == "smtp" and kind == "inet":
                name = address
            line = name + sp + kind + middle + ("n" if chroot in ("y", "-") else chroot) + rest
        lines.append(line)
    return "\n".join(lines)


def point_drain(transport: str, host: str, port: int) -> str:
    """The transport map with the rendered drain target ([host]:port) pointed at the lab's."""
    target = re.search(r"\[[^\]]+\]:\d+", transport)
    return transport.replace(target.group(0), f"[{host}]:{port}") if target else transport


@dataclass
class Relay:
    """A Postfix instance built from rendered files under `base`."""
    base: Path
    port: int
    drain_port: int
    drain_host: str = "127.0.0.1"
    listen: str = "127.0.0.1"
    tls_dir: Path | None = None
    extra: dict[str, str] = field(default_factory=dict)  # tests only: scaled lifetimes, stock defaults
    resolv_conf: Path | None = None  # run the instance with this resolv.conf (private mount namespace)
    env_overrides: dict[str, str] = field(default_factory=dict)  # tests only: e.g. the lab's WireGuard interface
    watchers: list = field(default_factory=list)

    @property
    def conf(self) -> Path:
        return self.base / "etc"

    @property
    def log(self) -> Path:
        return self.base / "maillog"

    def overrides(self, main_cf: str = "") -> dict[str, str]:
        """Every main.cf change from the rendered file: paths and addresses only (the maps'
        /etc/postfix paths point into the instance's own directory)."""
        o = {
            name: value.replace("/etc/postfix/", f"{self.conf}/")
            for name, value in _settings(main_cf, ("relay_recipient_maps", "transport_maps")).items()
            if "/etc/postfix/" in value
        }
        o.update({
            "queue_directory": str(self.base / "spool"),
            "data_directory": str(self.base / "data"),
            "maillog_file": str(self.log),
            "maillog_file_prefixes": str(self.base),
        })
        if self.tls_dir is not None:
            o["smtpd_tls_cert_file"] = str(self.tls_dir / "fullchain.pem")
            o["smtpd_tls_key_file"] = str(self.tls_dir / "privkey.pem")
        return {**o, **self.extra}

    def create(self, files: dict[str, str]) -> "Relay":
        """files: main.cf, master.cf, relay_recipients, transport as rendered."""
        for name in RENDERED:
            if name not in files:
                raise LabError(f"rendered {name} missing")
        if not port_free(self.port, self.listen):
            raise LabError(f"port {self.listen}:{self.port} is taken; choose another with LAB_PORT")
        self.conf.mkdir(parents=True, exist_ok=True)
        for d in ("spool", "data"):
            (self.base / d).mkdir(exist_ok=True)
        shutil.chown(self.base / "data", "postfix", "postfix")
        # postlogd writes the log as root; after a kill -9 postsuper (unprivileged) writes it directly.
        self.log.touch()
        shutil.chown(self.log, "postfix", "postfix")
        for name in RENDERED:
            (self.conf / name).write_text(files[name])
        # The drain goes to the fake primary: the transport map's next hop is the one value changed.
        (self.conf / "transport").write_text(point_drain(files["transport"], self.drain_host, self.drain_port))
        # Text edits only: `postconf -e/-M/-F` would rewrite master.cf in postconf's own normal
        # form, which reads attached options (-oname=value) differently from the daemons.
        self.rendered_main = files["main.cf"]
        (self.conf / "main.cf").write_text(set_main_params(files["main.cf"], self.overrides(files["main.cf"])))
        (self.conf / "master.cf").write_text(move_listener(files["master.cf"], f"{self.listen}:{self.port}"))
        settle(self.conf)
        check = run("postfix", "-c", str(self.conf), "check")
        self.check_output = (check.stdout + check.stderr).strip()
        return self

    def start(self) -> "Relay":
        if self.resolv_conf is None:
            run("postfix", "-c", str(self.conf), "start")
        else:
            # Postfix resolves through /etc/resolv.conf; give this instance (only) a lab resolver.
            run("unshare", "--mount", "--propagation", "private", "sh", "-c",
                f"mount --bind {self.resolv_conf} /etc/resolv.conf && exec postfix -c {self.conf} start")
        wait_port(self.port, self.listen)
        return self

    def stop(self) -> None:
        self.stop_watchers()
        run("postfix", "-c", str(self.conf), "stop", check=False)
        self._wait_master_gone()

    def master_pid(self) -> int | None:
        try:
            return int((self.base / "spool" / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def kill9(self) -> None:
        """kill -9 the master and every process of this instance (its process group)."""
        pid = self.master_pid()
        if pid is None:
            raise LabError("relay master is not running")
        pgid = os.getpgid(pid)
        os.killpg(pgid, signal.SIGKILL)
        self._wait_master_gone()

    def _wait_master_gone(self, timeout: float = 15.0) -> None:
        pid = self.master_pid()
        deadline = time.monotonic() + timeout
        while pid and time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)

    def watcher_env(self, files: dict[str, str], **extra: str) -> Path:
        """The rendered env file with the drain address pointed at the fake primary (and
        `extra` values, paths and URLs only)."""
        changed = {"DRAIN_HOST": self.drain_host, "DRAIN_PORT": str(self.drain_port),
                   "POSTFIX_CONFIG_DIR": str(self.conf), **self.env_overrides, **extra}
        lines = [ln for ln in files["backup-mx.env"].splitlines() if ln.partition("=")[0] not in changed]
        lines += [f"{k}={shlex.quote(v)}" for k, v in changed.items()]
        path = self.base / "backup-mx.env"
        path.write_text("\n".join(lines) + "\n")
        return path

    def run_watcher(self, files: dict[str, str]) -> str:
        """One run of the drain watcher exactly as rendered into cloud-init (drain.sh)."""
        script = self.base / "backup-mx-drain"
        script.write_text(files["backup-mx-drain"])
        env = {**os.environ, "BACKUP_MX_ENV": str(self.watcher_env(files))}
        proc = subprocess.run(["bash", str(script), "--once"], capture_output=True, text=True, env=env, timeout=60)
        if proc.returncode != 0:
            raise LabError(f"drain watcher failed: {proc.stderr}")
        return proc.stdout

    def sync_recipients(self, files: dict[str, str], url: str, ca_bundle: Path | None = None) -> subprocess.CompletedProcess:
        """One run of the valid-recipient list sync exactly as rendered (recipients.sh), fetching
        `url`; its state and metrics in the instance's directory. Returns the finished process."""
        script = self.base / "backup-mx-recipients"
        script.write_text(files["backup-mx-recipients"])
        for d in ("state", "textfile"):
            (self.base / d).mkdir(exist_ok=True)
        env_file = self.watcher_env(files, RECIPIENT_LIST_URL=url, STATE_DIR=str(self.base / "state"),
                                    TEXTFILE_DIR=str(self.base / "textfile"))
        env = {**os.environ, "BACKUP_MX_ENV": str(env_file)}
        if ca_bundle is not None:
            env["CURL_CA_BUNDLE"] = str(ca_bundle)
        return subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env, timeout=120)

    def start_watcher(self, files: dict[str, str], **env: str) -> subprocess.Popen:
        """The drain watcher as the VM runs it (a service looping over drain.sh); stop it with
        stop_watcher, by pid."""
        script = self.base / "backup-mx-drain"
        script.write_text(files["backup-mx-drain"])
        proc = subprocess.Popen(["bash", str(script)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env={**os.environ, "BACKUP_MX_ENV": str(self.watcher_env(files)), **env},
                                start_new_session=True)
        self.watchers.append(proc)
        return proc

    def stop_watchers(self) -> None:
        for proc in self.watchers:
            stop_group(proc, 15)
        self.watchers.clear()

    def queue(self) -> list[dict]:
        """postqueue -j, read until two listings agree: showq can miss a queue file while qmgr
        moves it between queues, so a single listing may be momentarily short. A postqueue that
        fails raises: its empty output is no listing."""
        previous = None
        for _ in range(10):
            out = run("postqueue", "-c", str(self.conf), "-j").stdout
            listing = [json.loads(line) for line in out.splitlines() if line.strip()]
            ids = sorted(m["queue_id"] for m in listing)
            if ids == previous:
                return listing
            previous = ids
        return listing

    def flush(self) -> None:
        run("postqueue", "-c", str(self.conf), "-f")

    def postconf(self, *names: str) -> dict[str, str]:
        out = run("postconf", "-c", str(self.conf), "-h" if len(names) == 1 else "-n", *names).stdout
        if len(names) == 1:
            return {names[0]: out.strip()}
        return dict(line.split(" = ", 1) if " = " in line else (line.rstrip(" ="), "")
                    for line in out.splitlines())

    def wait_log(self, pattern: str, timeout: float = 15.0) -> str:
        """postlogd writes asynchronously: wait for a line matching the regex."""
        import re
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(pattern, self.log_text())
            if match:
                return match.group(0)
            time.sleep(0.05)
        raise LabError(f"no log line matching {pattern!r} in {self.log} after {timeout}s")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_queue_empty(self, timeout: float) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if not self.queue():
                return time.monotonic() - started
            time.sleep(0.2)
        raise LabError(f"queue not empty after {timeout}s: {len(self.queue())} messages")


@dataclass
class Sink:
    """The fake primary: Postfix's smtp-sink, writing one file per received message."""
    base: Path
    port: int
    mode: list[str] = field(default_factory=list)  # e.g. ["-r", "RCPT"] (4xx) or ["-f", "RCPT"] (5xx)
    proc: subprocess.Popen | None = None
    listen: str = "127.0.0.1"
    netns: str | None = None  # run inside this network namespace (the WireGuard lab's primary side)

    @property
    def spool(self) -> Path:
        return self.base / "received"

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise LabError("the fake primary is not running")
        return self.proc.pid

    def start(self) -> "Sink":
        if self.netns is None and not port_free(self.port, self.listen):
            raise LabError(f"port {self.listen}:{self.port} is taken; choose another drain port")
        self.spool.mkdir(parents=True, exist_ok=True)
        shutil.chown(self.spool, "postfix", "postfix")
        inside = ["ip", "netns", "exec", self.netns] if self.netns else []
        self.proc = subprocess.Popen(
            [*inside, "smtp-sink", "-u", "postfix", "-c", "-d", f"{self.spool}/msg.", *self.mode,
             f"{self.listen}:{self.port}", "256"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        (self.base / "sink.pid").write_text(str(self.pid))
        if self.netns:
            wait_listening(self.netns, self.listen, self.port)
        else:
            wait_port(self.port, self.listen)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None

    def messages(self) -> list[str]:
        # smtp-sink also dumps refused transactions, as empty files: those carried no message.
        texts = [p.read_text(errors="replace") for p in sorted(self.spool.glob("msg.*")) if p.is_file()]
        return [t for t in texts if t.strip()]
