"""recipients list on real Postfix: the rendered sync script (cloud-init/recipients.sh) against
an HTTPS list, and the rendered relay answering from the map it installs. The first boot's map
is the catch-all; a good list replaces it atomically and Postfix reloads; a list that cannot
be fetched or is refused leaves the last good copy in force, byte for byte."""
import json
import os
import subprocess
import time

import pytest
import yaml

from lab import Lab, files_from_run
from lab.client import deliver, message
from lab.listserver import ListServer
from offline import program
from tests.helpers import lab_dir, run_stack

URL = "https://mail.viktorbarzin.me/recipients.txt"
DOMAIN = "viktorbarzin.me"
GOOD = f"# the primary's mailboxes\nalice@{DOMAIN}\nBob@{DOMAIN}\n\n"


@pytest.fixture(scope="module")
def list_files():
    return files_from_run(run_stack(overrides={"recipients": "list", "recipientListUrl": URL}))


@pytest.fixture
def world(list_files, tls_dir):
    lab = Lab(lab_dir("recipient-list"), list_files, tls_dir)
    server = ListServer(lab_dir("recipient-list-https"), GOOD)
    try:
        primary = lab.sink()
        relay = lab.relay(primary.port)
        yield relay, server
    finally:
        server.close()
        lab.down()


def rcpt_code(relay, address: str) -> int:
    s = deliver(relay.port, "friend@example.com", [address], message("probe"))
    codes = s.codes("RCPT")
    assert codes and not [c for c in s.codes() if c >= 500], s.replies
    return codes[0]


def sync(relay, files, server):
    return relay.sync_recipients(files, server.url, server.ca_bundle)


def test_a_good_list_replaces_the_catch_all_and_is_in_force_at_once(world, list_files):
    relay, server = world
    assert rcpt_code(relay, f"nobody@{DOMAIN}") == 250  # the first boot's catch-all
    done = sync(relay, list_files, server)
    assert done.returncode == 0, done.stderr
    assert "3 entries in force" in done.stdout  # alice, bob and postmaster
    assert rcpt_code(relay, f"nobody@{DOMAIN}") == 450
    assert rcpt_code(relay, f"alice@{DOMAIN}") == 250
    assert rcpt_code(relay, f"BOB@{DOMAIN}") == 250  # Postfix folds case; so does the list
    assert rcpt_code(relay, f"postmaster@{DOMAIN}") == 250  # always valid (RFC 5321)
    metrics = (relay.base / "textfile" / "backup_mx_recipients.prom").read_text()
    assert "backup_mx_recipients_entries 3" in metrics
    stamp = int((relay.base / "state" / "recipients.synced").stat().st_mtime)
    assert f"backup_mx_recipients_last_sync_timestamp_seconds {stamp}" in metrics


REFUSED = {
    "a foreign domain": (f"alice@{DOMAIN}\nmallory@example.org\n", 200, "line 2: 'mallory@example.org'"),
    "no address at all": ("# nothing yet\n\n", 200, "no address in the list"),
    "a line that is no address": (f"alice@{DOMAIN}\n<html>oops</html>\n", 200, "line 2"),
    "a quoted local part": (f'"a b"@{DOMAIN}\n', 200, "line 1"),
    "an HTTP error": (GOOD, 500, "cannot fetch"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_a_bad_or_missing_list_leaves_the_last_good_copy_in_force(world, list_files, case):
    relay, server = world
    assert sync(relay, list_files, server).returncode == 0
    before = (relay.conf / "relay_recipients").read_bytes()
    server.body, server.status, expected = REFUSED[case]
    done = sync(relay, list_files, server)
    assert done.returncode == 1 and expected in done.stdout + done.stderr, (done.stdout, done.stderr)
    assert "keeping the last good list (3 entries)" in done.stdout
    assert (relay.conf / "relay_recipients").read_bytes() == before
    assert rcpt_code(relay, f"alice@{DOMAIN}") == 250 and rcpt_code(relay, f"nobody@{DOMAIN}") == 450


def test_an_old_last_sync_is_reported_stale_and_the_list_stays(world, list_files):
    relay, server = world
    assert sync(relay, list_files, server).returncode == 0
    stamp = relay.base / "state" / "recipients.synced"
    two_days_ago = time.time() - 2 * 86400
    os.utime(stamp, (two_days_ago, two_days_ago))
    server.close()
    done = sync(relay, list_files, server)
    assert done.returncode == 1 and "STALE: last good sync" in done.stdout, done.stdout
    metrics = (relay.base / "textfile" / "backup_mx_recipients.prom").read_text()
    assert f"backup_mx_recipients_last_sync_timestamp_seconds {int(two_days_ago)}" in metrics
    assert rcpt_code(relay, f"alice@{DOMAIN}") == 250


def test_a_domain_entry_makes_that_domain_catch_all_again(world, list_files):
    relay, server = world
    server.body = f"@{DOMAIN}\n"
    assert sync(relay, list_files, server).returncode == 0
    assert rcpt_code(relay, f"anyone@{DOMAIN}") == 250


# --- the stale-list alert, unit-tested by promtool -------------------------------------------

STALE_ALERT_TEST = """
rule_files: [backup-mx-rules.yml]
evaluation_interval: 1m
tests:
  - name: a list never synced fires once a day has passed (promtool's clock starts at 0)
    interval: 1m
    input_series:
      - series: 'backup_mx_recipients_last_sync_timestamp_seconds{job="backup-mx-node"}'
        values: '0x1600'
    alert_rule_test:
      - {eval_time: 1400m, alertname: BackupMxRecipientListStale, exp_alerts: []}
      - eval_time: 1500m
        alertname: BackupMxRecipientListStale
        exp_alerts: [{exp_labels: {severity: warning}, exp_annotations: ANNOTATIONS}]
  - name: a sync every minute stays quiet
    interval: 1m
    input_series:
      - series: 'backup_mx_recipients_last_sync_timestamp_seconds{job="backup-mx-node"}'
        values: '0+60x2000'
    alert_rule_test:
      - {eval_time: 1900m, alertname: BackupMxRecipientListStale, exp_alerts: []}
  - name: the last sync at minute 10 fires a day and 30 minutes later
    interval: 1m
    input_series:
      - series: 'backup_mx_recipients_last_sync_timestamp_seconds{job="backup-mx-node"}'
        values: '600x2000'
    alert_rule_test:
      - {eval_time: 1460m, alertname: BackupMxRecipientListStale, exp_alerts: []}
      - eval_time: 1500m
        alertname: BackupMxRecipientListStale
        exp_alerts: [{exp_labels: {severity: warning}, exp_annotations: ANNOTATIONS}]
"""


def test_the_stale_list_alert_fires_only_for_an_old_sync(tmp_path):
    run = run_stack(overrides={"recipients": "list", "recipientListUrl": URL})
    files = program.public_outputs(run.outputs)["monitoring"]
    (tmp_path / "backup-mx-rules.yml").write_text(files["backup-mx-rules.yml"])
    rules = yaml.safe_load(files["backup-mx-rules.yml"])["groups"][0]["rules"]
    rule = next(r for r in rules if r["alert"] == "BackupMxRecipientListStale")
    assert URL in rule["annotations"]["description"]
    (tmp_path / "stale.test.yml").write_text(STALE_ALERT_TEST.replace("ANNOTATIONS", json.dumps(rule["annotations"])))
    out = subprocess.run(["promtool", "test", "rules", str(tmp_path / "stale.test.yml")], capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stdout + out.stderr
