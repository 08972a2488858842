"""mtaSts: the policy lists every MX host, so senders that enforce MTA-STS can use the relay.

Proven with a real MTA-STS client: postfix-mta-sts-resolver fetches the rendered Worker's
policy over HTTPS (the Worker itself, run by Node behind a test CA's certificate) and a
sending Postfix enforces what it answers, against real relay instances."""
import copy
import json
import re
from pathlib import Path

import pytest
import trustme

from components import mtasts, settings
from lab import Lab, files_from_run, free_port
from lab.client import deliver, message
from lab.dnszone import ZoneServer
from lab.mtasts import StsResolver, WorkerHost
from offline import program
from tests.helpers import (
    DELETE,
    REQUIRED,
    ROOT,
    add_resource,
    drop_resource,
    lab_dir,
    reported,
    resource,
    run_stack,
    set_config,
    set_prop,
    with_live_count,
)
from tests.pack_mutations import assert_reported_only, set_zone

MTA_STS = ROOT / "examples" / "Pulumi.mtasts.yaml"
DOMAIN, PRIMARY, MX2, MX3 = "viktorbarzin.me", "mail.viktorbarzin.me", "mx2.viktorbarzin.me", "mx3.viktorbarzin.me"
ON = {"mtaSts": "enforce", "tlsRptRua": "mailto:tls@example.net", "cloudflareAccountId": "a" * 32}


def load(**changes):
    raw = {**REQUIRED, **ON, **{k: str(v) for k, v in changes.items()}}
    return settings.load("backup-mx", raw.get, tailnet_key=settings.SecretConfig("k", True))


@pytest.fixture(scope="module")
def sts_run():
    return run_stack(MTA_STS)


@pytest.fixture(scope="module")
def sts_plan(sts_run):
    return program.plan(sts_run, redacted=False)


# --- settings and rendering ------------------------------------------------------------------

@pytest.mark.parametrize("changes, expected", [
    ({"mtaSts": "strict"}, "mtaSts: 'strict' is not allowed; allowed: off, testing, enforce"),
    ({"tlsRptRua": ""}, "tlsRptRua: is required with mtaSts enforce"),
    ({"tlsRptRua": "tls@example.net"}, "tlsRptRua: 'tls@example.net' is not a mailto: address or an https:// URL"),
    ({"tlsRptRua": "mailto:tls@example.net,http://r.example.net"}, "'http://r.example.net' is not a mailto:"),
    ({"cloudflareAccountId": ""}, "cloudflareAccountId: '' is not a Cloudflare account id"),
    ({"mtaStsMaxAge": 60}, "mtaStsMaxAge: 60 is outside 86400..31557600"),
    ({"mtaSts": "off"}, "tlsRptRua: is set but mtaSts is off"),
])
def test_mta_sts_config_errors_name_the_key(changes, expected):
    with pytest.raises(settings.ConfigError) as err:
        load(**changes)
    assert expected in str(err.value)


def test_the_policy_lists_every_mx_host_and_its_id_follows_the_text():
    s = load(relayCount=2)
    text = mtasts.policy_text(s)
    assert text == ("version: STSv1\r\nmode: enforce\r\nmx: mail.example.net\r\nmx: mx2.example.net\r\n"
                    "mx: mx3.example.net\r\nmax_age: 604800\r\n")
    assert mtasts.sts_record(text) == f"v=STSv1; id={mtasts.policy_id(text)}"
    assert mtasts.policy_id(mtasts.policy_text(load(relayCount=2, mtaStsMaxAge=86400))) != mtasts.policy_id(text)


def test_outputs_and_records(sts_run):
    out = program.public_outputs(sts_run.outputs)["mtaSts"]
    assert out["mode"] == "enforce" and out["mx"] == [PRIMARY, MX2, MX3]
    assert out["urls"] == [f"https://mta-sts.{DOMAIN}/.well-known/mta-sts.txt"]
    txt = {r.props["name"]: r.props["content"] for r in sts_run.resources
           if r.type.endswith("DnsRecord") and r.props["type"] == "TXT"}
    assert txt == {f"_mta-sts.{DOMAIN}": f'"v=STSv1; id={out["id"]}"',
                   f"_smtp._tls.{DOMAIN}": '"v=TLSRPTv1; rua=mailto:tls-reports@viktorbarzin.me"'}
    site = next(r.props for r in sts_run.resources if r.type.endswith("WorkersCustomDomain"))
    worker = next(r.props for r in sts_run.resources if r.type.endswith("WorkersScript"))
    assert site["hostname"] == f"mta-sts.{DOMAIN}" and site["service"] == worker["scriptName"]


