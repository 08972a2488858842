"""First-boot rehearsal, fault cases (make rehearse): each must still bring mail up, and a
user-data that hangs must be reported as a hang. One guest at a time: the normal boot's
module (test_rehearsal.py) has torn its guest down before these start."""
import re

import pytest
import yaml

import rehearsal
from rehearsal import Faults
from tests.rehearsal_helpers import converge, guest, rendered_postconf

FAULTS = {
    "TCP blocked for 90 s, DNS answering": Faults(tcp_blocked_s=90),
    "package mirror unreachable for 150 s": Faults(mirror_blocked_s=150),
    "tailscale repository down all boot": Faults(tailscale_repo_down=True),
    "headscale never answers": Faults(headscale_silent=True),
}


@pytest.mark.parametrize("name", list(FAULTS))
def test_fault_still_brings_mail_up(rendered, name):
    user_data, config = rendered
    with rehearsal.rehearsal(user_data, config, FAULTS[name]) as r:
        converge(r, name)
        assert "== backup-mx: done" in guest(r, "cat /var/log/backup-mx-bootstrap.log")
        assert guest(r, "systemctl is-active postfix").strip() == "active"
        assert guest(r, "postconf -n") == rendered_postconf(r)
        log = guest(r, "cat /var/log/backup-mx-bootstrap.log")
        done = guest(r, "ls /var/lib/backup-mx").split()
        if name.startswith("TCP"):
            assert "no TCP egress" in log
        if name.startswith("package mirror"):
            assert re.search(r"attempt \d+/\d+ failed: apt_install postfix", log)
        if name.startswith("tailscale"):
            assert "tailscale-package.done" not in done and "exporters-and-upgrades.done" in done
            assert guest(r, "systemctl is-enabled backup-mx-extras.timer").strip() == "enabled"
        if name.startswith("headscale"):
            assert "tailnet.done" not in done and "tailscale up" in guest(r, "cat /var/lib/tailscale/calls")
            assert guest(r, "test -e /etc/backup-mx/headscale-preauth-key && echo present").strip() == ""
            assert guest(r, "ls -A /run/backup-mx").strip() == ""
            # SSH stays where the image had it: the tailnet never came up.
            assert "--dport 22 -j ACCEPT" in guest(r, "iptables -S INPUT")


def test_a_user_data_that_hangs_is_reported_within_the_deadline(rendered):
    """The production bug: without the debconf preseed and DEBIAN_FRONTEND, postfix's install
    waits on a whiptail dialog forever. The rehearsal must say so, not wait with it."""
    user_data, config = rendered
    broken = yaml.safe_load(user_data)
    for f in broken["write_files"]:
        if f["path"].endswith("common.sh"):
            f["content"] = f["content"].replace("export DEBIAN_FRONTEND=noninteractive", "")
        if f["path"].endswith("debconf.txt"):
            f["content"] = ""
    text = "#cloud-config\n" + yaml.safe_dump(broken, sort_keys=False)
    with rehearsal.rehearsal(text, config) as r:
        with pytest.raises(TimeoutError, match="port 25"):
            r.wait("port 25 answering", lambda: r.smtp_banner().startswith("220"), 240, step=2)
        waiting = guest(r, "ps -eo comm= | grep -E '^(whiptail|dialog|debconf|frontend)' || true")
        assert waiting.strip(), "no debconf dialog is waiting: the hang has another cause"
