"""The real program under the mock runtime against the fake cloud."""
import base64
import json
import subprocess
import sys

import pytest
import yaml

from offline import preview, program
from tests.helpers import EXAMPLE, ROOT, SECRET, TWO_DOMAINS, reported, resource, run_stack, unwrap

TYPES = {
    "backupmx:index:BackupMx": 1, "backupmx:index:Network": 1, "backupmx:index:RelayVm": 1, "backupmx:index:Dns": 1,
    "pulumi:providers:oci": 1, "oci:Core/vcn:Vcn": 1, "oci:Core/internetGateway:InternetGateway": 1,
    "oci:Core/routeTable:RouteTable": 1, "oci:Core/securityList:SecurityList": 1, "oci:Core/subnet:Subnet": 1,
    "oci:Core/instance:Instance": 1, "oci:Core/publicIp:PublicIp": 1, "cloudflare:index/dnsRecord:DnsRecord": 2,
}


def test_resource_graph_is_one_component_tree(example_plan):
    counts: dict[str, int] = {}
    for r in example_plan["resources"]:
        counts[r["type"]] = counts.get(r["type"], 0) + 1
    assert counts == TYPES
    by_urn = {r["urn"]: r for r in example_plan["resources"]}
    root = resource(example_plan, "BackupMx")
    for r in example_plan["resources"]:
        chain, node = [], r
        while node["parent"] in by_urn:
            node = by_urn[node["parent"]]
            chain.append(node["type"])
        assert r is root or chain[-1] == "backupmx:index:BackupMx", r["name"]


def test_relay_vm_props(example_plan):
    inst = resource(example_plan, "instance:Instance")
    props = inst["props"]
    assert props["shape"] == "VM.Standard.E2.1.Micro"
    assert props["createVnicDetails"]["assignPublicIp"] == "false"
    assert props["sourceDetails"]["bootVolumeSizeInGbs"] == "50"
    assert props["preserveBootVolume"] is True
    assert props["availabilityDomain"].endswith("AD-3")  # availabilityDomainIndex 2
    assert inst["options"]["ignoreChanges"] == ["metadata", "sourceDetails"]
    assert inst["provider"].startswith(resource(example_plan, "providers:oci")["urn"])
    ip = resource(example_plan, "publicIp:PublicIp")
    assert ip["props"]["lifetime"] == "RESERVED" and ip["options"]["protect"] is True
    assert ip["props"]["privateIpId"].startswith("ocid1.privateip.")


def test_security_list_opens_only_what_the_relay_needs(example_plan):
    rules = resource(example_plan, "SecurityList")["props"]["ingressSecurityRules"]
    tcp = {(r["source"], r["tcpOptions"]["min"]) for r in rules if r["protocol"] == "6"}
    assert tcp == {("0.0.0.0/0", 25), ("0.0.0.0/0", 80), ("198.51.100.7/32", 9100), ("198.51.100.7/32", 9154)}


def test_dns_records_backup_mx_and_unproxied_a(example_plan):
    records = [r["props"] for r in example_plan["resources"] if r["type"].endswith("DnsRecord")]
    a = next(r for r in records if r["type"] == "A")
    mx = next(r for r in records if r["type"] == "MX")
    assert a["name"] == "mx2.viktorbarzin.me" and a["proxied"] is False
    assert a["content"] == resource(example_plan, "publicIp:PublicIp")["outputs"]["ipAddress"]
    assert (mx["name"], mx["content"], mx["priority"]) == ("viktorbarzin.me", "mx2.viktorbarzin.me", 20)
    assert not any(r["content"] == "mail.viktorbarzin.me" for r in records)  # the primary is never managed


def test_zone_count_is_recorded_on_the_dns_component(example_plan, example_run):
    zones = resource(example_plan, "index:Dns")["props"]["zones"]
    assert zones[0]["liveRecordCount"] == 180 and len(zones[0]["liveRecordKeys"]) == 180
    assert "MX viktorbarzin.me mail.viktorbarzin.me 1" in zones[0]["liveRecordKeys"]
    assert example_run.outputs["zoneRecordCounts"] == {"viktorbarzin.me": 180}


