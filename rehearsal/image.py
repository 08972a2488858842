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
from urllib.parse import urlparse

CACHE = Path(os.environ.get("BACKUP_MX_REHEARSAL_CACHE", "/var/cache/backup-mx-rehearsal"))
SUITE = "bookworm"
# The guest's package sources, whatever the host runs (a CI runner is Ubuntu): Debian's
# mirrors, overridable; of the host's apt configuration only its proxy settings are carried.
MIRROR = os.environ.get("BACKUP_MX_REHEARSAL_MIRROR", "http://deb.debian.org/debian")
SECURITY_MIRROR = os.environ.get("BACKUP_MX_REHEARSAL_SECURITY_MIRROR", "http://deb.debian.org/debian-security")
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
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
{apt}: > "$root/etc/machine-id"
rm -f "$root"/etc/ssh/ssh_host_* "$root/var/lib/dbus/machine-id"
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/lib/cloud/*
"""


def mirror_hosts() -> list[str]:
    """The hosts the guest may reach for packages (the rehearsal's network allows no other)."""
    return sorted({urlparse(url).hostname or "" for url in (MIRROR, SECURITY_MIRROR)} - {""})


def guest_sources(mirror: str = MIRROR, security: str = SECURITY_MIRROR) -> str:
    """The guest's /etc/apt/sources.list.d/debian.sources (deb822), as Debian's images ship it."""
    return (f"Types: deb\nURIs: {mirror}\nSuites: {SUITE} {SUITE}-updates\nComponents: main\nSigned-By: {KEYRING}\n\n"
            f"Types: deb\nURIs: {security}\nSuites: {SUITE}-security\nComponents: main\nSigned-By: {KEYRING}\n")


# Part of the customize hook: the guest's sources from the mirrors above, never the host's;
# the host's apt proxy settings (HOST_APT, default /etc/apt) carried over, nothing else.
APT_SETUP = """rm -f "$root/etc/apt/sources.list" "$root"/etc/apt/sources.list.d/*
mkdir -p "$root/etc/apt/sources.list.d" "$root/etc/apt/apt.conf.d"
cat > "$root/etc/apt/sources.list.d/debian.sources" <<'SOURCES'
{sources}SOURCES
for f in "${HOST_APT:-/etc/apt}"/apt.conf.d/*; do
  [ -f "$f" ] && grep -qiE '^[[:space:]]*Acquire::[a-z]+::Proxy' "$f" && cp "$f" "$root/etc/apt/apt.conf.d/"
done
true
"""


def apt_setup() -> str:
    return APT_SETUP.replace("{sources}", guest_sources())


def proxy_settings(host_apt: Path = Path("/etc/apt")) -> str:
    """The host's apt proxy files, as the hook copies them (part of the recipe's digest)."""
    found = []
    for f in sorted((host_apt / "apt.conf.d").glob("*")):
        text = f.read_text(errors="replace") if f.is_file() else ""
        if any(line.strip().lower().startswith("acquire::") and "::proxy" in line.lower() for line in text.splitlines()):
            found.append(f.name + "\n" + text)
    return "".join(found)


def customize_script() -> str:
    return CUSTOMIZE.replace("{rules}", OCI_RULES_V4).replace("{cloud_cfg}", CLOUD_CFG).replace("{apt}", apt_setup())


def recipe() -> str:
    return "\n".join([SUITE, " ".join(PACKAGES), customize_script(), proxy_settings()])


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
        hook.write_text(customize_script())
        hook.chmod(0o755)
        partial = tarball.with_name(tarball.stem + ".partial.tar")  # mmdebstrap picks the format by suffix
        subprocess.run(["mmdebstrap", "--variant=apt", "--include=" + ",".join(PACKAGES),
                        f"--keyring={KEYRING}", f"--customize-hook={hook}", SUITE, str(partial),
                        f"deb {MIRROR} {SUITE} main", f"deb {MIRROR} {SUITE}-updates main",
                        f"deb {SECURITY_MIRROR} {SUITE}-security main"],
                       check=True, capture_output=True, text=True)
        partial.rename(tarball)
    tarball.with_suffix(".json").write_text(json.dumps(
        {"build_s": round(time.monotonic() - started, 1), "size_mb": round(tarball.stat().st_size / 2**20)}) + "\n")
    for old in CACHE.glob(f"base-{SUITE}-*"):
        if old.stem != tarball.stem and not old.name.endswith(".partial.tar"):
            old.unlink()
    return tarball
