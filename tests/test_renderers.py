"""Pure renderers, called directly: settings in, text out."""
import json
import subprocess

import jsonschema
import yaml

from components import cloudinit, postfix, settings
from components.facts import SIZE_HEADROOM
from tests.helpers import DATA, REQUIRED

TWO = {**REQUIRED, "domains": json.dumps(["example.net", "example.org"]),
       "cloudflareZoneIds": json.dumps(["example.net=" + "a" * 32, "example.org=" + "b" * 32])}


def two_domain_settings():
    return settings.load("backup-mx", TWO.get)


def first(s: settings.Settings) -> tuple[settings.Settings, settings.RelaySpec]:
    """A renderer's (settings, relay) for the stack's first relay."""
    return s, s.relays[0]


def params(text):
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and "=" in line:
            k, _, v = line.partition("=")
            out[k.strip()] = v.strip()
    return out


def test_main_cf_carries_every_invariant_from_settings():
    s = two_domain_settings()
    p = params(postfix.main_cf(s, s.relays[0]))
    assert p["relay_domains"] == "example.net example.org"
    assert p["mydestination"] == "" and p["mynetworks"] == "127.0.0.1/32"
    assert p["smtpd_relay_restrictions"] == "reject_unauth_destination"
    assert p["smtpd_recipient_restrictions"] == (
        "reject_non_fqdn_recipient, check_recipient_access inline:{ example.net=OK, example.org=OK }, reject")
    assert p["myorigin"] == "example.net"
    assert p["soft_bounce"] == "yes"
    assert (p["maximal_queue_lifetime"], p["bounce_queue_lifetime"], p["delay_warning_time"]) == ("30d", "1d", "0")
    assert p["message_size_limit"] == str(209715200 - SIZE_HEADROOM)
    assert p["inet_protocols"] == "ipv4" and p["smtp_tls_security_level"] == "may"
    assert p["postscreen_greet_action"] == p["postscreen_dnsbl_action"] == "enforce"
    assert all("=" in site for site in p["postscreen_dnsbl_sites"].split(", "))
    assert (p["default_process_limit"], p["smtpd_client_connection_count_limit"]) == ("100", "1")  # slowloris
    assert p["notify_classes"] == "resource, software" and p["error_notice_recipient"] == "postmaster@example.net"
    assert (p["minimal_backoff_time"], p["maximal_backoff_time"]) == ("600s", "3600s")  # within the pack's 1 h


def test_maps_route_every_domain_to_the_drain_port():
    s = two_domain_settings()
    assert postfix.transport(s) == ("example.net smtp:[mail.example.net]:2526\n"
                                    "example.org smtp:[mail.example.net]:2526\n")
    assert postfix.relay_recipients(s) == "@example.net OK\n@example.org OK\n"


def test_master_cf_is_complete_with_postscreen_on_the_smtp_port():
    lines = [ln.split() for ln in postfix.master_cf(two_domain_settings()).splitlines()
             if ln and not ln.startswith(("#", " "))]
    services = {(f[0], f[1]): f for f in lines}
    assert services[("smtp", "inet")][7] == "postscreen"
    assert services[("smtpd", "pass")][7] == "smtpd"
    assert ("dnsblog", "unix") in services and ("tlsproxy", "unix") in services
    assert all(len(f) >= 8 and f[4] == "n" for f in lines)  # no chroot anywhere


def test_user_data_validates_against_cloud_init_24_1_schema():
    schema = json.loads((DATA / "cloud-init-24.1-cloud-config.schema.json").read_text())
    doc = yaml.safe_load(cloudinit.user_data(*first(two_domain_settings()), "secret-key"))
    jsonschema.Draft4Validator(schema).validate(doc)


def test_user_data_writes_config_staged_and_runs_bootstrap():
    text = cloudinit.user_data(*first(two_domain_settings()), "secret-key")
    assert text.startswith("#cloud-config\n")
    doc = yaml.safe_load(text)
    files = {f["path"]: f for f in doc["write_files"]}
    assert files["/etc/backup-mx/headscale-preauth-key"] == {
        "path": "/etc/backup-mx/headscale-preauth-key", "permissions": "0600", "content": "secret-key"}
    for name in ("main.cf", "master.cf", "relay_recipients", "transport"):
        assert files[f"/etc/backup-mx/postfix/{name}"]["content"] == postfix.files(*first(two_domain_settings()))[
            f"/etc/postfix/{name}"]
    assert "postfix postfix/main_mailer_type select No configuration" in files["/etc/backup-mx/debconf.txt"]["content"]
    assert doc["runcmd"] == [["/usr/local/sbin/backup-mx-bootstrap"]]
    assert "DOMAINS='example.net example.org'" in files[cloudinit.ENV_FILE]["content"]


def test_bootstrap_puts_mail_before_anything_third_party():
    """Static order only; the first-boot rehearsal (issue 10) runs it on real cloud-init."""
    boot = (cloudinit.ASSETS / "bootstrap.sh").read_text()
    order = ["/usr/local/sbin/backup-mx-firewall\n", "egress && break", "debconf-set-selections",
             "retry 20 apt_install postfix\n",
             "postfix check", "systemctl restart postfix", "backup-mx-drain.service", "/usr/local/sbin/backup-mx-extras"]
    positions = [boot.index(marker) for marker in order]
    assert positions == sorted(positions)
    assert "tailscale" not in boot and "apt_install" not in boot.split("postfix check")[1]


def test_every_shell_asset_parses():
    for script in cloudinit.ASSETS.glob("*.sh"):
        subprocess.run(["bash", "-n", str(script)], check=True)


def test_env_file_quotes_values():
    env = cloudinit.env_file(*first(two_domain_settings()))
    out = subprocess.run(["bash", "-c", "set -a; . /dev/stdin; echo \"$DOMAINS|$DRAIN_PORT\""], input=env,
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "example.net example.org|2526"
