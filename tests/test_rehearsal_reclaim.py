"""The rehearsal's one-at-a-time lock, and what a killed run leaves behind: a CI job killed
mid-rehearsal must not fail every later run on the machine. Real namespaces, links and
iptables rules; no image is booted."""
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from rehearsal import guest
from rehearsal.guest import LINK, NS, STATE, TAG, Rehearsal
from tests.helpers import ROOT

# A rehearsal that sets up its network, starts a stub, and is killed before its teardown.
KILLED = """
import os, signal, sys
from pathlib import Path
from rehearsal.guest import Rehearsal
r = Rehearsal(Path(sys.argv[1]), "", "mx2.example.org", "")
r.network()
print(r._spawn("stub", ["sleep", "600"]).pid, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def tagged_rules():
    return [line for table in ("filter", "nat")
            for line in subprocess.run(["iptables", "-t", table, "-S"], capture_output=True, text=True,
                                       check=True).stdout.splitlines() if f"--comment {TAG}" in line]


def alive(pid):
    """Running, as opposed to gone or a zombie waiting for its reaper."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_until(condition, what, timeout=30):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.1)


def work_dir():
    return Path(tempfile.mkdtemp(prefix=f"{TAG}-", dir="/var/tmp"))


def assert_nothing_left():
    assert not Path(f"/run/netns/{NS}").exists()
    assert not Path(f"/sys/class/net/{LINK}").exists()
    assert tagged_rules() == []
    assert not STATE.exists()


def test_what_a_killed_rehearsal_left_is_reclaimed_by_the_next(capfd):
    old = work_dir()
    child = subprocess.run([sys.executable, "-c", KILLED, str(old)], capture_output=True, text=True, cwd=ROOT,
                           timeout=120)
    assert child.returncode == -signal.SIGKILL, child.stderr
    stub = int(child.stdout)
    r = Rehearsal(work_dir(), "", "mx2.example.org", "")
    try:
        # What the killed run left: its namespace, link, rules, stub, state and work directory.
        assert Path(f"/run/netns/{NS}").exists() and Path(f"/sys/class/net/{LINK}").exists()
        assert len(tagged_rules()) >= 3 and alive(stub) and STATE.exists() and old.exists()
        r.network()
        wait_until(lambda: not alive(stub), f"the killed run's stub (pid {stub}) stopped")
        assert not old.exists()
        # What is there now is this rehearsal's own, and nothing else.
        assert len(tagged_rules()) == len(r.rules)
        assert f"pid {stub}" in capfd.readouterr().err
    finally:
        r.teardown()
        if alive(stub):
            os.kill(stub, signal.SIGKILL)
        subprocess.run(["rm", "-rf", str(old), str(r.work)], check=True)
    assert_nothing_left()


def test_a_second_rehearsal_is_refused_and_leaves_the_first_untouched():
    first, second = Rehearsal(work_dir(), "", "mx2.example.org", ""), Rehearsal(work_dir(), "", "mx2.example.org", "")
    try:
        first.network()
        rules = tagged_rules()
        with pytest.raises(RuntimeError, match="another rehearsal is running"):
            second.network()
        second.teardown()  # what rehearsal() does when a step fails: it must not undo the first's
        assert Path(f"/run/netns/{NS}").exists() and tagged_rules() == rules and STATE.exists()
    finally:
        first.teardown()
        subprocess.run(["rm", "-rf", str(first.work), str(second.work)], check=True)
    assert_nothing_left()


def test_a_recorded_pid_reused_by_another_process_is_not_killed(tmp_path, monkeypatch):
    """The state names pids with their start times: a pid the kernel has since given to some
    other process is left alone."""
    other = subprocess.Popen(["sleep", "600"], start_new_session=True)
    try:
        monkeypatch.setattr(guest, "STATE", tmp_path / "state.json")
        guest.STATE.write_text('{"owner": 1, "work": "", "procs": {"stub": [%d, 1]}, "forward_was": null}'
                               % other.pid)
        r = Rehearsal(tmp_path, "", "mx2.example.org", "")
        r.acquire()  # finds the state, reclaims
        r.release()
        assert other.poll() is None and not guest.STATE.exists()
    finally:
        other.kill()
        other.wait()
