"""First-boot rehearsal (make rehearse): the rendered user-data booted by real cloud-init
(Debian's 22.4) under systemd-nspawn, behind a stub network (README, First-boot rehearsal).
Timings go to build/rehearsal.json; nothing here asserts a time."""
import hashlib
import json
import re
import subprocess
import time

import pytest
import yaml

from conftest import ROOT

rehearsal = pytest.importorskip("rehearsal")  # the package is in the repository; this never skips
from rehearsal import GUEST, PREAUTH_KEY, Faults, rendered_user_data  # noqa: E402

TIMINGS = ROOT / "build" / "rehearsal.json"
BOOT_DEADLINE = 600  # s: a boot that has not converged by then is a failure, not a wait


def record(name, **figures):
    TIMINGS.parent.mkdir(exist_ok=True)
    data = json.loads(TIMINGS.read_text()) if TIMINGS.exists() else {}
    data[name] = {**data.get(name, {}), **figures}
    TIMINGS.write_text(json.dumps(data, indent=2) + "\n")


def converge(r, name):
    """Port 25 answering and cloud-init finished; the figures are recorded."""
    port25 = r.wait("port 25 answering", lambda: r.smtp_banner().startswith("220"), BOOT_DEADLINE, step=1)
    done = r.wait("cloud-init done", r.boot_finished, BOOT_DEADLINE, step=1)
    record(name, port25_s=round(port25, 1), cloud_init_done_s=round(done, 1))
    return port25, done


@pytest.fixture(scope="module")
def rendered():
    return rendered_user_data()


@pytest.fixture(scope="module")
def normal(rendered):
    user_data, config = rendered
    started = time.monotonic()
    with rehearsal.rehearsal(user_data, config) as r:
        converge(r, "normal")
        yield r
        record("normal", wall_s=round(time.monotonic() - started, 1))


def guest(r, command, timeout=120):
    out = r.sh(command, timeout=timeout)
    return out.stdout


def test_cloud_init_finishes_without_errors_or_deprecations(normal):
    status = guest(normal, "cloud-init status --long")
    assert "status: done" in status, status
    log = guest(normal, "cat /var/log/cloud-init.log")
    assert not re.search(r"\b(ERROR|CRITICAL|Traceback|DEPRECAT)", log), \
        [ln for ln in log.splitlines() if re.search(r"ERROR|CRITICAL|Traceback|DEPRECAT", ln)][:5]
    assert "== backup-mx: done" in guest(normal, "cat /var/log/backup-mx-bootstrap.log")


def test_every_written_file_has_its_mode_and_owner(normal, rendered):
    doc = yaml.safe_load(rendered[0])
    for f in doc["write_files"]:
        if f["path"].endswith("headscale-preauth-key"):
            continue  # consumed: see the key test
        stat = guest(normal, f"stat -c '%a %U:%G' {f['path']}").strip()
        assert stat == f"{int(f['permissions'], 8):o} root:root", (f["path"], stat)


def test_postfix_runs_the_rendered_main_cf(normal):
    running = guest(normal, "postconf -n")
    rendered = guest(normal, "postconf -n -c /etc/backup-mx/postfix")
    assert running and running == rendered


def test_postscreen_answers_from_outside_with_the_relays_banner(normal):
    banner = normal.smtp_banner()
    assert banner.startswith("220-mx2.viktorbarzin.me ESMTP"), banner  # 220- : postscreen's teaser


def test_starttls_presents_the_acme_certificate_after_the_certificate_timer(normal):
    # The timer's first run is 2 minutes after boot; start the same service now.
    guest(normal, "systemctl start backup-mx-certificate.service", timeout=300)
    live = guest(normal, "cat /etc/letsencrypt/live/mx2.viktorbarzin.me/fullchain.pem")
    assert "BEGIN CERTIFICATE" in live
    assert guest(normal, "cat /etc/postfix/tls/fullchain.pem") == live  # the deploy hook copied it
    s = subprocess.run(["openssl", "s_client", "-starttls", "smtp", "-connect", f"{GUEST}:25",
                        "-servername", "mx2.viktorbarzin.me"], input="QUIT\n", capture_output=True, text=True,
                       timeout=60)
    issuer = re.search(r"issuer=(.*)", s.stdout)
    assert issuer and "Pebble" in issuer.group(1), s.stdout[-1500:]
    assert "reload" in guest(normal, "journalctl -u postfix@- -u postfix --no-pager; cat /var/log/mail.log 2>/dev/null")
    assert guest(normal, "systemctl is-enabled backup-mx-certificate.timer").strip() == "disabled"


def test_exporters_listen(normal):
    normal.wait("exporters listening", lambda: all(f":{p} " in guest(normal, "ss -ltnH") for p in (9100, 9154)),
                120, step=2)


def test_firewall_order_is_persisted_and_ssh_moved_to_the_tailnet(normal):
    rules = [ln for ln in guest(normal, "iptables -S INPUT").splitlines() if ln.startswith("-A")]
    accepts = [ln for ln in rules if "--dport" in ln]
    assert rules[-1].startswith("-A INPUT -j REJECT")
    assert "-A INPUT -p tcp -m tcp --dport 25 -j ACCEPT" in accepts
    assert "-A INPUT -i tailscale0 -p tcp -m tcp --dport 22 -j ACCEPT" in accepts
    assert not [ln for ln in accepts if "--dport 22" in ln and "tailscale0" not in ln], accepts
    persisted = guest(normal, "cat /etc/iptables/rules.v4")
    assert all(ln in persisted for ln in rules)


