"""First-boot rehearsal (make rehearse): the rendered user-data booted by real cloud-init
(Debian's 22.4) under systemd-nspawn, behind a stub network (docs/rehearsal.md).
Timings go to build/rehearsal.json; nothing here asserts a time."""
import hashlib
import re
import subprocess

import pytest
import yaml

import rehearsal
from rehearsal import GUEST, PREAUTH_KEY
from tests.rehearsal_helpers import BOOT_DEADLINE, converge, guest, record, rendered_postconf


@pytest.fixture(scope="module")
def normal(rendered):
    user_data, config = rendered
    with rehearsal.rehearsal(user_data, config) as r:
        converge(r, "normal")
        yield r


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
    assert running and running == rendered_postconf(normal)


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


def test_postfix_exporter_comes_back_when_it_started_before_the_mail_log(normal):
    # First boot's race, replayed: the exporter starts while /var/log/mail.log does not exist
    # yet, exits, and only the restart drop-in brings it back once Postfix has logged.
    unit = "prometheus-postfix-exporter"
    normal.wait("exporters listening", lambda: ":9154 " in guest(normal, "ss -ltnH"), 120, step=2)
    guest(normal, f"systemctl stop {unit} && mv /var/log/mail.log /var/log/mail.log.held")
    try:
        guest(normal, f"systemctl start {unit} || true")
        normal.wait("the exporter exited and systemd restarted it", lambda: int(
            guest(normal, f"systemctl show -P NRestarts {unit}").strip() or 0) >= 1, 120, step=2)
        assert "no such file" in guest(normal, f"journalctl -u {unit} --no-pager -n 50").lower()
    finally:
        guest(normal, "mv /var/log/mail.log.held /var/log/mail.log")
    normal.wait("the exporter listening again", lambda: ":9154 " in guest(normal, "ss -ltnH"), 120, step=2)
    assert guest(normal, f"systemctl is-active {unit}").strip() == "active"


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
        "certificate-timer.done", "exporters-and-upgrades.done", "readiness-timers.done", "tailnet.done",
        "tailscale-package.done"]
    assert guest(normal, "systemctl is-enabled backup-mx-extras.timer").strip() == "disabled"
    assert guest(normal, "systemctl is-enabled backup-mx-drain-canary.timer backup-mx-queue-age.timer").split() == [
        "enabled", "enabled"]


def test_the_readiness_units_run_under_systemd_and_publish_their_metrics(normal):
    """The drain canary and the queue age, started as their timers start them, on the booted
    guest's Python and Postfix. The rehearsal has no primary: the canary records a drain that is
    not ready, and its unit still succeeds (the metric carries the verdict)."""
    guest(normal, "systemctl start backup-mx-queue-age.service backup-mx-drain-canary.service")
    assert guest(normal, "systemctl show -p Result --value backup-mx-queue-age.service "
                         "backup-mx-drain-canary.service").split() == ["success", "success"]
    queue = guest(normal, "cat /var/lib/prometheus/node-exporter/backup_mx_queue.prom")
    assert "backup_mx_queue_messages 0" in queue and "backup_mx_queue_lifetime_seconds 2592000" in queue
    canary = guest(normal, "cat /var/lib/prometheus/node-exporter/backup_mx_drain_canary.prom")
    assert "backup_mx_drain_canary_ready 0" in canary, canary
    assert "NOT ready" in guest(normal, "journalctl -u backup-mx-drain-canary.service --no-pager")
    # node_exporter serves both through its textfile collector.
    metrics = guest(normal, "curl -s http://127.0.0.1:9100/metrics")
    assert "backup_mx_drain_canary_ready 0" in metrics and "backup_mx_queue_messages 0" in metrics


def test_the_preauth_key_was_used_and_shredded(normal):
    assert guest(normal, "test -e /etc/backup-mx/headscale-preauth-key && echo present").strip() == ""
    assert guest(normal, "ls -A /run/backup-mx").strip() == ""
    key_sha256 = hashlib.sha256(PREAUTH_KEY.encode()).hexdigest()
    assert guest(normal, "cat /var/lib/tailscale/key.sha256").strip() == key_sha256
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
