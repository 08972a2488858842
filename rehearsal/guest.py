"""One rehearsal: the cached image booted by systemd-nspawn with the rendered user-data as a
NoCloud seed, in a network namespace whose only way out is the host-side stub network.
Everything started is stopped by pid, and every rule, mount, namespace and link removed,
also when a step fails.

One rehearsal at a time, held by a lock on LOCK. The owner keeps what a killed run would
leave behind in STATE (its stub pids, the old ip_forward, its work directory); the next
rehearsal that takes the lock and finds that state, or the namespace, reclaims it first."""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from lab.instance import stop_group

from . import stubs
from .image import mirror_hosts

HOST, HEADSCALE, GUEST = "10.77.0.1", "10.77.0.2", "10.77.0.10"
LINK = "bmxr0"
NS = "bmx-rehearsal"
TAG = "backup-mx-rehearsal"  # the comment on every iptables rule a rehearsal inserts
LOCK = Path("/run/lock/backup-mx-rehearsal.lock")
STATE = Path("/run/lock/backup-mx-rehearsal.json")
ACME_DIR = "https://acme.stub:14000/dir"


@dataclass
class Faults:
    tcp_blocked_s: float = 0          # all TCP out of the guest refused, DNS still answers (OCI before the route)
    mirror_blocked_s: float = 0       # the package mirror alone unreachable
    tailscale_repo_down: bool = False  # pkgs.tailscale.com refused for the whole boot
    headscale_silent: bool = False    # the login server swallows every packet


