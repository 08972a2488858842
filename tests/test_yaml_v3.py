"""The stack-file reader's YAML layer against yaml.v3 itself: Debian's golang-gopkg-yaml.v3-dev
(3.0.1, the version offline/cli_config.py follows), built into a small decoder
(tests/yamlv3/decode.go) that reads a document as the Pulumi CLI does. Both readers must
refuse the same documents and decode the rest to the same Go values."""
from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from offline import cli_config
from tests.test_cli_config import EXAMPLE_TEXT, LIMITS_READ, LIMITS_REFUSED, laughs

DECODER = Path(__file__).parent / "yamlv3" / "decode.go"
GOPATH = "/usr/share/gocode"  # where Debian's golang-*-dev packages put their source
# Known, on purpose: a merge key is refused (the port does not model yaml.v3's merge).
ON_PURPOSE = ("merge key",)


@pytest.fixture(scope="session")
def yaml_v3(tmp_path_factory):
    """A function: document text -> ("error", message) or ("value", tagged value), by yaml.v3."""
    out = tmp_path_factory.mktemp("yamlv3")
    env = {**os.environ, "GO111MODULE": "off", "GOPATH": GOPATH, "GOCACHE": str(out / "cache"), "GOFLAGS": ""}
    built = subprocess.run(["go", "build", "-o", str(out / "decode"), str(DECODER)], env=env,
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr

    def decode(text: str) -> tuple[str, object]:
        done = subprocess.run([str(out / "decode")], input=text.encode(), capture_output=True, timeout=60)
        answer = cli_config.with_deep_stack(json.loads, done.stdout)  # a value may nest 10,000 deep
        return ("error", answer["error"]) if "error" in answer else ("value", answer["value"])
    return decode


def tagged(value):
    """The port's decoded value in the decoder's notation (the Go type of each scalar)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return f"b:{str(value).lower()}"
    if isinstance(value, int):
        return f"i:{value}" if value <= 2 ** 63 - 1 else f"u:{value}"
    if isinstance(value, float):
        return "f:NaN" if math.isnan(value) else f"f:{'+Inf' if value > 0 else '-Inf'}" if math.isinf(value) \
            else f"f:{cli_config._go_g(value)}"
    if isinstance(value, str):
        return f"s:{value}"
    if isinstance(value, cli_config.GoTime):
        m = value.moment
        frac = f".{m.microsecond:06d}".rstrip("0") if m.microsecond else ""
        offset = m.utcoffset()
        zone = "Z" if not offset else f"{m:%z}"[:3] + ":" + f"{m:%z}"[3:]
        return f"t:{m:%Y-%m-%dT%H:%M:%S}{frac}{zone}"
    if isinstance(value, list):
        return [tagged(v) for v in value]
    if isinstance(value, dict):
        return {k: tagged(v) for k, v in value.items()}
    raise AssertionError(f"untagged {value!r}")


def port(text: str) -> tuple[str, object]:
    try:
        return "value", tagged(cli_config._simplify(cli_config.with_deep_stack(cli_config.read_yaml, text)))
    except cli_config.CliRefusal as refusal:
        return "error", "; ".join(refusal.problems)


def agree(yaml_v3, text: str) -> None:
    theirs, ours = yaml_v3(text), port(text)
    if ours[0] == "error" and any(reason in str(ours[1]) for reason in ON_PURPOSE):
        return
    assert theirs[0] == ours[0] and (theirs[0] == "error" or theirs[1] == ours[1]), (text, theirs, ours)


SCALARS = ["020", "0o17", "0x1F", "1_000", "2e8", "0604800", "6.", ".5", "-0", "+12", ".inf", "-.Inf", ".nan", "~",
           "null", "Null", "true", "True", "yes", "on", "2026-01-01", "2026-01-01T10:00:00Z", "2026-01-01 10:00:00",
           "2026-13-01", "18446744073709551615", "18446744073709551616", "-9223372036854775808",
           "9223372036854775808", "0b101", "'quoted'", '"dq\\tx"', "!!str 5", "!!int '7'", "!!binary aGk=",
           "ssh-ed25519 AAAA", "a b", "x#y", "-", "'it''s'", "\"\\u2028\""]
KEYS = ["a", "b", "backup-mx:domains", "oci:region", "1", "true", "~", "'q'"]
BLANK = st.sampled_from([" ", "  ", "\t", " \t"])


@st.composite
def node(draw, depth=0):
    kind = draw(st.sampled_from(["scalar"] * 3 + (["flow", "block-map", "block-seq"] if depth < 3 else [])))
    if kind == "scalar":
        return ("inline", draw(st.sampled_from(SCALARS)))
    if kind == "flow":
        items = draw(st.lists(st.sampled_from(SCALARS[:20]), max_size=3))
        return ("inline", "[" + draw(st.sampled_from([", ", ",\t", ","])).join(items) + "]")
    children = draw(st.lists(node(depth + 1), min_size=1, max_size=3))
    if kind == "block-seq":
        return ("seq", children)
    return ("map", list(zip(draw(st.lists(st.sampled_from(KEYS), min_size=len(children), max_size=len(children))),
                            children, strict=True)))


def render(n, indent: int, draw) -> str:
    """A node under a key (or a dash), as text that starts where the value goes."""
    kind, body = n
    comment = draw(st.sampled_from(["", " # c", "\t# c", " \t#\tc"]))
    if kind == "inline":
        anchor = draw(st.sampled_from(["", "&x "]))
        return draw(BLANK) + anchor + body + comment + "\n"
    pad = " " * indent
    if kind == "seq":
        return comment + "\n" + "".join(f"{pad}-" + render(c, indent + 2, draw) for c in body)
    return comment + "\n" + "".join(f"{pad}{k}:" + render(c, indent + 2, draw) for k, c in body)


@st.composite
def document(draw):
    top = draw(st.lists(st.tuples(st.sampled_from(KEYS), node()), min_size=1, max_size=4))
    text = "".join(f"{k}:" + render(n, 2, draw) for k, n in top)
    if "&x " in text and draw(st.booleans()):
        text += f"{draw(st.sampled_from(KEYS))}: *x\n"
    return draw(st.sampled_from(["", "\ufeff", "# head\n", "---\n", "%YAML 1.1\n---\n", "%YAML 1.2\n---\n"])) + text


EXAMPLES = 150 if os.environ.get("HYPOTHESIS_PROFILE", "test") == "test" else 1500


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(document())
def test_the_port_reads_what_yaml_v3_reads(yaml_v3, text):
    agree(yaml_v3, text)


STACKS = [Path(__file__).resolve().parent.parent / "Pulumi.example.yaml",
          *sorted((Path(__file__).resolve().parent.parent / "examples").glob("Pulumi.*.yaml"))]


@pytest.mark.parametrize("stack", STACKS, ids=[p.name for p in STACKS])
def test_every_example_stack_reads_as_yaml_v3_reads_it(yaml_v3, stack):
    agree(yaml_v3, stack.read_text())


@pytest.mark.parametrize("text", LIMITS_READ.values(), ids=LIMITS_READ.keys())
def test_yaml_v3_reads_the_limit_cases_the_port_reads(yaml_v3, text):
    assert yaml_v3(text)[0] == "value"


@pytest.mark.parametrize("text,reason", LIMITS_REFUSED.values(), ids=LIMITS_REFUSED.keys())
def test_yaml_v3_refuses_the_limit_cases_the_port_refuses(yaml_v3, text, reason):
    verdict, message = yaml_v3(text)
    assert verdict == "error" and reason in str(message), message


def test_yaml_v3_refuses_three_levels_of_ten_aliases_beside_the_example_stack(yaml_v3):
    """decode.go allowedAliasRatio at its edge: 0.991 of the decodes come from aliases."""
    text = EXAMPLE_TEXT + laughs(3, 10)
    theirs, ours = yaml_v3(text), port(text)
    assert theirs == ("error", "yaml: document contains excessive aliasing")
    assert ours[0] == "error" and "document contains excessive aliasing" in str(ours[1]), ours
