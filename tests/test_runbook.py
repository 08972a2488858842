"""docs/runbook.md names only outputs the stack exports, and only make targets and modules
the repository has."""
import json
import re

import pytest

from offline import program
from tests.helpers import ROOT, run_stack

RUNBOOK = (ROOT / "docs" / "runbook.md").read_text()
JQ_PATH = re.compile(r"""out\s+'?(\.[^\s')"|`]+)""")


def resolve(data, path):
    """Walk a jq path such as .mxRecords["viktorbarzin.me"].backup.preference or .domains[]."""
    for token in re.findall(r'\.([A-Za-z_][A-Za-z0-9_]*)|\["([^"]+)"\]|(\[\])', path):
        key = token[0] or token[1]
        if token[2]:
            assert isinstance(data, list), path
            data = data[0]
            continue
        assert isinstance(data, dict) and key in data, f"{path}: no {key!r}"
        data = data[key]
    return data


def test_runbook_uses_jq_paths():
    assert len(JQ_PATH.findall(RUNBOOK)) >= 15


@pytest.fixture(scope="module")
def shape_outputs(example_run):
    """The outputs of the seed stack and of every example shape (some outputs exist in one only)."""
    runs = [example_run]
    for path in sorted((ROOT / "examples").glob("Pulumi.*.yaml")):
        _, secret, _ = program.read_stack_file(path, "backup-mx")
        runs.append(run_stack(path, secret_overrides=secret))
    return [json.loads(json.dumps(program.public_outputs(r.outputs))) for r in runs]


@pytest.mark.parametrize("path", sorted(set(JQ_PATH.findall(RUNBOOK))))
def test_every_output_path_exists(shape_outputs, path):
    problems = []
    for outputs in shape_outputs:
        try:
            resolve(outputs, path)
            return
        except AssertionError as exc:
            problems.append(str(exc))
    pytest.fail(f"{path} exists in no stack shape's outputs: {problems}")


def test_make_targets_exist():
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][a-z-]*):", makefile, re.M))
    used = set(re.findall(r"`make ([a-z-]+)", RUNBOOK)) | set(re.findall(r"make ([a-z-]+)`", RUNBOOK))
    assert used and used <= targets, used - targets


def test_repository_commands_exist():
    for module in re.findall(r"python -m ([a-z_.]+)", RUNBOOK):
        assert (ROOT / module.replace(".", "/")).with_suffix(".py").exists() or (ROOT / module).is_dir(), module


def test_no_hard_coded_addresses():
    assert not re.findall(r"\b(?:\d{1,3}\.){3}\d{1,3}\b", RUNBOOK)


def test_runbook_covers_every_alert(example_run):
    import yaml
    rules = yaml.safe_load(program.public_outputs(example_run.outputs)["monitoring"]["backup-mx-rules.yml"])
    for rule in rules["groups"][0]["rules"]:
        assert f"`{rule['alert']}`" in RUNBOOK
