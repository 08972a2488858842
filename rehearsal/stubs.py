"""What the guest cannot reach from here, stood in for on the host side of its network:
a CA the guest trusts, a signed apt repository at pkgs.tailscale.com with a stub `tailscale`,
a headscale stub, pebble as the ACME server, and dnsmasq for DHCP and DNS."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from lab.instance import run

TAILSCALE_STUB = r"""#!/bin/bash
# Rehearsal stub of tailscale: checks its arguments and the key file, asks the login server,
# then reports itself up. Records every call in /var/lib/tailscale/calls.
state=/var/lib/tailscale; mkdir -p "$state"
echo "tailscale $*" >> "$state/calls"
case "$1" in
  status) [ -e "$state/up" ] ;;
  up)
    shift; timeout=""; login=""; key=""; tags=""; host=""
    while [ $# -gt 0 ]; do
      case "$1" in
        --timeout) timeout=$2; shift ;; --login-server) login=$2; shift ;; --authkey) key=$2; shift ;;
        --advertise-tags) tags=$2; shift ;; --hostname) host=$2; shift ;;
        *) echo "tailscale stub: unknown argument $1" >&2; exit 2 ;;
      esac; shift
    done
    [ -n "$timeout" ] && [ -n "$login" ] && [ -n "$tags" ] && [ -n "$host" ] || { echo "missing argument" >&2; exit 2; }
    case "$key" in file:*) ;; *) echo "key not from a file" >&2; exit 2 ;; esac
    [ -s "${key#file:}" ] || { echo "key file empty or missing" >&2; exit 2; }
    sha256sum < "${key#file:}" | cut -d' ' -f1 > "$state/key.sha256"
    curl -fsS --max-time "${timeout%s}" "$login/health" >/dev/null || { echo "login server did not answer" >&2; exit 1; }
    touch "$state/up" ;;
  *) exit 0 ;;
esac
"""

TAILSCALED_STUB = """#!/bin/sh
# Rehearsal stub of tailscaled: the interface the real one creates, then idle.
ip link show tailscale0 >/dev/null 2>&1 || ip link add tailscale0 type dummy
ip link set tailscale0 up
exec sleep infinity
"""

TAILSCALED_UNIT = """[Unit]
Description=Tailscale node agent (rehearsal stub)
[Service]
ExecStart=/usr/sbin/tailscaled
[Install]
WantedBy=multi-user.target
"""


def make_ca(directory: Path, names: dict[str, list[str]]) -> dict[str, tuple[Path, Path]]:
    """A CA and one server certificate per entry (name -> SANs). Returns name -> (cert, key)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = directory / "ca.key", directory / "ca.pem"
    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
        "/CN=backup-mx rehearsal stub CA", "-keyout", str(ca_key), "-out", str(ca_cert))
    out = {}
    for name, sans in names.items():
        key, csr, cert = directory / f"{name}.key", directory / f"{name}.csr", directory / f"{name}.pem"
        run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={sans[0]}", "-keyout", str(key),
            "-out", str(csr))
        ext = directory / f"{name}.ext"
        ext.write_text("subjectAltName=" + ",".join(("IP:" if s[0].isdigit() else "DNS:") + s for s in sans) + "\n")
        run("openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key),
            "-CAcreateserial", "-days", "2", "-extfile", str(ext), "-out", str(cert))
        out[name] = (cert, key)
    return out


def tailscale_repo(directory: Path) -> Path:
    """A signed apt repository laid out like pkgs.tailscale.com/stable/ubuntu (suite noble)."""
    pkg = directory / "build" / "tailscale"
    for sub in ("DEBIAN", "usr/bin", "usr/sbin", "lib/systemd/system"):
        (pkg / sub).mkdir(parents=True, exist_ok=True)
    arch = run("dpkg", "--print-architecture").stdout.strip()
    (pkg / "DEBIAN/control").write_text(
        f"Package: tailscale\nVersion: 1.0.0-rehearsal\nArchitecture: {arch}\nMaintainer: rehearsal <r@example.invalid>\n"
        "Depends: curl, iproute2\nDescription: rehearsal stub of tailscale\n")
    for path, text, mode in (("usr/bin/tailscale", TAILSCALE_STUB, 0o755), ("usr/sbin/tailscaled", TAILSCALED_STUB, 0o755),
                             ("lib/systemd/system/tailscaled.service", TAILSCALED_UNIT, 0o644)):
        (pkg / path).write_text(text)
        (pkg / path).chmod(mode)
    web = directory / "web"
    repo = web / "stable" / "ubuntu"
    pool = repo / "pool"
    pool.mkdir(parents=True, exist_ok=True)
    run("dpkg-deb", "--root-owner-group", "--build", str(pkg), str(pool / f"tailscale_1.0.0_{arch}.deb"))
    binary = repo / "dists" / "noble" / "main" / f"binary-{arch}"
    binary.mkdir(parents=True, exist_ok=True)
    packages = run("apt-ftparchive", "packages", "pool", cwd=repo).stdout
    (binary / "Packages").write_text(packages)
    release = run("apt-ftparchive", "-o", "APT::FTPArchive::Release::Suite=noble",
                  "-o", "APT::FTPArchive::Release::Codename=noble",
                  "-o", f"APT::FTPArchive::Release::Architectures={arch}",
                  "-o", "APT::FTPArchive::Release::Components=main", "release", "dists/noble", cwd=repo).stdout
    (repo / "dists/noble/Release").write_text(release)
    home = directory / "gnupg"
    home.mkdir(mode=0o700, exist_ok=True)
    env = {**os.environ, "GNUPGHOME": str(home)}
    run("gpg", "--batch", "--passphrase", "", "--quick-gen-key", "rehearsal-repo@example.invalid", "rsa2048",
        "sign", "2d", env=env)
    run("gpg", "--batch", "--yes", "--clearsign", "-o", str(repo / "dists/noble/InRelease"),
        str(repo / "dists/noble/Release"), env=env)
    with (repo / "noble.noarmor.gpg").open("wb") as out:
        subprocess.run(["gpg", "--batch", "--export", "rehearsal-repo@example.invalid"], env=env, check=True,
                       stdout=out)
    (web / "health").write_text("ok\n")
    return web


def pebble_config(directory: Path, cert: Path, key: Path, listen: str) -> Path:
    cfg = directory / "pebble.json"
    cfg.write_text(json.dumps({"pebble": {
        "listenAddress": f"{listen}:14000", "managementListenAddress": f"{listen}:15000",
        "certificate": str(cert), "privateKey": str(key), "httpPort": 80, "tlsPort": 443,
        "ocspResponderURL": "", "externalAccountBindingRequired": False}}))
    return cfg


def require_tools() -> None:
    missing = [t for t in ("mmdebstrap", "systemd-nspawn", "dnsmasq", "pebble", "apt-ftparchive", "gpg", "nsenter")
               if shutil.which(t) is None]
    if missing:
        raise RuntimeError(f"the rehearsal needs {', '.join(missing)} (make system-deps installs them)")