# --- the pack ---------------------------------------------------------------------------

def test_the_mta_sts_stack_passes_the_pack(policies, sts_plan):
    assert reported(policies.check(sts_plan)) == set()
    assert policies.check(sts_plan, dry_run=False) == []


def policy_of(plan):
    script = resource(plan, "WorkersScript")["props"]["content"]
    line = next(x for x in script.splitlines() if x.startswith(mtasts.POLICIES_LINE))
    return json.loads(line[len(mtasts.POLICIES_LINE):].rstrip(";"))


def with_policy(plan, edit, keep_id=True):
    """Edit the served policy text; the _mta-sts id follows the text unless keep_id."""
    plan = copy.deepcopy(plan)
    policies = {host: edit(text) for host, text in policy_of(plan).items()}
    for where in ("props", "outputs"):
        r = resource(plan, "WorkersScript")
        r[where]["content"] = re.sub(rf"^{re.escape(mtasts.POLICIES_LINE)}.*$",
                                     mtasts.POLICIES_LINE + json.dumps(policies) + ";", r[where]["content"],
                                     flags=re.M)
    if not keep_id:
        text = next(iter(policies.values()))
        plan = set_prop(plan, "DnsRecord", ["content"], f'"{mtasts.sts_record(text)}"', name_part="mta-sts-")
    return plan


def without(host):
    return lambda text: text.replace(f"mx: {host}\r\n", "")


def foreign_mx(plan):
    mx = resource(plan, "DnsRecord", "mx-2-")
    return add_resource(plan, mx["type"], "extra-mx", {**mx["props"], "content": "mx9.viktorbarzin.me"})


def script_edit(edit):
    """A plan change applied to the Worker script's text (props and outputs)."""
    def apply(plan):
        plan = copy.deepcopy(plan)
        for where in ("props", "outputs"):
            r = resource(plan, "WorkersScript")
            r[where]["content"] = edit(r[where]["content"])
        return plan
    return apply


LATER_EDIT = ('POLICIES["mta-sts.viktorbarzin.me"] = '
              '"version: STSv1\\r\\nmode: enforce\\r\\nmx: mail.viktorbarzin.me\\r\\nmax_age: 86400\\r\\n";\n')