def test_outputs_for_the_runbook(example_run):
    out = program.public_outputs(example_run.outputs)
    assert set(out) >= {"relayHostname", "reservedIp", "instanceId", "region", "availabilityDomain", "drainTarget",
                        "mxRecords", "zoneRecordCounts", "scrapeTargets", "consoleConnectionCommand"}
    assert out["scrapeTargets"]["node"] == f"{out['reservedIp']}:9100"
    assert out["drainTarget"] == {"host": "mail.viktorbarzin.me", "port": 2526,
                                  "postfix": "smtp:[mail.viktorbarzin.me]:2526"}
    assert out["instanceId"] in out["consoleConnectionCommand"]
    assert out["userDataSha256"] == "[secret]"


def test_no_secret_in_plaintext_in_plan_or_outputs(example_run, example_plan, tmp_path):
    """Files get the redacted plan; the analyzer gets the engine's form (secret envelope)."""
    assert unwrap(resource(example_plan, "instance:Instance")["props"]["metadata"]["user_data"]) != \
        unwrap(resource(program.plan(example_run), "instance:Instance")["props"]["metadata"]["user_data"])
    redacted = program.plan(example_run)
    assert redacted["config"]["backup-mx:headscalePreauthKey"] == program.REDACTED
    preview.write_build(tmp_path, redacted, example_run.outputs)
    inst = resource(redacted, "instance:Instance")
    wrapped = inst["props"]["metadata"]["user_data"]
    assert wrapped[program.SECRET_SIG] == program.SECRET_MARK  # a Pulumi secret on the wire
    assert inst["outputs"]["metadata"][program.SECRET_SIG] == program.SECRET_MARK  # and in state
    for name in ("plan.json", "outputs.json", "user-data.yaml"):
        text = (tmp_path / name).read_text()
        assert SECRET not in text
        assert base64.b64encode(SECRET.encode()).decode()[:20] not in text
    decoded = base64.b64decode(unwrap(wrapped)).decode()
    assert SECRET not in decoded and "SECRET-REDACTED" in decoded
    # ...while the real run carried the real key into user_data.
    raw = next(r for r in example_run.resources if r.type.endswith("Instance"))
    assert SECRET in base64.b64decode(raw.props["metadata"]["user_data"]["value"]).decode()


def test_two_domains_nothing_hard_wired(two_domain_plan):
    records = [r["props"] for r in two_domain_plan["resources"] if r["type"].endswith("DnsRecord")]
    mx = sorted((r["zoneId"][0], r["name"], r["priority"]) for r in records if r["type"] == "MX")
    assert mx == [("a", "example.net", 20), ("b", "example.org", 20)]
    assert [(r["zoneId"][0], r["name"]) for r in records if r["type"] == "A"] == [("a", "backup.example.net")]
    inst = resource(two_domain_plan, "instance:Instance")
    text = base64.b64decode(unwrap(inst["props"]["metadata"]["user_data"])).decode()
    assert "relay_domains = example.net example.org" in text
    assert "example.org smtp:[192.0.2.80]:2526" in text
    assert "viktorbarzin" not in json.dumps(two_domain_plan)


NEUTRAL = ROOT / "Pulumi.example.yaml"
SEED_VALUES = ("viktorbarzin", "Frankfurt AD", "10.0.20.0/24", "198.51.100.7", "operator@homelab")


