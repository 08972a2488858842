"""accountMode free: the idle-reclamation alert (promtool, seven days of node_exporter CPU) and
the rendered keep-alive on the real scheduler. Its cost to the relay is a bench figure
(`make bench ARGS=--keepalive`), never asserted here."""
import base64
import json
import os
import subprocess
import time

import pytest
import yaml

from components import facts
from lab import files_from_run
from lab.instance import stop_group
from offline import program
from tests.helpers import ROOT, run_stack

FREE = ROOT / "examples" / "Pulumi.free.yaml"
WEEK_MIN = 7 * 24 * 60


@pytest.fixture(scope="module")
def free_run():
    return run_stack(FREE)


def idle_counter(busy_minutes) -> str:
    """node_cpu_seconds_total{mode="idle"} of one vCPU, sampled every minute for a week and
    two hours: 60 idle seconds a minute, none in the minutes `busy_minutes(m)` marks."""
    total, values = 0, []
    for minute in range(WEEK_MIN + 240):
        values.append(str(total))
        total += 0 if busy_minutes(minute) else 60
    return " ".join(values)


def promtool_case(name, busy_minutes, fires, annotations):
    alerts = [{"exp_labels": {"severity": "warning"}, "exp_annotations": annotations}] if fires else []
    return {
        "name": name, "interval": "1m",
        "input_series": [
            {"series": 'node_cpu_seconds_total{job="backup-mx-node", cpu="0", mode="idle"}',
             "values": idle_counter(busy_minutes)},
            {"series": 'node_cpu_seconds_total{job="backup-mx-node", cpu="1", mode="idle"}',
             "values": idle_counter(lambda m: False)},
        ],
        "alert_rule_test": [{"eval_time": f"{WEEK_MIN + 180}m", "alertname": "BackupMxIdleReclamationRisk",
                             "exp_alerts": alerts}],
    }


def test_reclamation_alert_fires_for_an_idle_week_and_not_with_the_keepalive(free_run, tmp_path):
    files = program.public_outputs(free_run.outputs)["monitoring"]
    (tmp_path / "backup-mx-rules.yml").write_text(files["backup-mx-rules.yml"])
    rules = [r for g in yaml.safe_load(files["backup-mx-rules.yml"])["groups"] for r in g["rules"]]
    annotations = next(r for r in rules if r.get("alert") == "BackupMxIdleReclamationRisk")["annotations"]
    period, busy = facts.KEEPALIVE_PERIOD_S // 60, facts.KEEPALIVE_BUSY_S // 60
    doc = {"rule_files": ["backup-mx-rules.yml"], "evaluation_interval": "1m", "tests": [
        promtool_case("an idle relay for a week", lambda m: False, True, annotations),
        promtool_case("the keep-alive's duty cycle", lambda m: m % period < busy, False, annotations),
        promtool_case("a keep-alive that ran once an hour", lambda m: m % 60 == 0, True, annotations),
    ]}
    (tmp_path / "idle.test.yml").write_text(json.dumps(doc))
    out = subprocess.run(["promtool", "test", "rules", str(tmp_path / "idle.test.yml")], capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]


def test_the_payg_example_has_no_keepalive_and_no_reclamation_alert(example_run):
    files = files_from_run(example_run)
    assert "backup-mx-keepalive" not in files and "ACCOUNT_MODE=payg" in files["backup-mx.env"]
    rules = program.public_outputs(example_run.outputs)["monitoring"]["backup-mx-rules.yml"]
    assert "BackupMxIdleReclamationRisk" not in rules


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_the_rendered_keepalive_burns_cpu_at_idle_priority_then_rests(free_run, tmp_path):
    files = files_from_run(free_run)
    inst = next(r for r in free_run.resources if r.type.endswith("instance:Instance"))
    doc = yaml.safe_load(base64.b64decode(inst.props["metadata"]["user_data"]["value"]).decode())
    unit = next(f["content"] for f in doc["write_files"]
                if f["path"] == "/etc/systemd/system/backup-mx-keepalive.service")
    assert "CPUSchedulingPolicy=idle" in unit and "Nice=19" in unit
    script = tmp_path / "backup-mx-keepalive"
    script.write_text(files["backup-mx-keepalive"])
    env_file = tmp_path / "backup-mx.env"
    # Only the duty cycle is scaled (2 s busy in 6) so one cycle fits a test; listed override.
    env_file.write_text(files["backup-mx.env"] + "KEEPALIVE_BUSY_S=2\nKEEPALIVE_PERIOD_S=6\n")
    # systemd applies CPUSchedulingPolicy=idle; here chrt does the same for the rendered script.
    proc = subprocess.Popen(["chrt", "--idle", "0", "bash", str(script)],
                            env={**os.environ, "BACKUP_MX_ENV": str(env_file)}, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while open(f"/proc/{proc.pid}/comm").read().strip() != "bash":  # chrt has set the policy and exec'd
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        assert "SCHED_IDLE" in subprocess.run(["chrt", "-p", str(proc.pid)], capture_output=True, text=True).stdout
        # SCHED_IDLE gets only idle CPU time, so on a busy machine this may take several cycles.
        deadline = time.monotonic() + 300
        while cpu_seconds(proc.pid) < 0.3:  # it works: it takes CPU time in its busy phases
            assert proc.poll() is None and time.monotonic() < deadline, "the keep-alive never used the CPU"
            time.sleep(0.1)
        # ... and it rests: a sleep child appears, and the busy loop's CPU stops growing meanwhile.
        while not subprocess.run(["pgrep", "-P", str(proc.pid), "-x", "sleep"], capture_output=True).stdout:
            assert proc.poll() is None and time.monotonic() < deadline, "the keep-alive never rested"
            time.sleep(0.05)
        resting = cpu_seconds(proc.pid)
        sleeper = int(subprocess.run(["pgrep", "-P", str(proc.pid), "-x", "sleep"], capture_output=True,
                                     text=True).stdout.split()[0])
        while True:
            used = cpu_seconds(proc.pid) - resting
            if not os.path.exists(f"/proc/{sleeper}"):
                break  # the rest is over; bash may be busy again
            # The sleep child still existed after the reading, so bash was waiting on it throughout.
            assert used < 0.05, "the keep-alive kept burning while it should rest"
            time.sleep(0.1)
    finally:
        stop_group(proc, 10)