@dataclass
class Rehearsal:
    work: Path
    user_data: str
    relay_hostname: str
    login_host: str  # the tailnet's control server; "" with tailnet none
    faults: Faults = field(default_factory=Faults)
    ns: str = NS
    procs: dict = field(default_factory=dict)
    rules: list = field(default_factory=list)
    started: float = 0.0
    log: Path | None = None
    created: float = field(default_factory=time.monotonic)  # for the warm wall time, extraction included
    made_ns: bool = False  # teardown removes only what this rehearsal made
    made_link: bool = False
    lock: IO[str] | None = None  # the open LOCK file while this rehearsal owns it

    # --- host side -----------------------------------------------------------------
    @property
    def root(self) -> Path:
        return self.work / "root"

    def _ipt(self, *rule: str, table: str = "filter", timer: float = 0) -> None:
        rule = (rule[0], "-m", "comment", "--comment", TAG, *rule[1:])
        subprocess.run(["iptables", "-t", table, "-I", *rule], check=True)
        self.rules.append((table, rule))
        if timer:
            t = threading.Timer(timer, self._drop_rule, args=(table, rule))
            t.daemon = True
            t.start()

    def _drop_rule(self, table: str, rule: tuple) -> None:
        if (table, rule) in self.rules:
            subprocess.run(["iptables", "-t", table, "-D", *rule], check=False, capture_output=True)
            self.rules.remove((table, rule))

    def _spawn(self, name: str, cmd: list[str], **kw) -> subprocess.Popen:
        out = (self.work / f"{name}.log").open("w")
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, **kw)
        self.procs[name] = proc
        self._save_state()
        return proc

    # --- one at a time, and what a killed run left ----------------------------------
    def _save_state(self) -> None:
        procs = {name: [p.pid, _start_time(p.pid)] for name, p in self.procs.items()}
        STATE.write_text(json.dumps({"owner": os.getpid(), "work": str(self.work), "procs": procs,
                                     "forward_was": getattr(self, "forward_was", None)}))

    def acquire(self) -> None:
        LOCK.parent.mkdir(parents=True, exist_ok=True)
        lock = LOCK.open("a")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise RuntimeError(f"another rehearsal is running (it holds {LOCK}; one at a time)") from None
        self.lock = lock
        if STATE.exists() or Path(f"/run/netns/{self.ns}").exists():
            self.reclaim()
        self._save_state()

    def release(self) -> None:
        if self.lock is not None:
            STATE.unlink(missing_ok=True)
            self.lock.close()  # closing the file drops the flock
            self.lock = None

    def reclaim(self) -> None:
        """Undo what a rehearsal killed before its teardown left: its stubs (by the pids it
        recorded, each checked against its start time), whatever runs in the namespace, the
        rules carrying TAG, the link, the namespace, ip_forward and its work directory."""
        try:
            state = json.loads(STATE.read_text())
        except (OSError, ValueError):
            state = {}
        found = []
        for name, (pid, start) in (state.get("procs") or {}).items():
            if start is not None and _start_time(pid) == start:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
                found.append(f"{name} (pid {pid})")
        if Path(f"/run/netns/{self.ns}").exists():
            pids = subprocess.run(["ip", "netns", "pids", self.ns], capture_output=True, text=True).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            found += [f"{len(pids)} processes in namespace {self.ns}"] if pids else []
        for table in ("filter", "nat"):
            listing = subprocess.run(["iptables", "-t", table, "-S"], capture_output=True, text=True).stdout
            for line in listing.splitlines():
                words = shlex.split(line)
                if words[:1] == ["-A"] and f"--comment {TAG}" in " ".join(words):
                    subprocess.run(["iptables", "-t", table, "-D", *words[1:]], check=False, capture_output=True)
                    found.append(f"{table} rule {' '.join(words[1:])}")
        if state.get("forward_was") is not None:
            Path("/proc/sys/net/ipv4/ip_forward").write_text(state["forward_was"] + "\n")
        if Path(f"/sys/class/net/{LINK}").exists():
            subprocess.run(["ip", "link", "del", LINK], check=False, capture_output=True)
            found.append(f"link {LINK}")
        if Path(f"/run/netns/{self.ns}").exists():
            subprocess.run(["ip", "netns", "del", self.ns], check=False, capture_output=True)
            found.append(f"namespace {self.ns}")
        old = state.get("work")
        if old and Path(old).name.startswith(TAG + "-") and Path(old) != self.work:
            shutil.rmtree(old, ignore_errors=True)
            found.append(f"work directory {old}")
        STATE.unlink(missing_ok=True)
        print(f"rehearsal: reclaimed what a killed run (pid {state.get('owner', '?')}) left: "
              + "; ".join(found or ["nothing"]), file=sys.stderr)

    def network(self) -> None:
        self.acquire()
        self.mirrors = {host: socket.gethostbyname(host) for host in mirror_hosts()}
        subprocess.run(["ip", "netns", "add", self.ns], check=True)
        self.made_ns = True
        subprocess.run(["ip", "link", "add", LINK, "type", "veth", "peer", "name", "eth0", "netns", self.ns], check=True)
        self.made_link = True
        subprocess.run(["ip", "addr", "add", f"{HOST}/24", "dev", LINK], check=True)
        subprocess.run(["ip", "addr", "add", f"{HEADSCALE}/24", "dev", LINK], check=True)
        subprocess.run(["ip", "link", "set", LINK, "up"], check=True)
        self.forward_was = Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()
        self._save_state()
        Path("/proc/sys/net/ipv4/ip_forward").write_text("1\n")
        # Out of the guest: the Debian mirror, and nothing else.
        self._ipt("FORWARD", "-i", LINK, "-j", "REJECT")
        for mirror in sorted(set(self.mirrors.values())):
            self._ipt("FORWARD", "-i", LINK, "-d", mirror, "-p", "tcp", "--dport", "80", "-j", "ACCEPT")
            self._ipt("POSTROUTING", "-s", "10.77.0.0/24", "-d", mirror, "-j", "MASQUERADE", table="nat")
        self._ipt("FORWARD", "-o", LINK, "-m", "state", "--state", "ESTABLISHED,RELATED", "-j", "ACCEPT")
        f = self.faults
        if f.mirror_blocked_s:
            for mirror in sorted(set(self.mirrors.values())):
                self._ipt("FORWARD", "-i", LINK, "-d", mirror, "-j", "REJECT", timer=f.mirror_blocked_s)
        if f.tcp_blocked_s:
            self._ipt("FORWARD", "-i", LINK, "-p", "tcp", "-j", "REJECT", "--reject-with", "tcp-reset",
                      timer=f.tcp_blocked_s)
            self._ipt("INPUT", "-i", LINK, "-p", "tcp", "-j", "REJECT", "--reject-with", "tcp-reset",
                      timer=f.tcp_blocked_s)
        if f.tailscale_repo_down:
            self._ipt("INPUT", "-i", LINK, "-d", HOST, "-p", "tcp", "--dport", "443", "-j", "REJECT")
        if f.headscale_silent:
            self._ipt("INPUT", "-i", LINK, "-d", HEADSCALE, "-j", "DROP")

    def services(self) -> None:
        certs = stubs.make_ca(self.work / "pki", {
            "repo": ["pkgs.tailscale.com"], "headscale": [self.login_host or "login.invalid"],
            "acme": ["acme.stub", HOST]})
        self.ca = self.work / "pki" / "ca.pem"
        web = stubs.tailscale_repo(self.work / "repo")
        py = [os.environ.get("PYTHON", "python3"), "-m", "rehearsal.https_stub"]
        cwd = Path(__file__).resolve().parent.parent
        self._spawn("repo", py + ["--bind", HOST, "--cert", str(certs["repo"][0]), "--key", str(certs["repo"][1]),
                                  "--root", str(web)], cwd=cwd)
        self._spawn("headscale", py + ["--bind", HEADSCALE, "--cert", str(certs["headscale"][0]), "--key",
                                       str(certs["headscale"][1]), "--root", str(web)], cwd=cwd)
        # The bootstrap's egress check connects to the Ubuntu archive's name: a plain listener
        # here, so "mirror down" and "no TCP at all" are told apart as on OCI.
        self._spawn("archive", py + ["--bind", HOST, "--port", "80", "--root", str(web)], cwd=cwd)
        cfg = stubs.pebble_config(self.work, *certs["acme"], HOST)
        self._spawn("pebble", ["pebble", "-config", str(cfg), "-dnsserver", f"{HOST}:53"],
                    env={**os.environ, "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"})
        names = {**self.mirrors, "archive.ubuntu.com": HOST,
                 "security.ubuntu.com": HOST, "pkgs.tailscale.com": HOST, "acme.stub": HOST,
                 self.relay_hostname: GUEST, **({self.login_host: HEADSCALE} if self.login_host else {})}
        self._spawn("dnsmasq", ["dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts", "--log-queries",
                                f"--interface={LINK}", "--bind-interfaces", f"--listen-address={HOST}",
                                f"--dhcp-range={GUEST},{GUEST},255.255.255.0,1h",
                                f"--dhcp-option=option:router,{HOST}", f"--dhcp-option=option:dns-server,{HOST}",
                                f"--dhcp-leasefile={self.work / 'leases'}", f"--pid-file={self.work / 'dnsmasq.pid'}",
                                "--log-facility=-", *(f"--address=/{n}/{ip}" for n, ip in names.items())])

    # --- the guest -----------------------------------------------------------------
    def prepare_root(self, tarball: Path, meta: dict[str, str]) -> None:
        self.root.mkdir(parents=True)
        subprocess.run(["tar", "-xf", str(tarball), "-C", str(self.root)], check=True)
        # Stub trust and the ACME directory: the only changes to the image, both for stubs.
        ca = (self.work / "pki" / "ca.pem").read_text()
        (self.root / "usr/local/share/ca-certificates/backup-mx-rehearsal.crt").write_text(ca)
        with (self.root / "etc/ssl/certs/ca-certificates.crt").open("a") as bundle:
            bundle.write(ca)
        (self.root / "etc/letsencrypt").mkdir(parents=True, exist_ok=True)
        (self.root / "etc/letsencrypt/cli.ini").write_text(f"server = {ACME_DIR}\n")
        seed = self.root / "var/lib/cloud/seed/nocloud"
        seed.mkdir(parents=True)
        (seed / "user-data").write_text(self.user_data)
        (seed / "meta-data").write_text("".join(f"{k}: {v}\n" for k, v in meta.items()))
        (seed / "network-config").write_text("version: 2\nethernets:\n  eth0:\n    dhcp4: true\n")

    def boot(self) -> None:
        self.started = time.monotonic()
        self._spawn("guest", ["systemd-nspawn", "--boot", f"--directory={self.root}", "--machine=bmx-rehearsal",
                              "--register=no", "--keep-unit", f"--network-namespace-path=/run/netns/{self.ns}",
                              "--capability=CAP_NET_ADMIN", "--resolv-conf=off", "--timezone=off",
                              "--link-journal=no", "--console=pipe"])

    def pid1(self) -> int:
        proc = self.procs["guest"]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
            if children:
                return int(children[0])
            time.sleep(0.1)
        raise RuntimeError("the guest's init did not start")

    def sh(self, command: str, timeout: float = 60, check: bool = False) -> subprocess.CompletedProcess:
        return subprocess.run(["nsenter", "-t", str(self.pid1()), "-m", "-u", "-i", "-n", "-p", "--",
                               "/bin/sh", "-c", command], capture_output=True, text=True, timeout=timeout,
                              check=check, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"})

    def since_boot(self) -> float:
        return time.monotonic() - self.started

    def wait(self, what: str, condition, timeout: float, step: float = 1.0) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.procs["guest"].poll() is not None:
                raise RuntimeError(f"the guest exited while waiting for {what}")
            if condition():
                return self.since_boot()
            time.sleep(step)
        raise TimeoutError(f"{what}: not within {timeout:.0f} s of waiting (boot+{self.since_boot():.0f} s)")

    def smtp_banner(self) -> str:
        try:
            with socket.create_connection((GUEST, 25), timeout=3) as s:
                s.settimeout(10)
                return s.recv(512).decode(errors="replace")
        except OSError:
            return ""

    def boot_finished(self) -> bool:
        # /var/lib/cloud/instance is an absolute symlink inside the guest: look in instances/.
        return any((self.root / "var/lib/cloud/instances").glob("*/boot-finished"))

    def poweroff(self, timeout: float = 60) -> None:
        proc = self.procs.pop("guest", None)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)  # nspawn asks the guest's init for an orderly poweroff
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def teardown(self) -> None:
        self.poweroff()
        for name, proc in list(self.procs.items()):
            stop_group(proc, 10)
            self.procs.pop(name)
        for table, rule in list(reversed(self.rules)):
            self._drop_rule(table, rule)
        if hasattr(self, "forward_was"):
            Path("/proc/sys/net/ipv4/ip_forward").write_text(self.forward_was + "\n")
        if self.made_link:
            subprocess.run(["ip", "link", "del", LINK], check=False, capture_output=True)
        if self.made_ns:
            subprocess.run(["ip", "netns", "del", self.ns], check=False, capture_output=True)
        # The guest's rootfs may hold mounts only while it runs; it is stopped by now.
        shutil.rmtree(self.root, ignore_errors=True)
        self.release()


def _start_time(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat: tells a recorded pid from a later process given it."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None
