"""The rehearsal's base image: Debian bookworm shaped like Oracle's Ubuntu 24.04 image,
built once with mmdebstrap and cached outside the repository (keyed by this recipe)."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

CACHE = Path(os.environ.get("BACKUP_MX_REHEARSAL_CACHE", "/var/cache/backup-mx-rehearsal"))
SUITE = "bookworm"
PACKAGES = ["systemd", "systemd-sysv", "systemd-resolved", "udev", "dbus", "cloud-init", "netplan.io", "iptables",
            "iptables-persistent", "openssh-server", "curl", "ca-certificates", "unattended-upgrades", "locales",
            "sudo", "openssl", "python3", "iproute2", "procps",
            "whiptail"]  # debconf's dialog frontend, as on Ubuntu: without it a missing preseed cannot hang

# Oracle's Ubuntu images end INPUT with a REJECT regardless of the VCN security list.
OCI_RULES_V4 = """*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -m state --state RELATED,ESTABLISHED -j ACCEPT
-A INPUT -p icmp -j ACCEPT
-A INPUT -i lo -j ACCEPT
-A INPUT -p udp --sport 123 -j ACCEPT
-A INPUT -p tcp -m state --state NEW -m tcp --dport 22 -j ACCEPT
-A INPUT -j REJECT --reject-with icmp-host-prohibited
-A FORWARD -j REJECT --reject-with icmp-host-prohibited
COMMIT
"""

CLOUD_CFG = """# The rehearsal: NoCloud seed, and Oracle's Ubuntu default user.
datasource_list: [NoCloud, None]
system_info:
  default_user:
    name: ubuntu
    lock_passwd: true
    gecos: Ubuntu
    groups: [adm, sudo]
    sudo: ["ALL=(ALL) NOPASSWD:ALL"]
    shell: /bin/bash
"""

CUSTOMIZE = """#!/bin/sh
set -e
root="$1"
echo 'en_US.UTF-8 UTF-8' > "$root/etc/locale.gen"
chroot "$root" locale-gen >/dev/null
echo 'LANG=en_US.UTF-8' > "$root/etc/default/locale"
mkdir -p "$root/etc/iptables"
cat > "$root/etc/iptables/rules.v4" <<'RULES'
{rules}RULES
cat > "$root/etc/cloud/cloud.cfg.d/90-rehearsal.cfg" <<'CFG'
{cloud_cfg}CFG
cp /etc/apt/sources.list.d/*.sources "$root/etc/apt/sources.list.d/" 2>/dev/null || true
[ -s /etc/apt/sources.list ] && cp /etc/apt/sources.list "$root/etc/apt/sources.list" || rm -f "$root/etc/apt/sources.list"
for f in /etc/apt/apt.conf.d/*proxy* /etc/apt/apt.conf.d/*Proxy*; do [ -e "$f" ] && cp "$f" "$root/etc/apt/apt.conf.d/"; done
: > "$root/etc/machine-id"
rm -f "$root"/etc/ssh/ssh_host_* "$root/var/lib/dbus/machine-id"
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/lib/cloud/*
"""


def recipe() -> str:
    sources = "".join(p.read_text() for p in sorted(Path("/etc/apt").glob("sources.list*")) if p.is_file())
    sources += "".join(p.read_text() for p in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")))
    return "\n".join([SUITE, " ".join(PACKAGES), CUSTOMIZE, OCI_RULES_V4, CLOUD_CFG, sources])


def base_image() -> Path:
    """The cached tarball, built when the recipe changed. Returns its path."""
    digest = hashlib.sha256(recipe().encode()).hexdigest()[:16]
    tarball = CACHE / f"base-{SUITE}-{digest}.tar"
    if tarball.exists():
        return tarball
    CACHE.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="backup-mx-image-") as tmp:
        hook = Path(tmp) / "customize.sh"
        hook.write_text(CUSTOMIZE.replace("{rules}", OCI_RULES_V4).replace("{cloud_cfg}", CLOUD_CFG))
        hook.chmod(0o755)
        partial = tarball.with_name(tarball.stem + ".partial.tar")  # mmdebstrap picks the format by suffix
        subprocess.run(["mmdebstrap", "--variant=apt", "--include=" + ",".join(PACKAGES),
                        f"--customize-hook={hook}", SUITE, str(partial)],
                       check=True, capture_output=True, text=True)
        partial.rename(tarball)
    tarball.with_suffix(".json").write_text(json.dumps(
        {"build_s": round(time.monotonic() - started, 1), "size_mb": round(tarball.stat().st_size / 2**20)}) + "\n")
    for old in CACHE.glob(f"base-{SUITE}-*"):
        if old.stem != tarball.stem and not old.name.endswith(".partial.tar"):
            old.unlink()
    return tarball
