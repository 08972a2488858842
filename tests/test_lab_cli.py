"""make lab's own checks: bad or equal ports are refused before anything starts, with exit 2
and no traceback, and nothing is left running."""
import subprocess
import sys

import pytest

from lab.__main__ import RUN, STATE, lab_ports
from lab.instance import LabError
from tests.helpers import ROOT


@pytest.mark.parametrize("env,expected", [
    ({"LAB_PORT": "abc"}, "LAB_PORT='abc' is not a TCP port; allowed: 1..65535"),
    ({"LAB_DRAIN_PORT": "0"}, "LAB_DRAIN_PORT='0' is not a TCP port"),
    ({"LAB_PORT": "70000"}, "LAB_PORT='70000' is not a TCP port"),
    ({"LAB_PORT": "2600", "LAB_DRAIN_PORT": "2600"}, "LAB_PORT and LAB_DRAIN_PORT are both 2600"),
])
def test_bad_lab_ports_are_refused_before_anything_starts(env, expected):
    with pytest.raises(LabError) as err:
        lab_ports(env)
    assert expected in str(err.value)
    proc = subprocess.run([sys.executable, "-m", "lab", "up"], cwd=ROOT, env={"PATH": "/usr/bin:/bin", **env},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and expected in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not STATE.exists() and not (RUN / "relay").exists()  # nothing started, nothing to clean


def test_default_lab_ports():
    assert lab_ports({}) == (2525, 2526)
