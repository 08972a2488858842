"""The pack's own reader of user_data and Postfix syntax, independent of the renderers."""
import base64
import gzip
import sys

import pytest
import yaml

from conftest import ROOT

sys.path.insert(0, str(ROOT / "policy"))
from backup_mx_rules import mailconf  # noqa: E402

MAIN = "soft_bounce = yes\nrelay_domains = a.example\n  b.example\n# comment = x\nmaximal_queue_lifetime = 30\n"
MASTER = ("smtp inet n - n - 1 postscreen\n"
          "smtpd pass - - n - - smtpd\n  -o soft_bounce=no\n  -o{smtpd_milters=inet:127.0.0.1:8891}\n")


def user_data(encoding):
    if encoding == "gz+b64":
        content = base64.b64encode(gzip.compress(MAIN.encode())).decode()
    elif encoding == "b64":
        content = base64.b64encode(MAIN.encode()).decode()
    else:
        content = MAIN
    files = [{"path": "/etc/postfix/main.cf", "content": content, **({"encoding": encoding} if encoding else {})},
             {"path": "/etc/postfix/master.cf", "content": MASTER}]
    return "#cloud-config\n" + yaml.safe_dump({"write_files": files})


@pytest.mark.parametrize("encoding", ["", "b64", "gz+b64"])
@pytest.mark.parametrize("wrap", ["plain", "base64", "gzip+base64"])
def test_reads_main_cf_whatever_the_encoding(encoding, wrap):
    text = user_data(encoding)
    value = {"plain": text, "base64": base64.b64encode(text.encode()).decode(),
             "gzip+base64": base64.b64encode(gzip.compress(text.encode())).decode()}[wrap]
    mc = mailconf.from_user_data(value)
    assert mc.param("soft_bounce") == "yes"
    assert mailconf.split_list(mc.param("relay_domains")) == ["a.example", "b.example"]  # continuation line
    assert mailconf.seconds(mc.param("maximal_queue_lifetime")) == 30 * 86400  # bare number = days
    assert mc.param("bounce_queue_lifetime") == "5d"  # Postfix default when unset


def test_master_cf_service_overrides():
    mc = mailconf.from_user_data(user_data(""))
    smtpd = next(s for s in mc.services if s.name == "smtpd")
    assert mc.param("soft_bounce", smtpd) == "no" and mc.param("soft_bounce") == "yes"
    assert mc.param("smtpd_milters", smtpd) == "inet:127.0.0.1:8891"


def test_not_a_cloud_config_is_an_error():
    with pytest.raises(mailconf.UserDataError):
        mailconf.from_user_data(base64.b64encode(b"#!/bin/sh\necho hi\n").decode())
