"""docs/runbook.md works as pasted, for any stack: its command blocks run under bash with real jq
and a pulumi stub that answers from the stack's outputs, every value it reads resolves, every
pulumi flag is one the CLI has (tests/data/pulumi-cli-flags.json, from the CLI's Go source),
and it names only make targets and modules the repository has."""
import json
import re
import shlex
import subprocess

import pytest

from offline import program
from tests.helpers import ROOT, run_stack, stack_secrets

RUNBOOK = (ROOT / "docs" / "runbook.md").read_text()


STACKS = [ROOT / "Pulumi.example.yaml", *sorted((ROOT / "examples").glob("Pulumi.*.yaml"))]
# Every other value the runbook reads must resolve on every stack; these (NAT drain, one
# relay) also judge the shape-only ones. Neither shares a name with the seed deployment.
COMMON = ("Pulumi.example.yaml", "Pulumi.twodomains.yaml")
# Sections and outputs that exist only in one shape: they must resolve in at least one stack.
SHAPE_SECTIONS = ("## Two relays", "## MTA-STS rollout", "## Free-tier accounts")
# the NAT rules exist with the NAT drain only
SHAPE_OUTPUTS = (".mtaSts", ".wireguardPeer", ".primaryEnablement.pfsense", ".primaryEnablement.natRules")
CLI = json.loads((ROOT / "tests" / "data" / "pulumi-cli-flags.json").read_text())["flags"]
PULUMI_STUB = """#!/bin/bash
# The Pulumi CLI, stubbed: records each invocation, answers from the stack's offline outputs.
{ printf '%s\\x1f' "$@"; printf '\\x1e'; } >> "$RUNBOOK_LOG"
case "$1 $2" in
  "stack output") cat "$RUNBOOK_DIR/outputs.json" ;;
  "stack export") cat "$RUNBOOK_DIR/export.json" ;;
esac
"""
OCI_STUB = "#!/bin/bash\nprintf 'oci %s\\n' \"$*\" >> \"$RUNBOOK_DIR/oci.log\"\n"


def code_blocks(text=RUNBOOK):
    return re.findall(r"^ *```sh\n(.*?)^ *```", text, re.S | re.M)


def out_expressions(text=RUNBOOK):
    """Every `out '<jq>'` the runbook uses, with the section it appears in."""
    found = []
    section = ""
    for line in text.splitlines():
        if line.startswith("## "):
            section = line
        for expr in re.findall(r"""\bout\s+('[^']+'|[^\s)`'"|]+)""", line):
            expr = expr.strip("'")
            if expr.startswith("."):
                found.append((section, expr))
    return found


@pytest.fixture(scope="module")
def stacks(tmp_path_factory):
    """Per stack: a directory with outputs.json, a `pulumi stack export` document and stubs."""
    dirs = {}
    for path in STACKS:
        run = run_stack(path, secret_overrides=stack_secrets(path, "hskey-test"))
        base = tmp_path_factory.mktemp(path.stem.replace(".", "-"))
        (base / "outputs.json").write_text(json.dumps(program.public_outputs(run.outputs)))
        plan = program.plan(run)
        export = {"version": 3, "deployment": {"resources": [
            {"urn": r["urn"], "type": r["type"], "inputs": r["props"], "outputs": r["outputs"],
             "protect": r["options"]["protect"]} for r in plan["resources"]]}}
        (base / "export.json").write_text(json.dumps(export))
        bin_dir = base / "bin"
        bin_dir.mkdir()
        for name, text in (("pulumi", PULUMI_STUB), ("oci", OCI_STUB)):
            (bin_dir / name).write_text(text)
            (bin_dir / name).chmod(0o755)
        dirs[path.name] = base
    return dirs


def bash(base, script):
    env = {"PATH": f"{base / 'bin'}:/usr/bin:/bin", "RUNBOOK_DIR": str(base), "RUNBOOK_LOG": str(base / "pulumi.log"),
           "HOME": str(base)}
    return subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=base, env=env, capture_output=True,
                          text=True, timeout=60)


