"""recipients (catchall | list | verify): the setting, and the pack's judgment of each mode:
recipient verification (policy/backup_mx_rules/mail.py::verification_problems, never-5xx) and
the list sync's files (relay_files.json, shape "list", relay-user-data). What each mode does on
real Postfix, under spam and through an outage, is tests/test_everyday_spam.py; the list sync
itself is tests/test_recipient_list.py."""
import copy

import pytest

from components import settings
from offline import program
from tests.helpers import REQUIRED, edit_file, resource, run_stack, set_main_cf, set_user_data_doc, user_data_doc
from tests.pack_mutations import MAIL_POLICIES, assert_reported_only, master_option, reported

LIST_URL = "https://mail.example.net/recipients.txt"


def _load(value, **more):
    raw = {**REQUIRED, "recipients": value, **more}
    return settings.load("backup-mx", raw.get, tailnet_key=settings.SecretConfig("k", True))


def test_the_default_is_the_adrs_catch_all():
    assert settings.load("backup-mx", REQUIRED.get, tailnet_key=settings.SecretConfig("k", True)).recipients == \
        "catchall"


@pytest.mark.parametrize("value", ["Verify", "lists", "", "verify,catchall"])
def test_an_unknown_mode_is_refused_naming_the_key_and_the_modes(value):
    with pytest.raises(settings.ConfigError) as err:
        _load(value)
    assert f"backup-mx:recipients: {value!r} is not allowed; allowed: catchall, list, verify" in str(err.value)


@pytest.mark.parametrize("mode,url,expected", [
    ("list", None, "recipientListUrl: is required with recipients list"),
    ("list", "http://mail.example.net/r.txt", "recipientListUrl: 'http://mail.example.net/r.txt' must use https://"),
    ("list", "https://mail.example.net/r.txt?$(id)", "recipientListUrl: 'https://mail.example.net/r.txt?$(id)' must "
                                                     "not carry credentials, a query or a fragment"),
    ("catchall", LIST_URL, "recipientListUrl: is set but recipients is catchall"),
    ("verify", LIST_URL, "recipientListUrl: is set but recipients is verify"),
])
def test_the_list_url_is_required_with_list_and_refused_without(mode, url, expected):
    with pytest.raises(settings.ConfigError) as err:
        _load(mode, **({"recipientListUrl": url} if url else {}))
    assert f"backup-mx:{expected}" in str(err.value)


def test_a_list_stack_loads():
    s = _load("list", recipientListUrl=LIST_URL)
    assert (s.recipients, s.recipient_list_url) == ("list", LIST_URL)


@pytest.fixture(scope="module")
def verify_plan():
    return program.plan(run_stack(overrides={"recipients": "verify"}), redacted=False)


def test_the_verify_plan_passes_the_pack(policies, verify_plan):
    violations = policies.check(verify_plan)
    assert not [v.message for v in violations if v.level == "mandatory"]


def _without_verify_config(plan):
    plan = dict(plan)
    plan["config"] = {k: v for k, v in plan["config"].items() if not k.endswith(":recipients")}
    return plan


VERIFY_MUTATIONS = {
    # the outage rule: a probe that cannot reach the primary must take the mail
    "defer code 450 (outage mail to uncached addresses deferred)": (
        lambda p: set_main_cf(p, "unverified_recipient_defer_code", "450"), "never-5xx"),
    "defer code dropped (Postfix's default 450)": (
        lambda p: set_main_cf(p, "unverified_recipient_defer_code", None), "never-5xx"),
    "defer code 450 on the smtpd service only": (
        lambda p: edit_file(p, "/master.cf", master_option("smtpd ", "unverified_recipient_defer_code=450")),
        "never-5xx"),
    "reject code 550": (lambda p: set_main_cf(p, "unverified_recipient_reject_code", "550"), "never-5xx"),
    "reject code 250 (junk taken)": (lambda p: set_main_cf(p, "unverified_recipient_reject_code", "250"),
                                     "never-5xx"),
    "tempfail action reject": (lambda p: set_main_cf(p, "unverified_recipient_tempfail_action", "reject"),
                               "never-5xx"),
    # the env file says verify too, so the contract's check reports the mismatch as well
    "verification with stack config recipients catchall": (_without_verify_config, {"never-5xx", "relay-user-data"}),
    "sender verification (probes to port 25)": (
        lambda p: set_main_cf(p, "smtpd_recipient_restrictions",
                              "reject_non_fqdn_recipient, reject_unverified_sender, reject_unverified_recipient, "
                              "check_recipient_access inline:{ viktorbarzin.me=OK }, reject"), "never-5xx"),
    "probes from a named sender": (lambda p: set_main_cf(p, "address_verify_sender", "probe@example.com"),
                                   "postfix-parameters"),
    "probes routed elsewhere": (lambda p: set_main_cf(p, "address_verify_relayhost", "[192.0.2.1]:25"),
                                "postfix-parameters"),
}