def test_services_and_timers(normal):
    assert guest(normal, "systemctl is-active backup-mx-drain.service postfix").split() == ["active", "active"]
    assert guest(normal, "systemctl is-enabled backup-mx-drain.service").strip() == "enabled"
    # Every extra succeeded, so its retry timer switched itself off.
    assert guest(normal, "ls /var/lib/backup-mx").split() == [
        "certificate-timer.done", "exporters-and-upgrades.done", "tailnet.done", "tailscale-package.done"]
    assert guest(normal, "systemctl is-enabled backup-mx-extras.timer").strip() == "disabled"


def test_the_preauth_key_was_used_and_shredded(normal):
    assert guest(normal, "test -e /etc/backup-mx/headscale-preauth-key && echo present").strip() == ""
    assert guest(normal, "ls -A /run/backup-mx").strip() == ""
    assert guest(normal, "cat /var/lib/tailscale/key.sha256").strip() == hashlib.sha256(PREAUTH_KEY.encode()).hexdigest()
    assert PREAUTH_KEY not in guest(normal, "grep -rl -- '" + PREAUTH_KEY + "' /etc /var/lib /run /home 2>/dev/null")


def test_no_package_manager_is_left_running_and_installs_are_lean(normal):
    assert guest(normal, "ps -eo comm= | grep -E '^(apt|apt-get|dpkg|debconf|whiptail)' || true").strip() == ""
    installed = guest(normal, "dpkg-query -W -f '${Package}\\n'").split()
    for unwanted in ("smartmontools", "nvme-cli", "ipmitool"):
        assert unwanted not in installed
    record("normal", installed_packages=len(installed))


def test_after_a_reboot_everything_is_back_and_nothing_reruns(normal):
    normal.poweroff()
    normal.boot()
    port25 = normal.wait("port 25 after reboot", lambda: normal.smtp_banner().startswith("220"), BOOT_DEADLINE)
    record("reboot", port25_s=round(port25, 1))
    assert guest(normal, "grep -c '== backup-mx: done' /var/log/backup-mx-bootstrap.log").strip() == "1"
    assert "-A INPUT -p tcp -m tcp --dport 25 -j ACCEPT" in guest(normal, "iptables -S INPUT")
    normal.wait("services back", lambda: guest(
        normal, "systemctl is-active postfix backup-mx-drain.service prometheus-node-exporter").split()
        == ["active"] * 3, 120, step=2)


# --- fault cases: each must converge to a running relay --------------------------------

FAULTS = {
    "TCP blocked for 90 s, DNS answering": Faults(tcp_blocked_s=90),
    "package mirror unreachable for 150 s": Faults(mirror_blocked_s=150),
    "tailscale repository down all boot": Faults(tailscale_repo_down=True),
    "headscale never answers": Faults(headscale_silent=True),
}


@pytest.mark.parametrize("name", list(FAULTS))
def test_fault_still_brings_mail_up(rendered, name):
    user_data, config = rendered
    with rehearsal.rehearsal(user_data, config, FAULTS[name]) as r:
        converge(r, name)
        assert "== backup-mx: done" in guest(r, "cat /var/log/backup-mx-bootstrap.log")
        assert guest(r, "systemctl is-active postfix").strip() == "active"
        assert guest(r, "postconf -n") == guest(r, "postconf -n -c /etc/backup-mx/postfix")
        log = guest(r, "cat /var/log/backup-mx-bootstrap.log")
        done = guest(r, "ls /var/lib/backup-mx").split()
        if name.startswith("TCP"):
            assert "no TCP egress" in log
        if name.startswith("package mirror"):
            assert re.search(r"attempt \d+/\d+ failed: apt_install postfix", log)
        if name.startswith("tailscale"):
            assert "tailscale-package.done" not in done and "exporters-and-upgrades.done" in done
            assert guest(r, "systemctl is-enabled backup-mx-extras.timer").strip() == "enabled"
        if name.startswith("headscale"):
            assert "tailnet.done" not in done and "tailscale up" in guest(r, "cat /var/lib/tailscale/calls")
            assert guest(r, "test -e /etc/backup-mx/headscale-preauth-key && echo present").strip() == ""
            assert guest(r, "ls -A /run/backup-mx").strip() == ""
            # SSH stays where the image had it: the tailnet never came up.
            assert "--dport 22 -j ACCEPT" in guest(r, "iptables -S INPUT")


def test_a_user_data_that_hangs_is_reported_within_the_deadline(rendered):
    """The production bug: without the debconf preseed and DEBIAN_FRONTEND, postfix's install
    waits on a whiptail dialog forever. The rehearsal must say so, not wait with it."""
    user_data, config = rendered
    broken = yaml.safe_load(user_data)
    for f in broken["write_files"]:
        if f["path"].endswith("common.sh"):
            f["content"] = f["content"].replace("export DEBIAN_FRONTEND=noninteractive", "")
        if f["path"].endswith("debconf.txt"):
            f["content"] = ""
    text = "#cloud-config\n" + yaml.safe_dump(broken, sort_keys=False)
    with rehearsal.rehearsal(text, config) as r:
        with pytest.raises(TimeoutError, match="port 25"):
            r.wait("port 25 answering", lambda: r.smtp_banner().startswith("220"), 240, step=2)
        waiting = guest(r, "ps -eo comm= | grep -E '^(whiptail|dialog|debconf|frontend)' || true")
        assert waiting.strip(), "no debconf dialog is waiting: the hang has another cause"
