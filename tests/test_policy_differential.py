"""Differential tests: the pack's model of Postfix against real Postfix 3.7 (Debian).

For every variant in postfix_corpus.py the pack's reading must equal what `postconf -n`,
`postconf -P`, `postconf -M`, `postconf -x` and `postmap -q` report on an instance built
from the variant's files, and the pack's "would not start" must match a real start.
Where postconf's own master.cf normalizer disagrees with the daemons (attached -oname=value
forms), the running daemons decide (test_policy_verdicts.py).
"""
from __future__ import annotations

import json
import os
import re
import subprocess

import pytest

from backup_mx_rules import mail, mailconf, postfix
from backup_mx_rules.mailconf import MailConfig
from lab.client import Client
from lab.instance import Relay, Sink, free_port, settle
from tests.helpers import lab_dir
from tests.postfix_corpus import VARIANTS, Variant

POSTCONF_VARIANTS = [v for v in VARIANTS if v.oracle == "postconf"]
MAPS = ("transport", "relay_recipients")
# The parameters the policies judge, in the daemon that uses them.
JUDGED = {
    "smtpd": ("soft_bounce", "mynetworks", "message_size_limit", "relay_recipient_maps", "smtpd_relay_restrictions",
              "smtpd_recipient_restrictions", "content_filter", "smtpd_reject_unlisted_recipient",
              "smtpd_client_restrictions", "smtpd_tls_security_level", "smtpd_upstream_proxy_protocol"),
    "postscreen": ("soft_bounce", "mynetworks", "postscreen_dnsbl_action", "postscreen_greet_action",
                   "postscreen_dnsbl_sites", "postscreen_access_list", "postscreen_upstream_proxy_protocol"),
    "qmgr": ("maximal_queue_lifetime", "bounce_queue_lifetime"),
    "trivial-rewrite": ("transport_maps", "relay_domains", "mydestination", "relay_transport", "relayhost"),
    "smtp": ("soft_bounce", "smtp_fallback_relay", "smtp_bind_address", "smtp_tls_security_level"),
    "cleanup": ("message_size_limit", "content_filter", "soft_bounce"),
    "error": ("soft_bounce",),
}


def test_the_corpus_is_large_enough():
    assert len(VARIANTS) >= 80, len(VARIANTS)
    assert len({v.id for v in VARIANTS}) == len(VARIANTS), "variant ids must be unique"


@pytest.fixture(scope="module")
def example_config(example_run):
    """The stack config the engine would give the pack (environment facts)."""
    saved = os.environ.get("PULUMI_CONFIG")
    os.environ["PULUMI_CONFIG"] = json.dumps(example_run.config)
    yield example_run.config
    if saved is None:
        os.environ.pop("PULUMI_CONFIG", None)
    else:
        os.environ["PULUMI_CONFIG"] = saved


def write_instance(files: dict[str, str]) -> str:
    d = lab_dir("differential")
    for name in ("main.cf", "master.cf", *MAPS):
        (d / name).write_text(files[name], newline="")
    settle(d)
    return str(d)


def postconf(d: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["postconf", "-c", d, *args], capture_output=True, text=True, timeout=60,
                          errors="surrogateescape")


def shown(value: str) -> str:
    """postconf prints a value as words split on CHARS_SPACE (" \\t\\r\\n") joined by one space."""
    return " ".join(w for w in re.split(r"[ \t\r\n]+", value) if w)


def pairs(stdout: str) -> dict[str, str]:
    out = {}
    for line in stdout.split("\n"):
        if not line:
            continue
        name, sep, value = line.partition(" =")
        assert sep, line
        out[name] = value[1:] if value.startswith(" ") else value
    return out


def pack_config(files: dict[str, str]) -> MailConfig:
    return MailConfig({f"/etc/postfix/{n}": files[n] for n in MAPS},
                      postfix.parse_main_cf(files["main.cf"]), postfix.parse_master_cf(files["master.cf"]))


