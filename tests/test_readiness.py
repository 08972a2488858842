"""Outage readiness: the drain canary against the emulated primary (real Postfix, the owner's
restrictions), the queue-age metric from a real queue, and both alerts under promtool."""
import json
import os
import re
import subprocess
import time

import pytest
import yaml

from lab.client import deliver, message
from offline import program
from tests.primary_emulation import RELAY_SOURCE, apply_verbatim, emulated_primary, snippets


def canary(files, tmp_path, drain_port, source=RELAY_SOURCE):
    """The rendered canary as the timer runs it; overrides: the drain port, the textfile
    directory and the source address (the relay's address as the primary sees it)."""
    script, env_file = tmp_path / "backup-mx-drain-canary", tmp_path / "backup-mx.env"
    script.write_text(files["backup-mx-drain-canary"])
    env_file.write_text(files["backup-mx.env"] + f"DRAIN_HOST=127.0.0.1\nDRAIN_PORT={drain_port}\n"
                        f"TEXTFILE_DIR={tmp_path}\nCANARY_SOURCE_ADDRESS={source}\n")
    out = subprocess.run(["python3", str(script), "--check"], capture_output=True, text=True, timeout=180,
                         env={**os.environ, "BACKUP_MX_ENV": str(env_file)})
    metrics = (tmp_path / "backup_mx_drain_canary.prom").read_text()
    return out, metrics


def test_the_canary_sees_the_primary_refuse_the_drain_until_the_exemptions_are_applied(vm_files, tls_dir, tmp_path):
    with emulated_primary(vm_files, tls_dir) as (_relay_lab, primary, _final):
        out, metrics = canary(vm_files, tmp_path, primary.port)
        assert out.returncode == 1, out.stdout + out.stderr
        assert re.search(r"^rcpt 450 .*cannot find your hostname", out.stdout, re.M), out.stdout
        assert "backup_mx_drain_canary_ready 0" in metrics
        assert 'backup_mx_drain_canary_reply_code{stage="rcpt"} 450' in metrics
        # It spoke as the drain does: EHLO as the relay, a strict-SPF sender, a SIZE over 10 MB.
        log = primary.log_text()
        assert re.search(r"client=unknown\[127\.0\.9\.9\]|unknown\[127\.0\.9\.9\]", log), log[-2000:]
        assert "from=<drain-canary@example.com>" in log and "helo=<mx2.viktorbarzin.me>" in log
        assert re.search(r"^mail 250 ", out.stdout, re.M)  # SIZE=209715200 (> 10 MB) was accepted

        apply_verbatim(primary, snippets())
        out, metrics = canary(vm_files, tmp_path, primary.port)
        assert out.returncode == 0 and out.stdout.strip().endswith(" ready"), out.stdout + out.stderr
        assert "backup_mx_drain_canary_ready 1" in metrics
        assert 'backup_mx_drain_canary_reply_code{stage="rcpt"} 250' in metrics
        assert not primary.queue()  # it stopped before DATA: nothing was sent


def test_the_canary_catches_a_primary_whose_size_limit_is_below_the_relays(vm_files, tls_dir, tmp_path):
    """The relay accepts messageSizeLimit; a primary with a smaller limit would return the
    largest held messages (552) at drain time. The canary declares that SIZE and sees it now."""
    with emulated_primary(vm_files, tls_dir) as (_relay_lab, primary, _final):
        apply_verbatim(primary, snippets())
        subprocess.run(["postconf", "-c", str(primary.conf), "-e", "message_size_limit=10485760"], check=True)
        subprocess.run(["postfix", "-c", str(primary.conf), "reload"], check=True)
        deadline = time.monotonic() + 60
        while True:  # the reload reaches new smtpd processes; wait for the new limit, not a sleep
            out, metrics = canary(vm_files, tmp_path, primary.port)
            if re.search(r"^mail 552 ", out.stdout, re.M) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert out.returncode == 1 and re.search(r"^mail 552 .*size", out.stdout, re.M), out.stdout
        assert 'backup_mx_drain_canary_reply_code{stage="mail"} 552' in metrics


def test_the_canary_runs_from_its_timer_without_failing_the_unit(vm_files, tmp_path):
    """Without --check (the timer's service) a not-ready drain is a metric, not a failed unit."""
    script, env_file = tmp_path / "c", tmp_path / "e"
    script.write_text(vm_files["backup-mx-drain-canary"])
    from lab import free_port
    env_file.write_text(vm_files["backup-mx.env"] + f"DRAIN_HOST=127.0.0.1\nDRAIN_PORT={free_port()}\n"
                        f"TEXTFILE_DIR={tmp_path}\n")
    out = subprocess.run(["python3", str(script)], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "BACKUP_MX_ENV": str(env_file)})
    assert out.returncode == 0 and "NOT ready" in out.stdout
    assert 'backup_mx_drain_canary_reply_code{stage="banner"} 0' in (tmp_path / "backup_mx_drain_canary.prom").read_text()


