"""Property tests: every config the settings accept boots a working relay on real Postfix,
and every bad value of a key is refused at preview with exit 2 and the key named.

Example counts are modest for `make test`; `make properties` runs the long pass
(HYPOTHESIS_PROFILE=long)."""
import ipaddress
import json
import os
import re

import pytest
import yaml
from hypothesis import HealthCheck, assume, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from components import postfix, settings
from lab import Lab
from lab.client import Client
from offline import program
from tests.helpers import EXAMPLE, ROOT, edit_file, lab_dir, reported, set_config, set_main_cf

# make test: a fixed sequence of examples (reproducible anywhere); make properties: random, long.
hsettings.register_profile("test", max_examples=int(os.environ.get("PROPERTY_EXAMPLES", "6")), deadline=None,
                           derandomize=True, database=None, suppress_health_check=list(HealthCheck))
hsettings.register_profile("long", max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
hsettings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "test"))

REQUIRED = {
    "primaryMxHost": "mail.example.net",
    "ociCompartmentId": "ocid1.tenancy.oc1..aaaaaaaaabc",
    "homelabCidr": "198.51.100.7/32",
    "certbotEmail": "ops@example.net",
    "headscaleLoginServer": "https://hs.example.net",
}

label = st.from_regex(r"[a-z]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
domain = st.builds(lambda labels, tld: ".".join(labels + [tld]), st.lists(label, min_size=1, max_size=2),
                   st.sampled_from(["net", "org", "me", "example", "co.uk"]))
public_ip = st.integers(0x01000000, 0xDFFFFFFF).map(ipaddress.IPv4Address).filter(lambda ip: ip.is_global) \
    .map(str)
octet = st.integers(0, 255)
octet_pattern = st.one_of(
    octet.map(str),
    st.tuples(octet, octet).map(lambda r: f"[{min(r)}..{max(r)}]"),
    st.lists(octet, min_size=2, max_size=3).map(lambda xs: "[" + ";".join(map(str, xs)) + "]"))
dnsbl_site = st.builds(lambda d, last, weight: f"bl.{d}=127.0.0.{last}" + (f"*{weight}" if weight is not None else ""),
                       domain, octet_pattern, st.one_of(st.none(), st.integers(-2, 5)))
# The pack's lifetimes: a queue of 30d..100d in any unit Postfix reads, a bounce lifetime of 1d.
queue_lifetime = st.one_of(st.integers(30, 100).map(lambda d: f"{d}d"), st.integers(720, 2400).map(lambda h: f"{h}h"),
                           st.integers(5, 14).map(lambda w: f"{w}w"), st.integers(30, 100).map(str))
bounce_lifetime = st.sampled_from(["1d", "24h", "1440m", "86400s", "1"])


@st.composite
def written(draw, name: str) -> str:
    """A host name as a user may write it: any case, with or without the root's trailing dot.
    The settings normalise both, so each form must get the same verdict."""
    cased = "".join(c.upper() if c.isalpha() and draw(st.booleans()) else c for c in name)
    return cased + draw(st.sampled_from(["", "."]))


@st.composite
def spaced(draw, text: str) -> str:
    """A value as a user may write it, with blanks around it (an integer, either side of a
    cloudflareZoneIds entry): the settings strip them."""
    return draw(st.sampled_from(["", " "])) + text + draw(st.sampled_from(["", " ", "\t"]))


@st.composite
def valid_config(draw):
    domains = draw(st.lists(domain, min_size=1, max_size=3, unique=True))
    sites = draw(st.lists(dnsbl_site, max_size=4))
    reach = sum(1 if "*" not in s else max(int(s.split("*")[1]), 0) for s in sites)
    if sites and not reach:  # only allow-list weights: DNSBL could never fire, which settings refuse
        sites.append(f"bl.{draw(domain)}=127.0.0.2")
        reach = 1
    queue, bounce = draw(queue_lifetime), draw(bounce_lifetime)
    relay = f"{draw(label)}.{domains[0]}"
    drain = draw(st.one_of(domain.filter(lambda d: d not in domains), public_ip, st.just("100.64.0.7")))
    raw = {
        **REQUIRED,
        "domains": json.dumps([draw(written(d)) for d in domains]),
        # a zone each, its domain written as the user may write it too
        "cloudflareZoneIds": json.dumps([f"{draw(spaced(draw(written(d))))}={draw(spaced(f'{i:032x}'))}"
                                         for i, d in enumerate(domains)]),
        "relayHostname": draw(written(relay)),
        "drainHost": draw(written(drain)) if any(c.isalpha() for c in drain) else drain,
        "drainPort": draw(spaced(str(draw(st.integers(1, 65535).filter(lambda p: p != 25))))),
        "messageSizeLimit": draw(spaced(str(draw(st.integers(settings.MESSAGE_SIZE_MIN, settings.MESSAGE_SIZE_MAX))))),
        "queueLifetime": queue,
        "bounceLifetime": bounce,
        "dnsblSites": json.dumps(sites),
        "dnsblThreshold": str(draw(st.integers(1, reach)) if reach else draw(st.integers(1, 9))),
        # postscreen compares without case, so these are the three actions too
        "dnsblAction": draw(st.sampled_from(settings.DNSBL_ACTIONS + ("ENFORCE", "Drop", " ignore"))),
        "recipients": draw(st.sampled_from(settings.RECIPIENT_MODES)),
        # a bare address is its /32, for the settings and the pack alike
        "homelabCidr": draw(st.sampled_from(["198.51.100.7/32", "198.51.100.23", "203.0.113.16/28"])),
    }
    if raw["recipients"] == "list":
        raw["recipientListUrl"] = f"https://{draw(label)}.{draw(st.sampled_from(domains))}/recipients.txt"
    second = f"{draw(label)}-b.{draw(st.sampled_from(domains))}"
    if draw(st.booleans()):  # a second relay: its own name in one of the domains, its own preference
        raw.update({"relayCount": "2", "secondRelayHostname": draw(written(second)),
                    "secondMxPreference": draw(spaced(str(draw(st.sampled_from([0, 2, 20, 30, 65535])))))})
    tailnet = draw(st.sampled_from(settings.TAILNETS))
    raw["tailnet"] = tailnet
    if tailnet != "headscale":
        raw["headscaleLoginServer"] = ""
    # The drain goes to the primary, never to a relay (the settings refuse that, by name).
    assume(drain not in (relay, second if "secondRelayHostname" in raw else None))
    return raw


@given(valid_config())
def test_every_accepted_config_boots_a_relay_that_answers(tls_dir, raw):
    s = settings.load("backup-mx", raw.get)
    spec = s.relays[-1]  # with two relays, the second one's own rendering
    files = {path.rsplit("/", 1)[-1]: text for path, text in postfix.files(s, spec).items()}
    lab = Lab(lab_dir("property"), files, tls_dir)
    try:
        primary = lab.sink()
        relay = lab.relay(primary.port)  # runs `postfix check`, which must print nothing
        check = relay.check_output
        assert check == "", check
        c = Client(relay.port, source="127.0.10.1")
        try:
            banner = c.read("banner")
            ehlo = c.cmd("EHLO probe.example.com")
            mail = c.cmd("MAIL FROM:<a@example.com>")
            rcpt = c.cmd(f"RCPT TO:<alice@{s.domains[-1]}>")
            c.cmd("QUIT")
        finally:
            c.close()
        assert banner.code == 220 and ehlo.code == 250, (banner, ehlo)
        assert banner.text.split("\n")[0].startswith(f"{spec.hostname} "), banner  # the relay's own name
        assert mail.code == 250 and rcpt.code == 250, (mail, rcpt)
        assert f"SIZE {s.relay_message_size_limit}" in ehlo.text
        log = relay.log_text()
        bad = [ln for ln in log.splitlines() if re.search(r"\b(fatal|warning|panic|error):", ln)]
        assert bad == [], bad
    finally:
        lab.down()


# --- invalid values: exit 2 from the offline preview, the key named ----------------------

BAD = {
    "drainHost": st.sampled_from(["127.0.0.1", "0.0.0.0", "127.8.9.10", "169.254.1.1", "224.0.0.1",
                                  "mx2.viktorbarzin.me", "MX2.viktorbarzin.me.", "x.localhost", "not a host",
                                  "10.42.0.10", "10.42.0.11", "10.42.0.200"]),  # inside vcnCidr: the relays' own
    "drainPort": st.one_of(st.just("25"), st.integers(65536, 10**9).map(str), st.integers(-99, 0).map(str),
                           # a leading zero on octal digits: PyYAML quotes it (a YAML 1.1 int), so the text
                           # reaches the program; a bare 048 is yaml.v3's float 48, which the CLI passes as 48
                           st.integers(1, 0o7777).map(lambda p: f"0{p:o}")),
    "messageSizeLimit": st.one_of(st.integers(settings.MESSAGE_SIZE_MAX + 1, 2**80).map(str),
                                  st.integers(0, settings.MESSAGE_SIZE_MIN - 1).map(str)),
    "dnsblSites": st.sampled_from(['["zen.spamhaus.org"]', '["zen.spamhaus.org=127.0.0.[2..11"]',
                                   '["zen.spamhaus.org=127.0.0.[9..2]"]', '["zen.spamhaus.org=127.0.0.300"]',
                                   '["zen.spamhaus.org=127.0.0.2*x"]', '["bad domain=127.0.0.2"]']),
    "dnsblThreshold": st.integers(6, 10**6).map(str),  # the example's weights add up to 5
    "dnsblAction": st.sampled_from(["defer", "reject", "warn", "discard", "enforce,drop"]),
    "recipients": st.sampled_from(["Verify", "verify ", "lists", "reject", ""]),
    "sshAuthorizedKeys": st.sampled_from(['["ssh-ed25519 AAAA a\\nssh-ed25519 BBBB b"]', '["ssh-ed25519"]',
                                          '["from=\\"*\\" ssh-ed25519 AAAA a"]', '["ssh-ed25519 AAAA\\ta"]']),
    "certbotEmail": st.from_regex(r"[a-z]{1,5}[;&|`$<>() '\"\\][a-z]{0,5}@example\.net", fullmatch=True),
    "headscaleLoginServer": st.sampled_from(["https://hs.example.net:70000", "https://hs.example.net:-1",
                                             "https://hs.example.net:x", "http://hs.example.net",
                                             "https://hs.example.net/$(id)", "https://"]),
    "tailnet": st.sampled_from(["Headscale", "tailscale ", "off", "wireguard", "", "true"]),
    "vcnCidr": st.sampled_from(["169.254.0.0/24", "0.0.0.0/16", "8.8.8.0/24", "127.0.0.0/24", "10.0.0.0/8"]),
    "homelabCidr": st.integers(0, 23).map(lambda n: str(ipaddress.ip_network(f"8.0.0.0/{n}", strict=False))),
    # (a bare 1e3 is no bad value: yaml.v3 reads the float 1000, which the CLI takes as 1000)
    "mxPreference": st.sampled_from(["020", "20.5", "0x20", "2_0", "-5", "65536", ""]),
    "queueLifetime": st.sampled_from(["0", "101d", "30y", "-1d", "30 d", "7d", "29d", "719h"]),
    "bounceLifetime": st.sampled_from(["2d", "12h", "0", "86401s", "1w"]),
    "relayCount": st.sampled_from(["3", "0", "-1", "two", "1.5", "02"]),
    "secondRelayHostname": st.sampled_from(["mx3.viktorbarzin.me", "not a host"]),  # relayCount is 1 here
    "secondMxPreference": st.sampled_from(["30", "1", "70000"]),
    "mtaSts": st.sampled_from(["strict", "on", "true", "ENFORCE", "none"]),
    "mtaStsMaxAge": st.sampled_from(["86400", "60"]),  # mtaSts is off here
    "tlsRptRua": st.sampled_from(["mailto:tls@viktorbarzin.me", "x"]),  # mtaSts is off here
    "cloudflareAccountId": st.sampled_from(["0123456789abcdef0123456789abcdef", "nope"]),
    "cloudflareZoneIds": st.just('["viktorbarzin.me=0123456789abcdef0123456789abcdef", '
                                 '"viktorbarzin.me=fedcba9876543210fedcba9876543210"]'),
}


# With mtaSts on (examples/Pulumi.mtasts.yaml): RFC 8460's rua grammar.
BAD_WITH_MTA_STS = {
    "tlsRptRua": st.one_of(
        st.sampled_from([",", ", ,", " , ", "mailto:tls@viktorbarzin.me,", ",mailto:tls@viktorbarzin.me",
                         "mailto:a@viktorbarzin.me,,mailto:b@viktorbarzin.me", "mailto:tls@viktorbarzin.me;x"]),
        st.from_regex(r"(mailto:[a-z]{1,6}@viktorbarzin\.me[ ,]{0,3}){1,3},[ \t]*", fullmatch=True)),
}


@given(st.sampled_from(sorted(BAD_WITH_MTA_STS)).flatmap(lambda k: st.tuples(st.just(k), BAD_WITH_MTA_STS[k])))
def test_every_bad_mta_sts_value_fails_preview_with_exit_2_naming_the_key(tmp_path_factory, capsys, bad):
    from offline import preview
    key, value = bad
    doc = yaml.safe_load((ROOT / "examples" / "Pulumi.mtasts.yaml").read_text())
    doc["config"][f"backup-mx:{key}"] = value
    stack = tmp_path_factory.mktemp("stack") / "Pulumi.prop.yaml"
    stack.write_text(yaml.safe_dump(doc))
    code = preview.main(["--config", str(stack), "--out", str(stack.parent / "build"), "--no-policy"])
    out = capsys.readouterr()
    assert code == 2 and f"backup-mx:{key}:" in out.err, out
    assert "Traceback" not in out.err


@given(st.sampled_from(sorted(BAD)).flatmap(lambda k: st.tuples(st.just(k), BAD[k])))
def test_every_bad_value_fails_preview_with_exit_2_naming_the_key(tmp_path_factory, capsys, bad):
    from offline import preview
    key, value = bad
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["config"][f"backup-mx:{key}"] = json.loads(value) if value.startswith("[") else value
    stack = tmp_path_factory.mktemp("stack") / "Pulumi.prop.yaml"
    stack.write_text(yaml.safe_dump(doc))
    code = preview.main(["--config", str(stack), "--out", str(stack.parent / "build"), "--no-policy"])
    out = capsys.readouterr()
    assert code == 2, out
    assert f"backup-mx:{key}:" in out.err, out.err
    assert "Traceback" not in out.err and "Task was destroyed" not in out.err


# No Postfix needed (the program and the analyzer only), so many more examples than the rest.
PACK_EXAMPLES = 40 if os.environ.get("HYPOTHESIS_PROFILE", "test") == "test" else 300


@hsettings(max_examples=PACK_EXAMPLES)
@given(valid_config())
def test_a_config_the_settings_accept_is_one_the_pack_passes(raw):
    """One verdict in two places: whatever the settings accept previews with no mandatory
    violation, judged by the real analyzer on the plan the program renders from it. The live
    zone is the fake cloud's (its count and the primary's MX); a real zone can still fail
    zone-record-budget or mx-preference, which only `--live-zone` can judge."""
    from offline import analyzer, program
    from tests.helpers import SECRET, reported, run_stack
    secrets = {"headscalePreauthKey": None if raw["tailnet"] == "none" else SECRET}
    result = run_stack(EXAMPLE, overrides=raw, secret_overrides=secrets)
    plan = program.plan(result, redacted=False)
    a = analyzer.Analyzer("backup-mx", "example", dry_run=True, config=plan["config"])
    try:
        a.configure(a.info(), {})
        violations = a.analyze(plan)
    finally:
        a.close()
    assert reported(violations, "mandatory") == set(), [v.message for v in violations if v.level == "mandatory"]


# --- the other direction: what the settings refuse for an invariant, the pack reports ----------
# For each key whose rule mirrors a mandatory policy, a refused value is rendered as the program
# would render it if it did not refuse (the main.cf parameter or transport row set to it, the
# stack config holding it), and the pack must report that policy. Keys whose refusals are not
# pack invariants (names, CIDRs, grammar) are outside this half: the program cannot render them.
def _transport_port(port):
    def edit(text):
        return "".join(re.sub(r"(smtp:\[[^\]]+\]:)\d+", rf"\g<1>{port}", ln) + "\n" for ln in text.splitlines())
    return edit


REFUSED = {
    "queueLifetime": (st.one_of(st.integers(1, 29).map(lambda d: f"{d}d"), st.integers(1, 719).map(lambda h: f"{h}h"),
                                st.integers(101, 400).map(lambda d: f"{d}d")),
                      "queue-lifetime", lambda plan, v: set_main_cf(plan, "maximal_queue_lifetime", v)),
    "bounceLifetime": (st.one_of(st.integers(2, 100).map(lambda d: f"{d}d"), st.integers(1, 23).map(lambda h: f"{h}h"),
                                 st.integers(86401, 10**6).map(lambda s: f"{s}s")),
                       "bounce-lifetime", lambda plan, v: set_main_cf(plan, "bounce_queue_lifetime", v)),
    "dnsblAction": (st.sampled_from(["reject", "defer", "warn", "discard", "enforced", "enforce,drop"]),
                    "never-5xx", lambda plan, v: set_main_cf(plan, "postscreen_dnsbl_action", v)),
    "drainPort": (st.just("25"), "drain-port", lambda plan, v: edit_file(plan, "/transport", _transport_port(v))),
}


@hsettings(max_examples=PACK_EXAMPLES)
@given(st.sampled_from(sorted(REFUSED)).flatmap(lambda k: st.tuples(st.just(k), REFUSED[k][0])))
def test_an_invariant_the_settings_refuse_is_one_the_pack_reports(policies, example_plan, case):
    """The refusal names the key and the pack's policy; the same value, rendered into the plan,
    is reported by that mandatory policy."""
    key, value = case
    _, policy, render = REFUSED[key]
    raw = program.read_stack_file(EXAMPLE, "backup-mx")[0]
    with pytest.raises(settings.ConfigError) as err:
        settings.load("backup-mx", {**raw, key: value}.get)
    assert f"backup-mx:{key}:" in str(err.value) and policy in str(err.value), str(err.value)
    plan = render(set_config(example_plan, key, value), value)
    violations = policies.check(plan)
    assert policy in reported(violations, "mandatory"), [v.message for v in violations]
