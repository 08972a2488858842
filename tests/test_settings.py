"""Stack config -> Settings: defaults from Pulumi.yaml, and early, named errors."""
import json

import jsonschema
import pytest
import yaml

from components import settings
from tests.helpers import DATA, EXAMPLE, REQUIRED, ROOT


def load(**changes):
    raw = {**REQUIRED, **{k: (json.dumps(v) if isinstance(v, list) else str(v)) for k, v in changes.items()}}
    return settings.load("backup-mx", raw.get, tailnet_key=settings.SecretConfig("k", True))


def test_pulumi_yaml_matches_pulumis_own_project_schema():
    schema = json.loads((DATA / "pulumi-project.schema.json").read_text())
    jsonschema.validate(yaml.safe_load((ROOT / "Pulumi.yaml").read_text()), schema)


def test_defaults_come_from_pulumi_yaml():
    s = load()
    assert s.relays[0].hostname == "mx2.example.net"
    assert (s.relays[0].mx_preference, s.primary_mx_preference, s.drain_port) == (20, 1, 2526)
    assert s.drain_host == "mail.example.net"
    assert (s.queue_lifetime, s.bounce_lifetime, s.message_size_limit) == ("30d", "1d", 209715200)
    assert (s.shape, s.boot_volume_size_gb, s.tailnet_tag) == ("VM.Standard.E2.1.Micro", 50, "tag:backup-mx")
    assert s.relays[0].private_ip == "10.42.0.10"


def test_every_required_key_is_named_when_missing():
    with pytest.raises(settings.ConfigError) as err:
        settings.load("backup-mx", lambda key: None)
    for key in set(REQUIRED) - {"headscaleLoginServer"}:  # that one: the tailnet tests below
        assert f"backup-mx:{key}: is required" in str(err.value)


def _tailnet(tailnet, key, server):
    raw = {**REQUIRED, "tailnet": tailnet, "headscaleLoginServer": server}
    return settings.load("backup-mx", raw.get, tailnet_key=key)


KEY = settings.SecretConfig("hskey-test-0123456789", True)


@pytest.mark.parametrize("tailnet,key,server,expected", [
    ("headscale", KEY, "", "headscaleLoginServer: is required with tailnet headscale"),
    ("tailscale", KEY, "https://hs.example.net", "headscaleLoginServer: is set but tailnet is tailscale"),
    ("none", settings.SecretConfig("", False), "https://hs.example.net", "headscaleLoginServer: is set but tailnet is none"),
    ("none", KEY, "", "headscalePreauthKey: is set but tailnet is none"),
    ("tailscale", settings.SecretConfig("", False), "", "headscalePreauthKey: is required with tailnet tailscale"),
    ("headscale", settings.SecretConfig(None, False), "https://hs.example.net",
     "headscalePreauthKey: is required with tailnet headscale"),
    ("tailscal", KEY, "", "tailnet: 'tailscal' is not allowed; allowed: headscale, tailscale, none"),
])
def test_each_tailnet_requires_its_keys_and_refuses_the_others(tailnet, key, server, expected):
    with pytest.raises(settings.ConfigError) as err:
        _tailnet(tailnet, key, server)
    assert f"backup-mx:{expected}" in str(err.value)
    assert not key.text or key.text not in str(err.value)


@pytest.mark.parametrize("tailnet,key,server", [
    ("headscale", settings.SecretConfig("hskey-x", True), "https://hs.example.net"),
    ("tailscale", settings.SecretConfig("tskey-auth-x", True), ""),
    ("none", settings.SecretConfig("", False), ""),
])
def test_each_tailnet_loads_with_exactly_its_keys(tailnet, key, server):
    s = _tailnet(tailnet, key, server)
    assert (s.tailnet, s.headscale_login_server) == (tailnet, server)
    assert settings.required_secrets(s.tailnet, s.drain_transport) == (() if tailnet == "none"
                                                                        else ("headscalePreauthKey",))