def test_queue_age_reports_the_oldest_waiting_message(lab, vm_files, tmp_path):
    primary = lab.sink()
    primary.stop()  # nothing drains: mail waits
    relay = lab.relay(primary.port)
    started = time.time()
    for i in range(3):
        assert deliver(relay.port, "sender@example.com", ["user@viktorbarzin.me"], message(f"age-{i}")).accepted
    script, env_file = tmp_path / "backup-mx-queue-age", tmp_path / "backup-mx.env"
    script.write_text(vm_files["backup-mx-queue-age"])
    env_file.write_text(vm_files["backup-mx.env"] + f"TEXTFILE_DIR={tmp_path}\n")
    deadline = time.monotonic() + 60
    while True:  # wait until all three left incoming for the deferred/active queues
        subprocess.run(["python3", str(script)], check=True, timeout=60,
                       env={**os.environ, "BACKUP_MX_ENV": str(env_file), "POSTFIX_CONFIG_DIR": str(relay.conf)})
        metrics = (tmp_path / "backup_mx_queue.prom").read_text()
        if "backup_mx_queue_messages 3" in metrics or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    values = dict(re.findall(r"^(backup_mx_\w+) (\d+)$", metrics, re.M))
    assert values["backup_mx_queue_messages"] == "3", metrics
    assert 0 <= int(values["backup_mx_queue_oldest_message_age_seconds"]) <= time.time() - started + 1
    assert values["backup_mx_queue_lifetime_seconds"] == str(30 * 86400)


def promtool(files, tmp_path, tests):
    (tmp_path / "backup-mx-rules.yml").write_text(files["backup-mx-rules.yml"])
    (tmp_path / "t.yml").write_text(json.dumps({"rule_files": ["backup-mx-rules.yml"], "evaluation_interval": "1m",
                                                "tests": tests}))
    out = subprocess.run(["promtool", "test", "rules", str(tmp_path / "t.yml")], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.fixture
def rules(example_run):
    files = program.public_outputs(example_run.outputs)["monitoring"]
    rules = {r["alert"]: r for g in yaml.safe_load(files["backup-mx-rules.yml"])["groups"] for r in g["rules"]
             if "alert" in r}
    return files, rules


def test_drain_not_ready_fires_only_while_the_primary_is_otherwise_healthy(rules, tmp_path):
    files, by_name = rules
    annotations = by_name["BackupMxDrainNotReady"]["annotations"]
    promtool(files, tmp_path, [
        {"name": "canary refused, primary answers: fires", "interval": "1m", "input_series": [
            {"series": 'backup_mx_drain_canary_ready{job="backup-mx-node"}', "values": "0x30"},
            {"series": 'probe_success{job="backup-mx-primary"}', "values": "1x30"}],
         "alert_rule_test": [
             {"eval_time": "5m", "alertname": "BackupMxDrainNotReady", "exp_alerts": []},
             {"eval_time": "20m", "alertname": "BackupMxDrainNotReady",
              "exp_alerts": [{"exp_labels": {"severity": "warning", "job": "backup-mx-node"},
                              "exp_annotations": annotations}]}]},
        {"name": "canary refused because the primary is down: the outage alerts say so, not this",
         "interval": "1m", "input_series": [
             {"series": 'backup_mx_drain_canary_ready{job="backup-mx-node"}', "values": "0x30"},
             {"series": 'probe_success{job="backup-mx-primary"}', "values": "0x30"}],
         "alert_rule_test": [{"eval_time": "20m", "alertname": "BackupMxDrainNotReady", "exp_alerts": []}]},
        {"name": "canary ready: quiet", "interval": "1m", "input_series": [
            {"series": 'backup_mx_drain_canary_ready{job="backup-mx-node"}', "values": "1x30"},
            {"series": 'probe_success{job="backup-mx-primary"}', "values": "1x30"}],
         "alert_rule_test": [{"eval_time": "20m", "alertname": "BackupMxDrainNotReady", "exp_alerts": []}]},
    ])


def test_mail_near_expiry_fires_three_days_before_the_queue_lifetime(rules, tmp_path):
    files, by_name = rules
    annotations = by_name["BackupMxMailNearExpiry"]["annotations"]
    lifetime, day = 30 * 86400, 86400

    def case(name, age, fires):
        alerts = [{"exp_labels": {"severity": "critical", "job": "backup-mx-node"},
                   "exp_annotations": annotations}] if fires else []
        return {"name": name, "interval": "1m", "input_series": [
            {"series": 'backup_mx_queue_oldest_message_age_seconds{job="backup-mx-node"}',
             "values": f"{age}+60x60"},
            {"series": 'backup_mx_queue_lifetime_seconds{job="backup-mx-node"}', "values": f"{lifetime}x60"}],
            "alert_rule_test": [{"eval_time": "30m", "alertname": "BackupMxMailNearExpiry", "exp_alerts": alerts}]}

    promtool(files, tmp_path, [
        case("27 days and 1 hour old: fires", lifetime - 3 * day + 3600, True),
        case("26 days old: quiet", lifetime - 4 * day, False),
        case("empty queue: quiet", 0, False),
    ])