MTA_STS_MUTATIONS = {
    # MTA-STS as served: the Worker is the reviewed template apart from its data line.
    "a later statement rewrites a policy": (script_edit(lambda t: t.replace("export default", LATER_EDIT + "export default")),
                                            "mta-sts"),
    "the data line in a comment, another object served": (script_edit(lambda t: re.sub(
        r"(?m)^(const POLICIES = .*)$", lambda m: "/*\n" + m.group(1) + "\n*/\nconst POLICIES = {};", t)), "mta-sts"),
    "a handler that serves another text": (script_edit(lambda t: t.replace(
        "return new Response(policy,", "return new Response(policy.replace(/mx: mx2\\S*\\r\\n/, ''),")), "mta-sts"),
    "a second Worker script": (lambda p: add_resource(p, "cloudflare:index/workersScript:WorkersScript", "other", {
        **resource(p, "WorkersScript")["props"], "scriptName": "other"}), "mta-sts"),
    "the policy without mx2": (lambda p: with_policy(p, without(MX2), keep_id=False), "mta-sts"),
    "the policy without the second relay": (lambda p: with_policy(p, without(MX3), keep_id=False), "mta-sts"),
    "the policy without the primary": (lambda p: with_policy(p, without(PRIMARY), keep_id=False), "mta-sts"),
    "a wildcard that matches two labels only": (lambda p: with_policy(p, lambda t: t.replace(
        f"mx: {MX2}", "mx: *.mx.viktorbarzin.me"), keep_id=False), "mta-sts"),
    "the id left behind when the text changed": (lambda p: with_policy(
        p, lambda t: t.replace("max_age: 604800", "max_age: 86400")), "mta-sts"),
    "the mode differs from the stack's": (lambda p: with_policy(
        p, lambda t: t.replace("mode: enforce", "mode: testing"), keep_id=False), "mta-sts"),
    "a policy senders reject (no version line)": (lambda p: with_policy(
        p, lambda t: t.replace("version: STSv1\r\n", ""), keep_id=False), "mta-sts"),
    "an MX host added outside the policy": (foreign_mx, "mta-sts"),
    "no TLS-RPT record": (lambda p: drop_resource(p, "DnsRecord", "tls-rpt-"), "mta-sts"),
    "no _mta-sts record": (lambda p: drop_resource(p, "DnsRecord", "dns-mta-sts-"), "mta-sts"),
    "no custom domain for the policy host": (lambda p: drop_resource(p, "WorkersCustomDomain"), "mta-sts"),
    "a Worker script the pack cannot read": (lambda p: set_prop(
        p, "WorkersScript", ["content"], "export default {async fetch() {}};"), "mta-sts"),
    "mtaSts a value the pack does not know": (lambda p: set_config(p, "mtaSts", "strict"), "mta-sts"),
    "an _mta-sts record while the stack says off": (lambda p: set_config(p, "mtaSts", DELETE), "mta-sts"),
    "a second live _mta-sts record": (lambda p: live_keys(p, [f'txt _mta-sts.{DOMAIN} "v=stsv1; id=old"']),
                                      "mta-sts-live-record"),
    "an unmanaged live _mta-sts record while the stack is off": (lambda p: live_keys(
        set_config(p, "mtaSts", DELETE), [f'txt _mta-sts.{DOMAIN} "v=stsv1; id=theirs"']), "mta-sts-live-record"),
    "a second live _mta-sts record written in capitals": (lambda p: live_keys(
        p, [f'TXT _MTA-STS.{DOMAIN.upper()}. "v=STSv1; id=OLD"']), "mta-sts-live-record"),
    "the zone cannot hold the custom domain's record": (lambda p: with_live_count(p, 193), "zone-record-budget"),
}


def live_keys(plan, keys):
    return set_zone(plan, "liveRecordKeys", lambda live: live + keys)


@pytest.mark.parametrize("case", sorted(MTA_STS_MUTATIONS))
def test_mta_sts_mutation_is_reported_by_its_policy(policies, sts_plan, case):
    mutate, policy = MTA_STS_MUTATIONS[case]
    violations = policies.check(mutate(sts_plan))
    assert policy in reported(violations), [v.message for v in violations]


def test_an_mta_sts_record_on_a_stack_with_mta_sts_off_is_reported(policies, example_plan):
    """With mtaSts off the stack manages no _mta-sts record: one added as a bare label (which
    Cloudflare stores as _mta-sts.<zone>) is reported by mta-sts, and by no other policy."""
    assert_reported_only(policies, example_plan, lambda p: add_resource(
        p, "cloudflare:index/dnsRecord:DnsRecord", "sts", {
            **resource(p, "DnsRecord", "relay-a")["props"], "type": "TXT", "name": "_mta-sts",
            "content": "v=STSv1; id=20261202"}), "mta-sts")


def with_record(plan, name_part, edit):
    r = resource(plan, "DnsRecord", name_part)
    return set_prop(plan, "DnsRecord", ["content"], edit(r["props"]["content"]), name_part=name_part)


MTA_STS_EQUIVALENTS = {
    # RFC 8461 section 3.1: extension fields and a trailing separator are allowed.
    "an _mta-sts extension field": lambda p: with_record(p, "dns-mta-sts-", lambda c: c[:-1] + '; ext=1"'),
    "an _mta-sts trailing separator with spaces": lambda p: with_record(p, "dns-mta-sts-", lambda c: c[:-1] + ' ; "'),
    # RFC 8460 section 3: *WSP "," *WSP between rua URIs, and extensions.
    "a TLS-RPT rua with spaces around the comma": lambda p: with_record(
        p, "tls-rpt-", lambda c: c[:-1] + ' , https://tlsrpt.example.net/v1"'),
    "a TLS-RPT extension field": lambda p: with_record(p, "tls-rpt-", lambda c: c[:-1] + '; x-note=1"'),
}


