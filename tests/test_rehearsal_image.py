"""The rehearsal image's recipe is independent of the host's distribution: the guest's apt
sources are Debian's mirrors (overridable), and of the host's apt configuration only its proxy
settings are carried over. Run against an Ubuntu-style host /etc/apt, as a CI runner has."""
from __future__ import annotations

import subprocess

from rehearsal import image

UBUNTU_SOURCES = """Types: deb
URIs: http://azure.archive.ubuntu.com/ubuntu/
Suites: noble noble-updates noble-backports
Components: main restricted universe multiverse
Signed-By: /usr/share/keyrings/ubuntu-archive-keyring.gpg
"""


def ubuntu_host(tmp_path):
    apt = tmp_path / "host-apt"
    (apt / "sources.list.d").mkdir(parents=True)
    (apt / "apt.conf.d").mkdir()
    (apt / "sources.list.d" / "ubuntu.sources").write_text(UBUNTU_SOURCES)
    (apt / "sources.list").write_text("deb http://archive.ubuntu.com/ubuntu noble main\n")
    (apt / "apt.conf.d" / "90proxy").write_text('Acquire::http::Proxy "http://proxy.internal:3128";\n')
    (apt / "apt.conf.d" / "99periodic").write_text('APT::Periodic::Update-Package-Lists "1";\n')
    return apt


def test_the_guest_gets_debian_sources_and_only_the_hosts_proxy(tmp_path):
    apt = ubuntu_host(tmp_path)
    root = tmp_path / "root"
    (root / "etc" / "apt" / "sources.list.d").mkdir(parents=True)
    (root / "etc" / "apt" / "sources.list.d" / "leftover.sources").write_text(UBUNTU_SOURCES)
    script = 'root="$1"\n' + image.apt_setup()
    subprocess.run(["sh", "-ec", script, "sh", str(root)], check=True, env={"HOST_APT": str(apt), "PATH": "/usr/bin:/bin"})
    sources = sorted(p.name for p in (root / "etc" / "apt" / "sources.list.d").iterdir())
    assert sources == ["debian.sources"]
    text = (root / "etc" / "apt" / "sources.list.d" / "debian.sources").read_text()
    assert text == image.guest_sources()
    assert "URIs: http://deb.debian.org/debian\n" in text and "Suites: bookworm bookworm-updates" in text
    assert "ubuntu" not in text
    assert not (root / "etc" / "apt" / "sources.list").exists()
    assert sorted(p.name for p in (root / "etc" / "apt" / "apt.conf.d").iterdir()) == ["90proxy"]


def test_the_recipe_reads_no_host_sources(tmp_path):
    """The image's cache key changes with the proxy settings it carries, never with the host's
    sources: no line of this machine's sources that the guest's lack is in the recipe."""
    from pathlib import Path
    apt = ubuntu_host(tmp_path)
    assert "proxy.internal" in image.proxy_settings(apt)
    assert "periodic" not in image.proxy_settings(apt).lower()
    host = [p for p in [Path("/etc/apt/sources.list"), *Path("/etc/apt/sources.list.d").glob("*")] if p.is_file()]
    lines = {ln.strip() for p in host for ln in p.read_text().splitlines() if ln.strip()}
    recipe, guest = image.recipe(), image.guest_sources()
    assert not [ln for ln in lines - set(guest.splitlines()) if ln in recipe]


def test_the_mirror_is_overridable():
    sources = image.guest_sources("http://mirror.example/debian", "http://mirror.example/debian-security")
    assert "URIs: http://mirror.example/debian\n" in sources and "URIs: http://mirror.example/debian-security\n" in sources
    assert image.mirror_hosts() == ["deb.debian.org"]
