"""First-boot rehearsal of tailnet none (examples/Pulumi.notailnet.yaml, make rehearse): the
relay boots, takes mail and finishes its extras with no tailnet, no key and no enrolment;
SSH is the homelab's break-glass rule alone. One guest at a time, as the other rehearsal
modules."""
import pytest
import yaml

import rehearsal
from tests.helpers import ROOT
from tests.rehearsal_helpers import converge, guest, rendered_postconf

NO_TAILNET = ROOT / "examples" / "Pulumi.notailnet.yaml"
HOMELAB = "198.51.100.7/32"  # the example's homelabCidr


@pytest.fixture(scope="module")
def no_tailnet():
    user_data, config = rehearsal.rendered_user_data(NO_TAILNET)
    assert config["backup-mx:tailnet"] == "none" and config["backup-mx:homelabCidr"] == HOMELAB
    with rehearsal.rehearsal(user_data, config) as r:
        converge(r, "tailnet none")
        yield r


def test_the_user_data_carries_no_tailnet_key(no_tailnet):
    paths = [f["path"] for f in yaml.safe_load(no_tailnet.user_data)["write_files"]]
    assert not [p for p in paths if "preauth" in p], paths


def test_mail_is_up_as_rendered(no_tailnet):
    assert "== backup-mx: done" in guest(no_tailnet, "cat /var/log/backup-mx-bootstrap.log")
    assert guest(no_tailnet, "systemctl is-active postfix").strip() == "active"
    assert guest(no_tailnet, "postconf -n") == rendered_postconf(no_tailnet)
    assert no_tailnet.smtp_banner().startswith("220")


def test_the_extras_finish_without_a_tailnet(no_tailnet):
    """Every part but the tailnet's is done and the retry timer is off: nothing is left to
    retry, and no tailscale package or state was ever installed."""
    def finished():
        return guest(no_tailnet, "systemctl is-enabled backup-mx-extras.timer || true").strip() == "disabled"
    no_tailnet.wait("extras all done", finished, 600, step=2)
    done = sorted(guest(no_tailnet, "ls /var/lib/backup-mx").split())
    assert done == ["certificate-timer.done", "exporters-and-upgrades.done", "readiness-timers.done"], done
    assert guest(no_tailnet, "dpkg-query -W tailscale 2>/dev/null || echo absent").strip() == "absent"
    assert guest(no_tailnet, "test -e /etc/apt/sources.list.d/tailscale.list && echo present || true").strip() == ""
    assert guest(no_tailnet, "test -e /var/lib/tailscale && echo present || true").strip() == ""


def test_ssh_is_the_homelab_break_glass_rule_alone(no_tailnet):
    accepts = [ln for ln in guest(no_tailnet, "iptables -S INPUT").splitlines() if "--dport 22" in ln]
    assert accepts == [f"-A INPUT -s {HOMELAB} -p tcp -m tcp --dport 22 -j ACCEPT"], accepts
    saved = guest(no_tailnet, "cat /etc/iptables/rules.v4")
    assert [ln for ln in saved.splitlines() if "--dport 22" in ln] == accepts