@pytest.mark.parametrize("key,value,expected", [
    ("queueLifetime", "101d", "exceeds Postfix's 100d cap"),
    ("queueLifetime", "15y", "not a Postfix time"),
    ("bounceLifetime", "31d", "the pack's mandatory bounce-lifetime policy"),
    ("bounceLifetime", "12h", "is not 1d"),
    ("queueLifetime", "7d", "the pack's mandatory queue-lifetime policy"),
    ("shape", "VM.Standard.E4.Flex", "allowed: VM.Standard.E2.1.Micro"),
    ("vcnCidr", "10.0.0.0/33", "not a CIDR"),
    ("vcnCidr", "8.8.8.0/24", "must be a private"),
    ("homelabCidr", "198.51.100.7/24", "not a CIDR"),
    ("primaryMynetworks", ["10.0.0.0/8", "bogus"], "'bogus' is not a CIDR"),
    ("primaryMynetworks", ["127.0.0.0/8", "[::1]/128"], "write Postfix's '[::1]/128' without the brackets: '::1/128'"),
    ("drainPort", 25, "allowed: 1..65535 except 25"),
    ("mxPreference", 1, "must be greater than primaryMxPreference"),
    ("relayHostname", "mx2.elsewhere.com", "must lie inside one of domains"),
    ("bootVolumeSizeGb", 20, "outside 50..200"),
    ("availabilityDomainIndex", 3, "outside 0..2"),
    ("dnsblSites", ["zen.spamhaus.org"], "has no reply filter"),
    ("messageSizeLimit", 1000, "outside 10485760..1073741824"),
    ("cloudflareZoneIds", ["example.net=nothex"], "domain=<32 hex digit zone id>"),
    ("headscaleLoginServer", "http://hs.example.net", "must use https://"),
    ("mxPreference", "twenty", "is not a valid integer"),
    # What independent probes found alive-but-dead (issue 9):
    ("drainHost", "127.0.0.1", "drain to itself"),
    ("drainHost", "0.0.0.0", "drain to itself"),
    ("drainHost", "10.42.0.10", "10.42.0.10 lies inside vcnCidr"),
    ("drainHost", "mx2.example.net.", "'mx2.example.net' is a relay of this stack"),
    ("drainHost", "localhost", "not a host name"),
    ("drainHost", "mx.localhost", "drain to itself"),
    ("drainHost", "mx2.example.net", "drain to itself"),
    ("drainHost", "169.254.169.254", "drain to itself"),
    ("messageSizeLimit", 2**63, "outside 10485760..1073741824"),
    ("dnsblSites", ["zen.spamhaus.org=127.0.0.[2..11*3"], "not four octet patterns"),
    ("dnsblSites", ["zen.spamhaus.org=127.0.0.[11..2]"], "range 11..2 is empty"),
    ("dnsblThreshold", 99, "can never be reached"),
    ("dnsblAction", "defer", "allowed: enforce, drop, ignore"),
    ("breakGlassSsh", "yes", "'yes' is not a valid boolean"),
    ("sshAuthorizedKeys", ["ssh-ed25519 AAAAC3Nz a@b\nssh-ed25519 AAAAEvil evil@x"], "one SSH public key on one line"),
    ("sshAuthorizedKeys", ['command="sh" ssh-ed25519 AAAAC3Nz a@b'], "one SSH public key on one line"),
    ("certbotEmail", "ops@example.net;reboot", "not a plain e-mail address"),
    ("certbotEmail", "$(id)@example.net", "not a plain e-mail address"),
    ("headscaleLoginServer", "https://hs.example.net:99999", "not a valid URL"),
    ("headscaleLoginServer", "https://hs.example.net:0", "outside 1..65535"),
    ("vcnCidr", "169.254.0.0/24", "RFC 1918"),
    ("vcnCidr", "0.0.0.0/24", "RFC 1918"),
    ("homelabCidr", "8.8.0.0/16", "public block of /24 or narrower"),
    ("homelabCidr", "0.0.0.0/0", "homelab's own IPv4 block"),
    ("cloudflareZoneIds", ["example.net=" + "a" * 32, "example.net=" + "b" * 32], "lists 'example.net' twice"),
    ("drainPort", "02526", "leading zero"),
    ("mxPreference", "020", "leading zero"),
    ("mxPreference", "2_0", "is not a valid integer"),
    ("drainPort", "0x9DE", "is not a valid integer"),
])
def test_bad_value_names_the_key_and_what_is_allowed(key, value, expected):
    with pytest.raises(settings.ConfigError) as err:
        load(**{key: value})
    message = str(err.value)
    assert f"backup-mx:{key}:" in message and expected in message, message


@pytest.mark.parametrize("changes,expected", [
    # relay 1 draining to relay 2, where nothing listens on the drain port (issue 21)
    ({"relayCount": 2, "drainHost": "mx3.example.net"}, "drainHost: 'mx3.example.net' is a relay of this stack"),
    ({"relayCount": 2, "drainHost": "10.42.0.11"}, "drainHost: 10.42.0.11 lies inside vcnCidr"),
    ({"relayCount": 2, "secondRelayHostname": "backup.example.net", "drainHost": "BACKUP.example.net"},
     "'backup.example.net' is a relay of this stack"),
])
def test_drains_to_another_relay_are_refused(changes, expected):
    with pytest.raises(settings.ConfigError) as err:
        load(**changes)
    assert expected in str(err.value), str(err.value)