@pytest.mark.parametrize("case", sorted(MTA_STS_EQUIVALENTS))
def test_mta_sts_equivalent_forms_pass(policies, sts_plan, case):
    plan = MTA_STS_EQUIVALENTS[case](sts_plan)
    assert reported(policies.check(plan)) == set(), [v.message for v in policies.check(plan)]


def test_the_packs_template_digest_is_the_rendered_worker():
    """A changed Worker template is one reviewed line: TEMPLATE_SHA256 in the pack."""
    import hashlib

    from backup_mx_rules import mtasts as pack_mtasts
    script = mtasts.worker_script(load())
    template = "\n".join(pack_mtasts.TEMPLATE_DATA if line.startswith(mtasts.POLICIES_LINE) else line
                          for line in script.split("\n"))
    assert hashlib.sha256(template.encode()).hexdigest() == pack_mtasts.TEMPLATE_SHA256


def test_what_the_worker_serves_is_what_the_pack_judged(sts_plan, tmp_path):
    """The rendered Worker, run in Node as the Workers runtime calls it: each policy host
    serves exactly the text the pack parsed from the data line, and nothing else is served."""
    import subprocess
    import types

    from backup_mx_rules import mtasts as pack_mtasts
    script = resource(sts_plan, "WorkersScript")
    args = types.SimpleNamespace(resources=[types.SimpleNamespace(
        resource_type=script["type"], props=script["props"], name=script["name"])])
    judged, _ = pack_mtasts.worker_policies(args)
    module = tmp_path / "worker.mjs"
    module.write_text(script["props"]["content"])
    hosts = [*judged, "mta-sts.example.org"]
    harness = ("const w = (await import(process.argv[1])).default; const out = {};"
               "for (const h of JSON.parse(process.argv[2])) { const r = await w.fetch(new Request("
               "`https://${h}/.well-known/mta-sts.txt`)); out[h] = [r.status, await r.text()]; }"
               "console.log(JSON.stringify(out));")
    run = subprocess.run(["node", "--input-type=module", "-e", harness, module.as_uri(), json.dumps(hosts)],
                         capture_output=True, text=True, timeout=60, check=True)
    served = json.loads(run.stdout)
    assert {h: text for h, (status, text) in served.items() if status == 200} == judged
    assert served["mta-sts.example.org"][0] == 404


@pytest.mark.parametrize("record,valid", [
    ("v=STSv1; id=20260101", "20260101"), ("v=STSv1;id=abc;", "abc"), ("v=STSv1; id=abc; ext=x.y", "abc"),
    ("v=STSv1; id=a; id=b", None), ("v=STSv1 id=abc", None), ("v=STSv1; id=", None), ("v=STSv1; ext=1", None),
    ("v=STSv1; id=" + "a" * 33, None), ("v=stsv1; id=abc", None), ("v=STSv1; id=abc; bad field", None),
])
def test_sts_record_grammar(record, valid):
    from backup_mx_rules import mtasts as pack_mtasts
    assert pack_mtasts.sts_record_id(record) == valid


@pytest.mark.parametrize("record,valid", [
    ("v=TLSRPTv1; rua=mailto:a@example.net", True), ("v=TLSRPTv1;rua=mailto:a@example.net,https://r.example.net", True),
    ("v=TLSRPTv1; rua=mailto:a@example.net , mailto:b@example.net;", True),
    ("v=TLSRPTv1; rua=mailto:a@example.net,", False), ("v=TLSRPTv1; rua=", False), ("v=TLSRPTv1", False),
    ("v=TLSRPTv1; rua=ftp://x.example.net", False), ("v=TLSRPTv1; rua=mailto:a@x.net; rua=mailto:b@x.net", False),
])
def test_tls_rpt_record_grammar(record, valid):
    from backup_mx_rules import mtasts as pack_mtasts
    assert pack_mtasts.tls_rpt_record_ok(record) is valid


def test_each_mta_sts_policy_has_at_least_three_mutations():
    for name in ("mta-sts", "mta-sts-live-record"):
        assert sum(1 for _, policy in MTA_STS_MUTATIONS.values() if policy == name) >= 3, name


