"""MTA-STS in the lab: the rendered Worker served over HTTPS by Node (a test CA's certificate),
and a real MTA-STS client, postfix-mta-sts-resolver's daemon, that a sending Postfix asks
for each destination's TLS policy (socketmap)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from .instance import stop_group, wait_port

WORKER_HOST = Path(__file__).resolve().parent / "worker_host.mjs"


class WorkerHost:
    """node lab/worker_host.mjs: the Worker module behind HTTPS on host:443."""

    def __init__(self, base: Path, script: str, cert: Path, key: Path, host: str, port: int = 443):
        base.mkdir(parents=True, exist_ok=True)
        module = base / "worker.mjs"  # an ES module, as Workers load it
        module.write_text(script)
        self.host, self.port = host, port
        self.proc = subprocess.Popen(["node", str(WORKER_HOST), str(module), str(cert), str(key), host, str(port)],
                                     stdout=subprocess.DEVNULL, stderr=(base / "node.log").open("w"),
                                     start_new_session=True)
        wait_port(port, host)

    def stop(self) -> None:
        stop_group(self.proc, 5)


class StsResolver:
    """mta-sts-daemon in a private mount namespace whose /etc/resolv.conf and /etc/hosts are
    the lab's (the policy host and the _mta-sts record resolve there), trusting `ca_file`."""

    def __init__(self, base: Path, port: int, resolv_conf: Path, hosts: Path, ca_file: Path):
        base.mkdir(parents=True, exist_ok=True)
        config = base / "mta-sts-daemon.yml"
        config.write_text(yaml.safe_dump({
            # reuse_port false crashes 1.5.1 (its responder builds no socket options then).
            "host": "127.0.0.1", "port": port, "cache": {"type": "internal"},
            "default_zone": {"strict_testing": False, "timeout": 4, "require_sni": True}}))
        daemon = Path(sys.executable).parent / "mta-sts-daemon"
        self.log = base / "daemon.log"
        script = (f"mount --bind {resolv_conf} /etc/resolv.conf && mount --bind {hosts} /etc/hosts && "
                  f"exec env SSL_CERT_FILE={ca_file} {daemon} -c {config} -v debug -l {self.log}")
        self.proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self.port = port
        wait_port(port)

    def stop(self) -> None:
        stop_group(self.proc, 10)
