"""make preview ARGS="--live-zone FILE": a real zone (Cloudflare's BIND export or its
records-API JSON) replaces the fake one, and the pack judges the stack against it."""
import json

import pytest

from offline import livezone, preview
from tests.helpers import DATA, EXAMPLE

BIND = DATA / "zone-viktorbarzin.me.txt"  # the primary published at preference 10


def api_json(tmp_path, primary_priority):
    rows = [{"id": "a1", "type": "MX", "name": "viktorbarzin.me", "content": "mail.viktorbarzin.me",
             "priority": primary_priority, "ttl": 1},
            {"id": "a2", "type": "A", "name": "mail.viktorbarzin.me", "content": "198.51.100.7", "ttl": 1},
            {"id": "a3", "type": "TXT", "name": "viktorbarzin.me", "content": "\"v=spf1 mx -all\"", "ttl": 1}]
    path = tmp_path / "zone.json"
    path.write_text(json.dumps({"success": True, "result": rows, "result_info": {"count": 3}}))
    return path


def run(tmp_path, capsys, *zone_files, primary_pref=None):
    stack = tmp_path / "Pulumi.live.yaml"
    text = EXAMPLE.read_text()
    if primary_pref is not None:
        text = text.replace("backup-mx:primaryMxPreference: 1", f"backup-mx:primaryMxPreference: {primary_pref}")
    stack.write_text(text)
    args = ["--config", str(stack), "--out", str(tmp_path / "build")]
    for f in zone_files:
        args += ["--live-zone", str(f)]
    code = preview.main(args)
    return code, capsys.readouterr()


def test_the_bind_export_is_read_as_cloudflare_writes_it():
    records = livezone.load(BIND)
    assert {"type": "MX", "name": "viktorbarzin.me", "content": "mail.viktorbarzin.me", "priority": 10.0} in records
    assert {"type": "A", "name": "www.viktorbarzin.me", "content": "198.51.100.8"} in records  # relative name
    assert any(r["type"] == "TXT" and "p=quarantine; rua=" in r["content"] for r in records)  # ';' inside quotes
    assert len(records) == 6 and not any(r["type"] == "SOA" for r in records)  # the API lists no SOA


def test_a_live_primary_at_another_preference_is_reported(tmp_path, capsys):
    code, out = run(tmp_path, capsys, BIND)
    assert code == 1, out.out
    assert "publishes the primary mail.viktorbarzin.me at preference 10, but stack config primaryMxPreference is 1; " \
           "set primaryMxPreference: 10" in out.out
    assert "zone viktorbarzin.me" in out.out and "6 live + " in out.out  # the real zone's size


def test_the_same_stack_stating_the_live_preference_passes(tmp_path, capsys):
    code, out = run(tmp_path, capsys, BIND, primary_pref=10)
    assert code == 0, out.out
    assert "no violations" in out.out


@pytest.mark.parametrize("priority,expected", [(30, 1), (1, 0)])
def test_a_records_api_json_file_decides_too(tmp_path, capsys, priority, expected):
    code, out = run(tmp_path, capsys, api_json(tmp_path, priority))
    assert code == expected, out.out
    if expected:
        assert "relay mx2.viktorbarzin.me at preference 20 (stack config mxPreference) does not come after the " \
               "live primary MX at 30" in out.out


@pytest.mark.parametrize("text,expected", [
    ("viktorbarzin.me. 1 IN MX mail.viktorbarzin.me.\n", "MX data is 'preference host'"),
    ("viktorbarzin.me. 1 IN BOGUS x\n", "no record type this reader knows"),
    ("example.org. 1 IN A 192.0.2.1\n", "lie in none of the protected domains"),
    ('{"result": [{"type": "MX", "name": "viktorbarzin.me", "content": "mail.viktorbarzin.me"}]}', "has no priority"),
    ("", "no records found"),
    ("viktorbarzin.me. 3600 IN SOA ns1.cloudflare.com. dns.cloudflare.com. (\n 1 2 3 4 5 )\n",
     "multi-line records (parentheses) are not modelled"),
])
def test_a_bad_zone_file_exits_2_naming_the_problem(tmp_path, capsys, text, expected):
    path = tmp_path / "zone.txt"
    path.write_text(text)
    code, out = run(tmp_path, capsys, path)
    assert code == 2 and expected in out.err and "Traceback" not in out.err, out.err
