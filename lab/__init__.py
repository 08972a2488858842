"""The relay lab: the rendered relay and a fake primary on loopback (make lab, tests, bench)."""
from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path

import yaml

from .instance import LabError, Relay, Sink, free_port, require_postfix

__all__ = ["Lab", "LabError", "Relay", "Sink", "files_from_run", "files_from_user_data", "make_tls", "free_port"]


def files_from_run(run, relay: str | None = None) -> dict[str, str]:
    """The files a relay VM receives, from a program run (offline.program.Run): the only relay,
    or with several, the one whose host name is `relay`."""
    instances = [r for r in run.resources if r.type.endswith("instance:Instance")
                 and relay in (None, r.props.get("displayName"))]
    if len(instances) != 1:
        raise LabError(f"{len(instances)} relay instances match {relay or 'any name'}; name one relay")
    return files_from_user_data(instances[0].props["metadata"]["user_data"]["value"])


def files_from_user_data(user_data_b64: str) -> dict[str, str]:
    doc = yaml.safe_load(base64.b64decode(user_data_b64).decode())
    return {f["path"].rsplit("/", 1)[-1]: f["content"] for f in doc["write_files"]
            if f["path"].startswith(("/etc/backup-mx/postfix/", "/usr/local/sbin/", "/usr/local/lib/backup-mx/"))
            or f["path"] == "/etc/backup-mx/backup-mx.env"}


def make_tls(directory: Path, hostname: str, days: int = 90) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", str(days),
                    "-subj", f"/CN={hostname}", "-addext", f"subjectAltName=DNS:{hostname}",
                    "-keyout", str(directory / "privkey.pem"), "-out", str(directory / "fullchain.pem")],
                   check=True, capture_output=True)
    return directory


class Lab:
    """A relay built from the VM's files plus a fake primary, all under one directory."""

    def __init__(self, base: Path, files: dict[str, str], tls_dir: Path | None = None):
        require_postfix()
        self.base, self.files, self.tls_dir = base, files, tls_dir
        self.relays: list[Relay] = []
        self.sinks: list[Sink] = []

    def sink(self, port: int | None = None, mode: list[str] | None = None, name: str = "primary",
             **kw) -> Sink:
        s = Sink(self.base / name, port or free_port(), mode or [], **kw).start()
        self.sinks.append(s)
        return s

    def relay(self, drain_port: int, port: int | None = None, name: str = "relay", **kw) -> Relay:
        r = Relay(self.base / name, port or free_port(), drain_port, tls_dir=self.tls_dir, **kw)
        r.create(self.files).start()
        self.relays.append(r)
        return r

    def down(self) -> None:
        for r in self.relays:
            r.stop()
        for s in self.sinks:
            s.stop()
        shutil.rmtree(self.base, ignore_errors=True)