MTA_STS_ON = {"mtaSts": "testing", "cloudflareAccountId": "0" * 32}


@pytest.mark.parametrize("rua", ["mailto:tls@example.net,", ",mailto:tls@example.net", ", ,", ",",
                                 "mailto:tls@example.net,,https://r.example.net/v1", "mailto:tls@example.net;x",
                                 "ftp://r.example.net", "mailto:tls@example.net https://r.example.net"])
def test_tls_rpt_rua_follows_rfc_8460(rua):
    with pytest.raises(settings.ConfigError) as err:
        load(**MTA_STS_ON, tlsRptRua=rua)
    message = str(err.value)
    assert "backup-mx:tlsRptRua:" in message and ("RFC 8460" in message or "empty entry" in message), message


@pytest.mark.parametrize("rua,published", [
    ("mailto:tls@example.net", "mailto:tls@example.net"),
    ("mailto:tls@example.net , https://r.example.net/v1", "mailto:tls@example.net,https://r.example.net/v1"),
    ("mailto:a@example.net,\tmailto:b@example.net", "mailto:a@example.net,mailto:b@example.net"),
])
def test_tls_rpt_rua_equivalent_forms_are_accepted(rua, published):
    s = load(**MTA_STS_ON, tlsRptRua=rua)
    assert s.mta_sts is not None and s.mta_sts.tls_rpt_rua == published


def test_a_domain_without_a_zone_id_names_the_zone_key():
    with pytest.raises(settings.ConfigError) as err:
        load(domains=["example.net", "example.org"])
    assert "backup-mx:cloudflareZoneIds: has no entry for 'example.org'" in str(err.value)


def test_one_zone_holds_one_domain_and_its_subdomains():
    """Found by the accept-iff-pack-clean property: two unrelated domains under one zone id
    previewed, and the pack could not tell which zone a record's name belongs to."""
    with pytest.raises(settings.ConfigError) as err:
        load(domains=["example.net", "example.org"],
             cloudflareZoneIds=["example.net=" + "a" * 32, "example.org=" + "a" * 32])
    assert "backup-mx:cloudflareZoneIds: gives zone " + "a" * 32 + " to example.net, example.org" in str(err.value)
    s = load(domains=["example.net", "lists.example.net"],
             cloudflareZoneIds=["example.net=" + "a" * 32, "lists.example.net=" + "a" * 32])
    assert [z.zone_id for z in s.zones] == ["a" * 32] * 2


def test_all_errors_are_reported_at_once():
    with pytest.raises(settings.ConfigError) as err:
        load(queueLifetime="200d", drainPort=25, shape="big")
    assert all(f"backup-mx:{k}:" in str(err.value) for k in ("queueLifetime", "drainPort", "shape"))


@pytest.mark.parametrize("text,seconds", [("30d", 2592000), ("30", 2592000), ("720h", 2592000), ("1w", 604800),
                                          ("90s", 90), ("100d", 8640000)])
def test_postfix_time_units_bare_number_is_days(text, seconds):
    assert settings.postfix_seconds(text) == seconds


def test_example_stack_declares_only_known_keys():
    decls = settings.declarations()
    for key in yaml.safe_load(EXAMPLE.read_text())["config"]:
        assert key.split(":", 1)[1] in decls, key


def test_second_domain_and_relay_zone():
    s = load(domains=["example.net", "example.org"],
             cloudflareZoneIds=["example.net=" + "a" * 32, "example.org=" + "b" * 32],
             relayHostname="mx2.example.org")
    assert s.domains == ("example.net", "example.org")
    assert s.relays[0].zone.domain == "example.org" and s.relays[0].zone.zone_id == "b" * 32


@pytest.mark.parametrize("key,expected", [
    (settings.SecretConfig(None, False), "is required with tailnet headscale"),
    (settings.SecretConfig("", True), "is empty"),
    (settings.SecretConfig("tskey-plain", False), "stored in plain text"),
    (settings.SecretConfig("hskey\tpasted", True), "whitespace or control characters"),
])
def test_preauth_key_problems_are_named_without_echoing_the_key(key, expected):
    with pytest.raises(settings.ConfigError) as err:
        settings.load("backup-mx", REQUIRED.get, tailnet_key=key)
    message = str(err.value)
    assert "backup-mx:headscalePreauthKey:" in message and expected in message and "--secret" in message
    assert not key.text or key.text not in message