def test_the_neutral_example_names_nothing_of_the_seed_deployment_and_previews_clean(policies):
    """The stack a newcomer copies: documentation names and addresses, every personal value
    marked REPLACE, nothing taken over from the seed deployment, and a clean preview."""
    text = NEUTRAL.read_text()
    assert not [v for v in SEED_VALUES if v in text]
    config = yaml.safe_load(text)["config"]
    marked = {line.split("backup-mx:")[1].split(":")[0] for block in text.split("\n  # REPLACE")[1:]
              for line in block.splitlines() if line.startswith("  backup-mx:")}
    personal = {"domains", "cloudflareZoneIds", "relayHostname", "primaryMxHost", "primaryMxPreference",
                "primaryMynetworks", "drainHost", "ociCompartmentId", "ociRegion", "homelabCidr", "certbotEmail",
                "headscaleLoginServer", "sshAuthorizedKeys"}
    assert personal <= marked, personal - marked
    assert config["backup-mx:primaryMxPreference"] != 1  # a newcomer keeps it: not the seed's own value
    plan = program.plan(run_stack(NEUTRAL), redacted=False)
    assert "viktorbarzin" not in json.dumps(plan)
    assert reported(policies.check(plan)) == set()


def test_first_preview_leaves_ids_and_ip_unknown(first_preview_plan):
    ip = resource(first_preview_plan, "publicIp:PublicIp")
    assert ip["id"] == "" and ip["outputs"]["ipAddress"] == program.UNKNOWN
    a = next(r for r in first_preview_plan["resources"] if r["type"].endswith("DnsRecord") and r["props"]["type"] == "A")
    assert a["props"]["content"] == program.UNKNOWN
    inst = resource(first_preview_plan, "instance:Instance")
    assert unwrap(inst["props"]["metadata"]["user_data"]) != program.UNKNOWN  # decidable before any up


def test_second_run_sees_its_own_records_live():
    plan = program.plan(run_stack(second_run=True))
    zone = resource(plan, "index:Dns")["props"]["zones"][0]
    assert zone["liveRecordCount"] == 182
    assert "MX viktorbarzin.me mx2.viktorbarzin.me 20" in zone["liveRecordKeys"]


def test_preview_cli_writes_build_and_passes(tmp_path, capsys):
    assert preview.main(["--out", str(tmp_path)]) == 0
    for name in ("plan.json", "outputs.json", "user-data.yaml", "main.cf", "master.cf", "relay_recipients",
                 "transport"):
        assert (tmp_path / name).is_file(), name
    out = capsys.readouterr().out
    assert "oci:Core/instance:Instance" in out and "no violations" in out
    plan = json.loads((tmp_path / "plan.json").read_text())
    r = resource(plan, "instance:Instance")
    assert set(r) >= {"type", "name", "urn", "parent", "provider", "props", "outputs", "options"}
    assert set(r["options"]) >= {"protect", "ignoreChanges", "deleteBeforeReplace"}


def test_preview_cli_fails_fast_on_bad_config(tmp_path, capsys):
    stack = tmp_path / "Pulumi.bad.yaml"
    text = (TWO_DOMAINS.read_text() + "  backup-mx:queueLifetime: 101d\n  backup-mx:drainPort: 25\n")
    stack.write_text(text)
    assert preview.main(["--config", str(stack), "--out", str(tmp_path / "b"), "--no-policy"]) == 2
    err = capsys.readouterr().err
    assert "backup-mx:queueLifetime: '101d' exceeds Postfix's 100d cap" in err
    assert "backup-mx:drainPort: 25 is blocked" in err
    assert not (tmp_path / "b").exists()