def variant_files(vm_files, variant: Variant) -> dict[str, str]:
    files = variant.edit({n: vm_files[n] for n in ("main.cf", "master.cf", *MAPS)})
    # Point the map paths at the instance directory, as the lab does for every path.
    return files


@pytest.mark.parametrize("variant", POSTCONF_VARIANTS, ids=lambda v: v.id)
def test_pack_reads_main_and_master_cf_as_postconf_does(vm_files, variant):
    files = variant_files(vm_files, variant)
    d = write_instance(files)
    main = postconf(d, "-n")
    if main.returncode != 0:
        assert "fatal" in main.stderr, main.stderr
        with pytest.raises(postfix.WouldNotStart):
            pack_config(files)
        return
    mc = pack_config(files)
    theirs = pairs(main.stdout)
    assert theirs.pop("config_directory") == d  # postconf -c adds it
    assert {k: shown(v) for k, v in mc.main.items()} == theirs
    services = postconf(d, "-M")
    assert services.returncode == 0, services.stderr
    listed = [tuple(line.split()[:2]) + (line.split()[7],) for line in services.stdout.split("\n") if line.strip()]
    assert [(s.name, s.kind, s.command) for s in mc.services] == listed
    options = pairs(postconf(d, "-P").stdout)
    assert {f"{s.key}/{k}": shown(v) for s in mc.services for k, v in s.options.items()} == options


@pytest.mark.parametrize("variant", POSTCONF_VARIANTS, ids=lambda v: v.id)
def test_effective_values_per_daemon_match_postconf(vm_files, variant):
    """Each judged parameter, in each daemon that uses it, expanded: -P -x, else -x -h."""
    files = variant_files(vm_files, variant)
    d = write_instance(files)
    if postconf(d, "-n").returncode != 0:
        with pytest.raises(postfix.WouldNotStart):  # postconf refuses it: so does the pack
            pack_config(files)
        return
    mc = pack_config(files)
    expanded_options = pairs(postconf(d, "-P", "-x").stdout)
    compared = 0
    for svc in mc.services:
        for name in JUDGED.get(svc.command, ()):
            key = f"{svc.key}/{name}"
            if key in expanded_options:
                theirs = expanded_options[key]
            else:
                result = postconf(d, "-x", "-h", name)
                assert result.returncode == 0, result.stderr
                theirs = result.stdout.rstrip("\n")
            try:
                ours = mc.param(name, svc)
            except postfix.Unmodeled:
                continue  # machine-dependent (e.g. an unset mynetworks); the policy fails closed on it
            assert shown(ours) == theirs, (key, ours, theirs)
            compared += 1
    assert compared >= 20


MAP_KEYS = ("viktorbarzin.me", "alice@viktorbarzin.me", "@viktorbarzin.me", "sub.viktorbarzin.me", "*", ".me",
            "example.com")


@pytest.mark.parametrize("variant", [v for v in POSTCONF_VARIANTS if "map" in v.id or v.id.startswith(
    ("transport", "relay_recipient", "two transport"))], ids=lambda v: v.id)
def test_map_lookups_match_postmap(vm_files, variant):
    """First map wins, first duplicate key wins, keys fold to lower case, as postmap -q finds them."""
    files = variant_files(vm_files, variant)
    d = write_instance(files)
    mc = pack_config(files)
    for param in ("transport_maps", "relay_recipient_maps"):
        value = mc.param(param)
        specs = [s.replace("/etc/postfix/", d + "/") for s in mailconf.split_list_maps(value)]
        for key in MAP_KEYS:
            found = subprocess.run(["postmap", "-c", d, "-q", key, *specs], capture_output=True, text=True, timeout=30)
            if "duplicate entry" in found.stderr:
                # postmap keeps the first and warns; the daemons refuse the table (451), as
                # test_policy_verdicts proves: the pack reports the table as unusable.
                with pytest.raises(postfix.TableUnusable):
                    mc.lookup_first(value, key)
                continue
            theirs = found.stdout.rstrip("\n") if found.returncode == 0 else None
            assert mc.lookup_first(value, key) == theirs, (param, key, found.stderr)


