"""backup-mx-extras (cloud-init/extras.sh) run for real with stub system commands: the
preauth key leaves the disk on every exit path of `tailscale up` (success, failure, hang),
and each part is retried until done without touching what already succeeded."""
import os
import stat
import subprocess
from pathlib import Path

import pytest

from tests.helpers import ROOT, run_stack

KEY = "hskey-auth-Zq7X9-single-use"

STUB = """#!/bin/bash
echo "$(basename "$0") $*" >> "$STUB_LOG"
if [ "$(basename "$0")" = tailscale ]; then
  case "$1" in
    status) exit 1 ;;
    up) for a in "$@"; do case "$a" in file:*) cat "${a#file:}" >> "$STUB_LOG.key" ;; esac; done
        case "$TAILSCALE_MODE" in ok) exit 0 ;; fail) exit 1 ;; hang) exec sleep 3600 ;; esac ;;
  esac
fi
exit 0
"""


@pytest.fixture
def sandbox(tmp_path, vm_files):
    return make_box(tmp_path, vm_files)


def make_box(tmp_path: Path, vm_files: dict, done=("exporters-and-upgrades", "certificate-timer",
                                                    "tailscale-package")) -> Path:
    bins, lib = tmp_path / "bin", tmp_path / "lib"
    bins.mkdir()
    lib.mkdir()
    for name in ("tailscale", "systemctl", "apt-get", "curl", "backup-mx-firewall"):
        (bins / name).write_text(STUB)
        (bins / name).chmod(0o755)
    (lib / "common.sh").write_text(vm_files["common.sh"])
    script = tmp_path / "backup-mx-extras"
    script.write_text(vm_files["backup-mx-extras"])
    env_file = tmp_path / "backup-mx.env"
    env_file.write_text(vm_files["backup-mx.env"])
    state = tmp_path / "state"
    state.mkdir()
    for part in done:
        (state / f"{part}.done").touch()  # those parts write system paths; enrolment is under test
    return tmp_path


def run_extras(box: Path, mode: str, timeout_s: int = 2, with_key: bool = True) -> subprocess.CompletedProcess:
    key = box / "preauth-key"
    if with_key and not key.exists():
        key.write_text(KEY)
        key.chmod(0o600)
    env = {**os.environ, "PATH": f"{box / 'bin'}:{os.environ['PATH']}", "STUB_LOG": str(box / "calls"),
           "TAILSCALE_MODE": mode, "TAILSCALE_UP_TIMEOUT": str(timeout_s),
           "BACKUP_MX_ENV": str(box / "backup-mx.env"), "BACKUP_MX_LIB": str(box / "lib"),
           "BACKUP_MX_STATE_DIR": str(box / "state"), "BACKUP_MX_PREAUTH_KEY": str(key),
           "BACKUP_MX_RUN_DIR": str(box / "run"), "BACKUP_MX_SBIN": str(box / "bin")}
    return subprocess.run(["bash", str(box / "backup-mx-extras")], env=env, capture_output=True, text=True,
                          timeout=120)


def key_traces(box: Path) -> list[str]:
    """Files anywhere under the sandbox (but the stub's own record) that still hold the key."""
    return [str(p) for p in box.rglob("*") if p.is_file() and not p.name.startswith("calls")
            and KEY in p.read_text(errors="replace")]


@pytest.mark.parametrize("mode,code", [("ok", 0), ("fail", 1), ("hang", 1)])
def test_the_preauth_key_leaves_the_disk_on_every_exit_path(sandbox, mode, code):
    result = run_extras(sandbox, mode)
    assert result.returncode == code, result.stdout + result.stderr
    assert (sandbox / "calls.key").read_text() == KEY  # tailscale up really got the key
    up = next(line for line in (sandbox / "calls").read_text().splitlines() if line.startswith("tailscale up"))
    assert "--timeout 2s" in up and "--advertise-tags tag:backup-mx" in up
    assert key_traces(sandbox) == []
    assert not (sandbox / "preauth-key").exists()
    assert (sandbox / "state" / "tailnet.done").exists() == (mode == "ok")
    run_dir = sandbox / "run"
    assert not run_dir.exists() or not any(run_dir.iterdir())
    if run_dir.exists():
        assert stat.S_IMODE(run_dir.stat().st_mode) == 0o700


def test_a_failed_enrolment_is_retried_and_done_parts_are_not_rerun(sandbox):
    assert run_extras(sandbox, "fail").returncode == 1
    calls_before = (sandbox / "calls").read_text()
    (sandbox / "preauth-key").write_text(KEY)  # the operator supplies a fresh key
    result = run_extras(sandbox, "ok")
    assert result.returncode == 0 and "all done" in result.stdout
    new_calls = (sandbox / "calls").read_text()[len(calls_before):]
    assert "apt-get" not in new_calls and "curl" not in new_calls
    assert "systemctl disable backup-mx-extras.timer" in new_calls
    assert key_traces(sandbox) == []


def test_without_a_key_enrolment_fails_loudly_and_touches_nothing_else(sandbox):
    result = run_extras(sandbox, "ok", with_key=False)
    assert result.returncode == 1
    assert "no preauth key" in result.stdout and "enrol by hand" in result.stdout
    calls = (sandbox / "calls").read_text()
    assert "tailscale up" not in calls and "postfix" not in calls


def shape_box(tmp_path: Path, stack: str, **kw) -> Path:
    from lab import files_from_run
    tmp_path.mkdir(exist_ok=True)
    return make_box(tmp_path, files_from_run(run_stack(ROOT / "examples" / stack)), **kw)


@pytest.mark.parametrize("stack,server", [(None, "--login-server https://headscale.viktorbarzin.me"),
                                          ("Pulumi.tailscale.yaml", None)])
def test_enrolment_names_the_login_server_for_headscale_only(sandbox, tmp_path, stack, server):
    """headscale: tailscale up gets the stack's login server; tailscale: the client's default
    (Tailscale's control server), so no --login-server at all."""
    box = sandbox if stack is None else shape_box(tmp_path / "shape", stack)
    assert run_extras(box, "ok").returncode == 0
    up = next(line for line in (box / "calls").read_text().splitlines() if line.startswith("tailscale up"))
    assert ("--login-server" in up) == (server is not None) and (server is None or server in up)
    assert "--authkey file:" in up and "--advertise-tags tag:backup-mx" in up and "--hostname mx2" in up


def test_without_a_tailnet_nothing_is_installed_or_enrolled_and_the_extras_finish(tmp_path):
    """tailnet none: no tailscale repository, package or enrolment; every other part runs and
    the timer is disabled (all done), although no key was ever written."""
    box = shape_box(tmp_path, "Pulumi.notailnet.yaml", done=())
    result = run_extras(box, "ok", with_key=False)
    assert result.returncode == 0 and "all done" in result.stdout, result.stdout + result.stderr
    calls = (box / "calls").read_text()
    assert "tailscale" not in calls and "pkgs.tailscale.com" not in calls, calls
    assert "systemctl disable backup-mx-extras.timer" in calls
    assert sorted(p.name for p in (box / "state").iterdir()) == [
        "certificate-timer.done", "exporters-and-upgrades.done", "readiness-timers.done"]
