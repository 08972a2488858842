"""The rendered rspamd snippets inside a real rspamd config tree (Debian's rspamd package)."""
import shutil
import subprocess

import pytest

from offline import program


def tree(tmp_path, snippets):
    root = tmp_path / "rspamd"
    shutil.copytree("/etc/rspamd", root)
    for name, text in snippets.items():
        (root / "local.d" / name).write_text(text.replace("/etc/rspamd", str(root)))
    return root


def rspamadm(root, *args):
    return subprocess.run(["rspamadm", f"--var=LOCAL_CONFDIR={root}", *args, "-c", str(root / "rspamd.conf")],
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def snippets(example_run):
    r = program.public_outputs(example_run.outputs)["primaryEnablement"]["rspamd"]
    return {"external_relay.conf": r["externalRelayConf"], "force_actions.conf": r["forceActionsConf"],
            r["relayMap"]["file"].rsplit("/", 1)[-1]: r["relayMap"]["content"]}


def test_snippets_pass_configtest_and_take_effect(tmp_path, snippets):
    root = tree(tmp_path, snippets)
    test = rspamadm(root, "configtest")
    assert "syntax OK" in test.stdout, test.stdout + test.stderr
    relay = rspamadm(root, "configdump", "external_relay").stdout
    assert "enabled = true;" in relay and 'strategy = "ip_map";' in relay
    assert f'ip_map = "{root}/local.d/backup_mx_relays.map";' in relay
    actions = rspamadm(root, "configdump", "force_actions").stdout
    assert 'action = "add header";' in actions and 'expression = "BACKUP_MX";' in actions
    assert '"reject",' in actions and '"soft reject",' in actions


def test_a_broken_snippet_fails_configtest(tmp_path, snippets):
    broken = dict(snippets, **{"external_relay.conf": snippets["external_relay.conf"].rstrip().rstrip("}")})
    test = rspamadm(tree(tmp_path, broken), "configtest")
    assert "syntax BAD" in test.stdout + test.stderr