# --- startup: the pack's "would not start" against a real start -------------------------------

STARTUP = [v for v in VARIANTS if re.search(r"soft_bounce = |lifetime = |message_size_limit = |dnsbl|action|"
                                            r"without =|trailing comment|relay|rendered|carriage|NEL|option|liveness", v.id)]


def pack_start_verdict(files: dict[str, str]) -> str:
    """'fatal' if the pack says some daemon would refuse the config, else 'ok'."""
    try:
        mc = pack_config(files)
        for check in (mail.never_5xx_problems, mail.queue_lifetime_problems, mail.bounce_lifetime_problems,
                      mail.drain_problems, mail.relay_domains_problems):
            for problem in check(mc, {"primaryMessageSizeLimit": 0, "queueLifetime": "30d", "bounceLifetime": "1d"}):
                if problem.startswith(mail.STARTS):
                    return "fatal"
    except postfix.WouldNotStart:
        return "fatal"
    except postfix.TableUnusable:
        return "ok"  # the daemons start; every lookup in that table then fails (451)
    except postfix.Unmodeled:
        return "unmodeled"
    return "ok"


def real_start_verdict(files: dict[str, str]) -> tuple[str, str]:
    """Start Postfix on the files (addresses, ports and paths changed only), open an SMTP
    session so postscreen and smtpd start, queue one message so cleanup, trivial-rewrite,
    qmgr and the smtp client start; 'fatal' if any daemon logged a fatal error."""
    base = lab_dir("start")
    sink = Sink(base / "primary", free_port()).start()
    relay = Relay(base / "relay", free_port(), sink.port)
    try:
        try:
            relay.create(files)
        except Exception as exc:  # postfix check refused it
            return "fatal", str(exc)
        started = subprocess.run(["postfix", "-c", str(relay.conf), "start"], capture_output=True, text=True,
                                 timeout=60)
        if started.returncode != 0:
            return "fatal", started.stderr + relay.log_text()
        try:
            relay.wait_log(r"daemon started|fatal:", timeout=30)
            # postscreen allowlists loopback (permit_mynetworks), so smtpd starts at once. A
            # 250 to EHLO proves postscreen and smtpd started; otherwise wait for their fatal.
            ehlo_ok = False
            try:
                client = Client(relay.port, timeout=10)
                client.read("banner")
                ehlo_ok = client.cmd("EHLO probe.example").code == 250
                client.close()
            except (OSError, ConnectionError):
                pass
            if not ehlo_ok:
                relay.wait_log(r"fatal:", timeout=30)
            subprocess.run(["sendmail", "-C", str(relay.conf), "-f", "probe@example.com", "alice@viktorbarzin.me"],
                           input="Subject: probe\n\nprobe\n", text=True, capture_output=True, timeout=60)
            # A delivery attempt proves cleanup, trivial-rewrite, qmgr and the smtp client ran.
            relay.wait_log(r"to=<alice@viktorbarzin\.me>.*status=|fatal:", timeout=60)
        except Exception:  # a daemon that never logs is judged by the log below
            pass
        log = relay.log_text()
        return ("fatal" if re.search(r"\bfatal:", log) else "ok"), log
    finally:
        relay.stop()
        sink.stop()


@pytest.mark.parametrize("variant", STARTUP, ids=lambda v: v.id)
def test_would_not_start_matches_a_real_start(vm_files, example_config, variant):
    files = variant_files(vm_files, variant)
    ours = pack_start_verdict(files)
    theirs, log = real_start_verdict(files)
    if ours == "unmodeled":
        pytest.fail(f"the pack cannot model {variant.id!r}")
    assert ours == theirs, log[-3000:]
