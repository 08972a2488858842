"""Rendered Prometheus artifacts: promtool (Debian's prometheus package) checks and unit-tests them."""
import shutil
import subprocess

import yaml

from offline import program
from tests.helpers import DATA


def rendered(example_run, tmp_path):
    files = program.public_outputs(example_run.outputs)["monitoring"]
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    return files


def test_promtool_checks_the_rules(example_run, tmp_path):
    rendered(example_run, tmp_path)
    out = subprocess.run(["promtool", "check", "rules", str(tmp_path / "backup-mx-rules.yml")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 6 rules found" in out.stdout


def test_promtool_unit_tests_each_alert_fires_and_stays_quiet(example_run, tmp_path):
    rendered(example_run, tmp_path)
    shutil.copy(DATA / "backup-mx-rules.test.yml", tmp_path)
    out = subprocess.run(["promtool", "test", "rules", str(tmp_path / "backup-mx-rules.test.yml")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_scrape_jobs_target_the_reserved_ip(example_run, tmp_path):
    files = rendered(example_run, tmp_path)
    ip = program.public_outputs(example_run.outputs)["reservedIp"]
    jobs = {j["job_name"]: j for j in yaml.safe_load(files["prometheus-scrape.yml"])["scrape_configs"]}
    assert jobs["backup-mx-node"]["static_configs"][0]["targets"] == [f"{ip}:9100"]
    assert jobs["backup-mx-postfix"]["static_configs"][0]["targets"] == [f"{ip}:9154"]
    assert jobs["backup-mx-smtp"]["static_configs"][0]["targets"] == [f"{ip}:25"]
    modules = yaml.safe_load(files["blackbox.yml"])["modules"]
    assert modules["backup_mx_smtp_starttls"]["tcp"]["query_response"][0] == {"expect": "^220 mx2.viktorbarzin.me "}
    for rule in yaml.safe_load(files["backup-mx-rules.yml"])["groups"][0]["rules"]:
        assert "delayed via mx2.viktorbarzin.me" in rule["annotations"]["description"]