def test_a_live_policy_the_stack_does_not_manage_warns_that_it_must_list_the_relay(policies, example_plan):
    plan = live_keys(example_plan, [f'txt _mta-sts.{DOMAIN} "v=stsv1; id=20240101"'])
    violations = [v for v in policies.check(plan) if v.policy == "mta-sts-live-record"]
    assert [v.level for v in violations] == ["advisory"]
    assert f"must list {MX2}" in violations[0].message
    assert "mta-sts-live-record" not in reported(policies.check(example_plan))


def test_the_custom_domain_record_counts_against_the_budget(policies, sts_plan):
    added = sum(1 for r in sts_plan["resources"] if r["type"].endswith(("DnsRecord", "WorkersCustomDomain")))
    assert added == 7  # 2 A, 2 MX, 2 TXT, and the policy host's record
    violations = policies.check(with_live_count(sts_plan, 200 - added))
    assert any(f"{200 - added} live records + {added} from this stack = 200" in v.message for v in violations)
    assert "zone-record-budget" not in reported(policies.check(with_live_count(sts_plan, 199 - added)))


@pytest.mark.parametrize("kind,content,counted", [
    ("TXT", '"google-site-verification=abc"', True),  # a record of its own at the Worker's host
    ("MX", "mail.viktorbarzin.me 10", True),
    ("AAAA", "100::", False),  # the custom domain's own record, live on a second run
])
def test_a_live_record_at_the_worker_host_is_its_record_only_if_it_is_an_address(policies, sts_plan, kind, content,
                                                                              counted):
    added = sum(1 for r in sts_plan["resources"] if r["type"].endswith(("DnsRecord", "WorkersCustomDomain")))
    plan = live_keys(with_live_count(sts_plan, 199 - added), [f"{kind} mta-sts.{DOMAIN} {content}"])
    violations = policies.check(plan)
    assert ("zone-record-budget" in reported(violations)) == counted, [v.message for v in violations]


# --- a real MTA-STS client against the rendered policy ---------------------------------

PORT_HOSTS = {"primary": "127.0.0.5", "mx2": "127.0.0.2"}
POLICY_HOST_IP, DNS_IP = "127.0.0.6", "127.0.0.154"


def issue(ca, base: Path, name: str) -> Path:
    directory = base / name
    directory.mkdir(parents=True)
    cert = ca.issue_cert(name)
    cert.private_key_pem.write_to_path(str(directory / "privkey.pem"))
    for n, pem in enumerate(cert.cert_chain_pems):
        pem.write_to_path(str(directory / "fullchain.pem"), append=n > 0)
    return directory


def sender_files(ca_file: Path, resolver_port: int, mx_port: int) -> dict[str, str]:
    """A sending MTA that enforces MTA-STS the way Postfix does with this resolver."""
    main = "\n".join([
        "compatibility_level = 3.6", "myhostname = sender.example.com", "mydestination =", "relay_domains =",
        "mynetworks = 127.0.0.0/8", "transport_maps = texthash:/etc/postfix/transport",
        "relay_recipient_maps =", "smtp_tls_security_level = may",
        f"smtp_tls_policy_maps = socketmap:inet:127.0.0.1:{resolver_port}:postfix",
        f"smtp_tls_CAfile = {ca_file}", "smtp_tls_loglevel = 1", "smtp_connection_cache_on_demand = no",
        ""])
    master = open("/usr/share/postfix/master.cf.dist").read()
    return {"main.cf": main, "master.cf": master, "relay_recipients": "",
            # MX lookup of the domain, each MX host on the lab's port (real senders use 25).
            "transport": f"{DOMAIN} smtp:{DOMAIN}:{mx_port}\n"}


