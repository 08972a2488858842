"""The pack's own reader of user_data and Postfix syntax, independent of the renderers.
(Its agreement with real Postfix is proven in test_policy_differential.py.)"""
import base64
import gzip

import pytest
import yaml

from backup_mx_rules import mailconf, postfix

MAIN = "soft_bounce = yes\nrelay_domains = a.example\n  b.example\n# comment = x\nmaximal_queue_lifetime = 30\n"
MASTER = ("smtp inet n - n - 1 postscreen\n"
          "smtpd pass - - n - - smtpd\n  -o soft_bounce=no\n  -o { smtpd_milters = inet:127.0.0.1:8891 }\n"
          "qmgr unix n - n 300 1 qmgr\n")


def user_data(encoding, master=MASTER):
    if encoding == "gz+b64":
        content = base64.b64encode(gzip.compress(MAIN.encode())).decode()
    elif encoding == "b64":
        content = base64.b64encode(MAIN.encode()).decode()
    else:
        content = MAIN
    files = [{"path": "/etc/postfix/main.cf", "content": content, **({"encoding": encoding} if encoding else {})},
             {"path": "/etc/postfix/master.cf", "content": master}]
    return base64.b64encode(("#cloud-config\n" + yaml.safe_dump({"write_files": files})).encode()).decode()


@pytest.mark.parametrize("encoding", ["", "b64", "gz+b64"])
@pytest.mark.parametrize("wrap", ["base64", "gzip+base64"])
def test_reads_main_cf_whatever_the_encoding(encoding, wrap):
    text = base64.b64decode(user_data(encoding))
    value = {"base64": base64.b64encode(text).decode(),
             "gzip+base64": base64.b64encode(gzip.compress(text)).decode()}[wrap]
    mc = mailconf.from_user_data(value)
    assert mc.param("soft_bounce") == "yes"
    assert postfix.split_list(mc.param("relay_domains")) == ["a.example", "b.example"]  # continuation line
    assert postfix.time_value("q", mc.param("maximal_queue_lifetime"), "d") == 30 * 86400  # bare number = days
    assert mc.param("bounce_queue_lifetime") == "5d"  # Postfix default when unset


def test_master_cf_service_overrides():
    mc = mailconf.from_user_data(user_data(""))
    smtpd = next(s for s in mc.services if s.name == "smtpd")
    assert mc.param("soft_bounce", smtpd) == "no" and mc.param("soft_bounce") == "yes"
    assert mc.param("smtpd_milters", smtpd) == "inet:127.0.0.1:8891"


def test_an_option_the_daemon_and_postconf_read_differently_fails_closed():
    with pytest.raises(postfix.Unmodeled):
        mailconf.from_user_data(user_data("", MASTER + "relay unix - - n - - smtp -o{soft_bounce=no}\n"))


@pytest.mark.parametrize("text", [b"#!/bin/sh\necho hi\n", b"Content-Type: multipart/mixed\n",
                                  b"## template: jinja\n#cloud-config\n"])
def test_not_a_cloud_config_is_an_error(text):
    with pytest.raises(mailconf.UserDataError):
        mailconf.from_user_data(base64.b64encode(text).decode())


def test_plain_text_user_data_is_not_what_oci_takes():
    with pytest.raises(mailconf.UserDataError, match="not base64"):
        mailconf.from_user_data("#cloud-config\nwrite_files: []\n")