def test_preview_cli_rejects_undeclared_keys(tmp_path, capsys):
    stack = tmp_path / "Pulumi.typo.yaml"
    stack.write_text(TWO_DOMAINS.read_text() + "  backup-mx:queueLifetme: 30d\n")
    assert preview.main(["--config", str(stack), "--no-policy", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "backup-mx:queueLifetme: is not declared in Pulumi.yaml" in err and "did you mean queueLifetime?" in err


@pytest.mark.parametrize("key", ['hs-"quoted\'-Zq7X9', "hs-ключ-Zq7X9-ü", "hs-back\\slash-Zq7X9"])
def test_redaction_holds_for_keys_yaml_and_json_escape(key, tmp_path):
    """Such keys are written escaped into user_data ("\\u043A", \\" ...); no form may survive."""
    result = run_stack(secret_overrides={"headscalePreauthKey": key})
    raw = next(r for r in result.resources if r.type.endswith("Instance"))
    user_data = base64.b64decode(raw.props["metadata"]["user_data"]["value"]).decode()
    doc = yaml.safe_load(user_data)
    assert any(f.get("content") == key for f in doc["write_files"])  # the real run carries it
    preview.write_build(tmp_path, program.plan(result), result.outputs)
    written = {p.name: p.read_text() for p in tmp_path.rglob("*") if p.is_file()}
    forms = {key, json.dumps(key)[1:-1], json.dumps(key, ensure_ascii=False)[1:-1], "Zq7X9",
             yaml.safe_dump(key, default_style='"').strip()[1:-1]}
    for name, text in written.items():
        for form in forms:
            assert form not in text, (name, form)
    redacted_doc = yaml.safe_load(written["user-data.yaml"])
    assert [f["content"] for f in redacted_doc["write_files"] if f["path"].endswith("preauth-key")] == \
        [program.REDACTED_IN_TEXT]


def test_redaction_of_a_tab_key_in_any_document(tmp_path):
    key = "hs-tab\tkey-Zq7X9"
    doc = yaml.dump({"write_files": [{"content": key}]}, Dumper=yaml.SafeDumper)
    assert "\\t" in doc and key not in doc
    assert "Zq7X9" not in program.redact(doc, [key])
    assert "Zq7X9" not in program.redact(json.dumps({"k": key}), [key])


@pytest.mark.parametrize("text,expected", [
    ("- a\n- b\n", "expected project to be an object, was '[]interface {}'"),
    ("config: hello\n", "cannot unmarshal !!str into map[string]config.Value"),
    ("config:\n  backup-mx:drainPort: 2526\n  backup-mx:drainPort: 2527\n",
     'line 3: mapping key "backup-mx:drainPort" already defined at line 2'),
    (("    - viktorbarzin.me\n", "    - 020\n"), "configuration key 'domains' must be of type 'array<string>'"),
    (("    - viktorbarzin.me\n", "    - yes.example\n    - true\n"), "key 'domains' must be of type 'array<string>'"),
    (("    - viktorbarzin.me=", "    - viktorbarzin.me: "), "key 'cloudflareZoneIds' must be of type 'array<string>'"),
    ("config:\n  123: x\n", "expected only string keys, got '%!s(int=123)'"),
    ("config: [\n", "invalid YAML file"),
])
def test_malformed_stack_files_exit_2_with_one_message(text, expected, tmp_path, capsys):
    """Whole files, or (old, new): one edit of the example stack, the CLI's reason expected."""
    stack = tmp_path / "Pulumi.bad.yaml"
    if not isinstance(text, str):
        old, new = text
        text = EXAMPLE.read_text().replace(old, new, 1)
    stack.write_text(text)
    assert preview.main(["--config", str(stack), "--out", str(tmp_path / "build")]) == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1 and "Traceback" not in err, err


def test_stack_values_reach_the_program_as_the_cli_passes_them(tmp_path, capsys):
    """The CLI decodes the stack file with yaml.v3 into values and re-encodes them
    (workspace/loaders.go LoadProjectStackBytes): 02526 is octal and arrives as "1366", which
    the preview points out, and a bare key is namespaced with the project's name."""
    stack = tmp_path / "Pulumi.octal.yaml"
    stack.write_text(EXAMPLE.read_text().replace("backup-mx:drainPort: 2526", "drainPort: 02526"))
    plain, secret, notes = program.read_stack_file(stack, "backup-mx")
    assert plain["drainPort"] == "1366"
    assert any("02526 is read by the Pulumi CLI (yaml.v3) as octal" in n and "1366" in n for n in notes)


def test_a_plaintext_secret_is_refused_by_the_program(tmp_path, capsys):
    """The tailnet key is declared without `secret: true` (a secret may not carry the "" default
    that tailnet none needs), so the program refuses a plaintext one, never echoing it."""
    stack = tmp_path / "Pulumi.bad.yaml"
    stack.write_text(EXAMPLE.read_text() + "  backup-mx:headscalePreauthKey: hskey-in-plain-text\n")
    assert preview.main(["--config", str(stack), "--out", str(tmp_path / "build")]) == 2
    err = capsys.readouterr().err
    assert "backup-mx:headscalePreauthKey: is stored in plain text in the stack file" in err
    assert "hskey-in-plain-text" not in err and "Traceback" not in err and err.count("\n") == 2


SECURE = "\n    secure: v1:c2VjcmV0c2VjcmV0:c2VjcmV0c2VjcmV0c2VjcmV0\n"


@pytest.mark.parametrize("keys,code,expected", [
    ({"tailnetAuthKey": SECURE}, 0, None),
    ({"tailnetAuthKey": " tskey-in-plain-text\n"}, 2, "backup-mx:tailnetAuthKey: is stored in plain text"),
    ({"tailnetAuthKey": SECURE, "headscalePreauthKey": SECURE}, 2,
     "backup-mx:tailnetAuthKey: is set, and so is headscalePreauthKey, its other name; keep one"),
])
def test_the_tailnet_key_under_its_neutral_name(tmp_path, capsys, keys, code, expected):
    """tailnetAuthKey is the tailnet key as headscalePreauthKey is: encrypted it previews with no
    note asking for the other name, in plain text it is refused, and both at once are refused."""
    stack = tmp_path / "Pulumi.alias.yaml"
    stack.write_text(EXAMPLE.read_text() + "".join(f"  backup-mx:{k}:{v}" for k, v in keys.items()))
    assert preview.main(["--config", str(stack), "--out", str(tmp_path / "build")]) == code
    out = capsys.readouterr()
    assert "Traceback" not in out.err and "plain-text" not in out.err + out.out
    if expected:
        assert expected in out.err, out.err
    else:
        assert "headscalePreauthKey" not in out.out and "no violations" in out.out, out.out
        assert "/etc/backup-mx/headscale-preauth-key" in (tmp_path / "build" / "user-data.yaml").read_text()


@pytest.mark.parametrize("case,code,outcome", [
    ("as it is", 0, "clean"),
    ("a budget of 150 records", 1, "policy violation"),
    ("drainPort 25", 2, "bad input"),
])
def test_the_last_line_names_the_outcome_and_the_module_gives_its_code(tmp_path, case, code, outcome):
    """What a script sees: `python -m offline.preview` exits 0/1/2 and says which; `make
    preview` prints the same last line, and exits 2 (make's own) on any failure."""
    stack = tmp_path / "Pulumi.outcome.yaml"
    text = EXAMPLE.read_text()
    stack.write_text(text.replace("backup-mx:drainPort: 2526", "backup-mx:drainPort: 25") if case == "drainPort 25"
                     else text)
    args = ["--config", str(stack), "--out", str(tmp_path / "build")]
    if case.startswith("a budget"):
        (tmp_path / "policy.json").write_text(json.dumps({"zone-record-budget": {"budget": 150}}))
        args += ["--policy-config", str(tmp_path / "policy.json")]
    module = subprocess.run([sys.executable, "-m", "offline.preview", *args], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    last = module.stdout.splitlines()[-1]
    assert module.returncode == code and last.startswith(f"preview: {outcome}") and last.endswith(f"(exit {code})"), \
        module.stdout[-300:] + module.stderr
    made = subprocess.run(["make", "-s", "preview", f"ARGS={' '.join(args)}"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert made.returncode == (0 if code == 0 else 2), made.stdout[-300:] + made.stderr
    assert made.stdout.splitlines()[-1] == last, made.stdout[-300:]