@pytest.fixture
def sts_lab(sts_run, request):
    """DNS, the Worker behind HTTPS, the resolver, the primary and mx2 (real relays, certificates
    from a test CA) and a sender. request.param edits the served policy (None: as rendered)."""
    base = lab_dir("mta-sts")
    ca = trustme.CA()
    ca_file = base / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    script = next(r.props["content"] for r in sts_run.resources if r.type.endswith("WorkersScript"))
    text = mtasts_text = json.loads(next(x for x in script.splitlines() if x.startswith(mtasts.POLICIES_LINE))
                                    [len(mtasts.POLICIES_LINE):].rstrip(";"))[f"mta-sts.{DOMAIN}"]
    if request.param:
        text = request.param(mtasts_text)
        script = script.replace(json.dumps(mtasts_text)[1:-1], json.dumps(text)[1:-1])
    assert json.dumps(text)[1:-1] in script
    records = {(f"_mta-sts.{DOMAIN}", "TXT"): [f'"{mtasts.sts_record(text)}"'],
               (DOMAIN, "MX"): [f"1 {PRIMARY}.", f"20 {MX2}."],
               (PRIMARY, "A"): [PORT_HOSTS["primary"]], (MX2, "A"): [PORT_HOSTS["mx2"]]}
    (base / "resolv.conf").write_text(f"nameserver {DNS_IP}\noptions timeout:1 attempts:2\n")
    (base / "hosts").write_text(f"127.0.0.1 localhost\n{POLICY_HOST_IP} mta-sts.{DOMAIN}\n")
    started: list = []
    try:
        started.append(ZoneServer(DNS_IP, 53, records))
        policy_cert = issue(ca, base, f"mta-sts.{DOMAIN}")
        started.append(WorkerHost(base / "worker", script, policy_cert / "fullchain.pem",
                                  policy_cert / "privkey.pem", POLICY_HOST_IP))
        resolver = StsResolver(base / "resolver", free_port(), base / "resolv.conf", base / "hosts", ca_file)
        started.append(resolver)
        port = free_port(PORT_HOSTS["mx2"])
        files = files_from_run(sts_run, MX2)
        relays = {}
        for name, host in (("primary", PRIMARY), ("mx2", MX2)):
            lab_ = Lab(base / name, files, issue(ca, base, host))
            started.append(lab_)
            relays[name] = lab_.relay(free_port(), port=port, listen=PORT_HOSTS[name], name=name)
        sender_lab = Lab(base / "sender", sender_files(ca_file, resolver.port, port), None)
        started.append(sender_lab)
        sender = sender_lab.relay(free_port(), name="sender", resolv_conf=base / "resolv.conf")
        yield sender, relays, resolver
    finally:
        for thing in reversed(started):
            (thing.down if isinstance(thing, Lab) else thing.stop if hasattr(thing, "stop") else thing.close)()


def send(sender, lab_id):
    session = deliver(sender.port, "someone@example.com", [f"user@{DOMAIN}"], message(lab_id))
    assert session.accepted, session.replies


@pytest.mark.parametrize("sts_lab", [None], indirect=True)
def test_enforcing_senders_deliver_to_the_primary_and_to_the_relay(sts_lab):
    sender, relays, resolver = sts_lab
    send(sender, "sts-primary")
    line = sender.wait_log(rf"to=<user@{DOMAIN}>, relay={re.escape(PRIMARY)}\[[0-9.]+\]:\d+, .*status=sent", 90)
    assert "status=sent" in line
    assert re.search(rf"Verified TLS connection established to {re.escape(PRIMARY)}\[", sender.log_text())
    relays["primary"].stop()  # the outage: the relay is the only MX left
    send(sender, "sts-relay")
    sender.wait_log(rf"to=<user@{DOMAIN}>, relay={re.escape(MX2)}\[[0-9.]+\]:\d+, .*status=sent", 90)
    assert re.search(rf"Verified TLS connection established to {re.escape(MX2)}\[", sender.log_text())


@pytest.mark.parametrize("sts_lab", [without(MX2)], indirect=True)
def test_a_policy_without_the_relay_keeps_enforcing_senders_off_it(sts_lab):
    sender, relays, _ = sts_lab
    relays["primary"].stop()
    send(sender, "sts-unlisted")
    line = sender.wait_log(rf"to=<user@{DOMAIN}>, relay={re.escape(MX2)}\[[0-9.]+\]:\d+, .*status=deferred.*", 90)
    assert "Server certificate not verified" in line, line
    assert not relays["mx2"].queue(), "mx2 must not have taken the message"
    assert any(q["recipients"][0]["address"] == f"user@{DOMAIN}" for q in sender.queue())  # held, not lost