def test_the_runbook_has_commands_to_run():
    assert len(code_blocks()) >= 5 and len(out_expressions()) >= 25


@pytest.mark.parametrize("stack", [p.name for p in STACKS])
def test_every_command_block_runs_as_pasted(stacks, stack):
    """Each ```sh block, in order, under bash -euo pipefail with the runbook's own helpers (the
    first block), real jq and a pulumi stub answering from this stack's outputs."""
    base = stacks[stack]
    blocks = code_blocks()
    for block in blocks:
        result = bash(base, blocks[0] + "\n" + block)
        assert result.returncode == 0, (block, result.stderr)
    calls = [c.split("\x1f")[:-1] for c in (base / "pulumi.log").read_text().split("\x1e") if c]
    assert calls, "no pulumi invocation"
    urns = {r["urn"] for r in json.loads((base / "export.json").read_text())["deployment"]["resources"]}
    for argv in calls:
        check_flags(argv)
        for flag in ("--replace", "--target"):
            for i, arg in enumerate(argv[:-1]):
                if arg == flag:
                    assert argv[i + 1] in urns, (flag, argv[i + 1])  # exactly one URN per flag
        if argv[:2] == ["state", "unprotect"] and "--all" not in argv:
            assert len([a for a in argv[2:] if not a.startswith("-")]) == 1 and argv[2] in urns, argv


def check_flags(argv):
    words = [a for a in argv if not a.startswith("-")]
    command = " ".join(words[:2]) if " ".join(words[:2]) in CLI else words[0]
    assert command in CLI, f"pulumi {' '.join(argv)}: the stub knows no such command"
    allowed = set(CLI[command]) | set(CLI["(global)"])
    for arg in argv:
        if arg.startswith("-"):
            assert arg.split("=", 1)[0] in allowed, f"pulumi {command} has no flag {arg}"


def test_every_inline_pulumi_command_uses_flags_the_cli_has():
    helper = re.search(r"^up\(\) \{ pulumi (up [^;]*?)\"\$@\"", RUNBOOK, re.M)
    assert helper, "the runbook defines up()"
    spans = re.findall(r"`(pulumi [^`]+|up(?: [^`]+)?)`", RUNBOOK)
    assert spans
    for span in spans:
        line = span if span.startswith("pulumi ") else "pulumi " + helper.group(1) + span[2:]
        argv = [w for w in shlex.split(line.replace("$(", "(").replace('"', ""))[1:]]
        check_flags([a for a in argv if not a.startswith("(")])


@pytest.mark.parametrize("stack", [p.name for p in STACKS])
def test_every_value_the_runbook_reads_resolves(stacks, stack):
    """Real jq over this stack's outputs: no `null` on the common shape, for any stack's names."""
    base = stacks[stack]
    for section, expr in out_expressions():
        shape_only = section.startswith(SHAPE_SECTIONS) or expr.startswith(SHAPE_OUTPUTS)
        if shape_only and stack not in COMMON:
            continue
        result = bash(base, f"pulumi stack output --json | jq -re {shlex.quote(expr)}")
        if shape_only:
            continue  # judged across the stacks below
        assert result.returncode == 0 and result.stdout.strip() not in ("", "null"), (expr, result.stderr)


def test_every_shape_only_value_resolves_in_some_stack(stacks):
    for section, expr in out_expressions():
        if section.startswith(SHAPE_SECTIONS) or expr.startswith(SHAPE_OUTPUTS):
            ok = [s for s, base in stacks.items()
                  if bash(base, f"pulumi stack output --json | jq -re {shlex.quote(expr)}").returncode == 0]
            assert ok, f"{expr} ({section}) resolves in no stack"


def test_the_runbook_names_nothing_of_the_authors():
    assert "viktorbarzin" not in RUNBOOK


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