@pytest.mark.parametrize("case", sorted(VERIFY_MUTATIONS))
def test_a_verify_mutation_is_reported_by_its_policy_only(policies, verify_plan, case):
    assert_reported_only(policies, verify_plan, *VERIFY_MUTATIONS[case])


CATCHALL_MUTATIONS = {
    "verification added by hand": (
        lambda p: set_main_cf(p, "smtpd_recipient_restrictions",
                              "reject_non_fqdn_recipient, reject_unverified_recipient, "
                              "check_recipient_access inline:{ viktorbarzin.me=OK }, reject"), "never-5xx"),
    "verification hidden in an access map's action": (
        lambda p: set_main_cf(p, "smtpd_recipient_restrictions",
                              "reject_non_fqdn_recipient, check_recipient_access "
                              "inline:{ viktorbarzin.me=reject_unverified_recipient }, "
                              "check_recipient_access inline:{ viktorbarzin.me=OK }, reject"), "never-5xx"),
}


@pytest.mark.parametrize("case", sorted(CATCHALL_MUTATIONS))
def test_verification_without_the_verify_mode_is_reported(policies, example_plan, case):
    assert_reported_only(policies, example_plan, *CATCHALL_MUTATIONS[case])


def test_the_message_names_the_setting_and_the_value(policies, verify_plan):
    violations = policies.check(set_main_cf(verify_plan, "unverified_recipient_defer_code", "450"))
    assert reported(violations) == {"never-5xx"}
    text = " ".join(v.message for v in violations)
    assert "unverified_recipient_defer_code = '450'" in text and "must be 250" in text


@pytest.fixture(scope="module")
def list_plan():
    return program.plan(run_stack(overrides={"recipients": "list", "recipientListUrl": LIST_URL}), redacted=False)


def test_the_list_plan_passes_the_pack(policies, list_plan):
    assert not [v.message for v in policies.check(list_plan) if v.level == "mandatory"]


def _config(plan, **changes):
    plan = dict(plan)
    plan["config"] = {**plan["config"], **{f"backup-mx:{k}": v for k, v in changes.items()}}
    return plan


# A list sync that is not the pinned asset, or not in this shape, is an unknown writer of the
# recipient map: the contract reports it, and every mail policy fails closed.
UNKNOWN_WRITER = {"relay-user-data", *MAIL_POLICIES}
LIST_MUTATIONS = {
    "the sync script edited": (
        lambda p: edit_file(p, "/backup-mx-recipients", lambda t: t.replace("MAX_BYTES=10485760", "MAX_BYTES=1")),
        UNKNOWN_WRITER),
    "the sync's timer dropped": (
        lambda p: _drop_file(p, "/backup-mx-recipients.timer"), "relay-user-data"),
    "the env file's list URL differs from the stack's": (
        lambda p: edit_file(p, "/backup-mx.env", lambda t: t.replace(LIST_URL, "https://evil.example.org/r.txt")),
        "relay-user-data"),
    "the stack says catchall but the VM syncs a list": (
        lambda p: _config(p, recipients="catchall", recipientListUrl=""), UNKNOWN_WRITER),
}


def _drop_file(plan, suffix):
    plan = copy.deepcopy(plan)
    inst = resource(plan, "instance:Instance")
    doc = user_data_doc(inst)
    doc["write_files"] = [f for f in doc["write_files"] if not f["path"].endswith(suffix)]
    set_user_data_doc(inst, doc)
    return plan


@pytest.mark.parametrize("case", sorted(LIST_MUTATIONS))
def test_a_list_mutation_is_reported_by_its_policy_only(policies, list_plan, case):
    assert_reported_only(policies, list_plan, *LIST_MUTATIONS[case])
