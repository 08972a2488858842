"""The docs cite real things: every repository path and every `tests/…::test_name` that
README.md and docs/*.md name in backticks exists, so a reader following one lands somewhere."""
from __future__ import annotations

import re

import pytest

from tests.helpers import ROOT

# The ADR is the design record as written (its own paths mapped to ours in its first table).
DOCS = [ROOT / "README.md", *sorted(p for p in (ROOT / "docs").glob("*.md") if p.name != "adr-0019.md")]
TOP = {p.name for p in ROOT.iterdir()}
# `path` or `path::name`, where path starts at a top-level entry of the repository
CITED = re.compile(r"`([A-Za-z0-9_.-]+/[A-Za-z0-9_./-]*[A-Za-z0-9_])(?:::([A-Za-z0-9_]+))?`")


def citations():
    for doc in DOCS:
        for path, name in CITED.findall(doc.read_text()):
            if path.split("/")[0] in TOP and "*" not in path and "<" not in path:
                yield doc.name, path, name


@pytest.mark.parametrize("doc", [d.name for d in DOCS])
def test_every_cited_path_and_test_exists(doc):
    missing = []
    for where, path, name in citations():
        if where != doc:
            continue
        target = ROOT / path
        if not target.exists():
            missing.append(path)
        elif name and not re.search(rf"^(?:async )?def {re.escape(name)}\b|^class {re.escape(name)}\b",
                                    target.read_text(), re.M):
            missing.append(f"{path}::{name}")
    assert not missing, missing


def test_the_docs_cite_tests_at_all():
    assert sum(1 for _, path, name in citations() if path.startswith("tests/") and name) >= 10


def test_the_configuration_reference_is_generated_from_pulumi_yaml():
    """docs/configuration.md is Pulumi.yaml's declarations, rendered; a key added, removed or
    redescribed there without rerunning `python -m offline.configdoc` fails here."""
    from offline import configdoc
    assert (ROOT / "docs" / "configuration.md").read_text() == configdoc.render()
    import yaml
    keys = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["config"]
    text = (ROOT / "docs" / "configuration.md").read_text()
    assert all(f"| `{k}` |" in text for k in keys)


LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


@pytest.mark.parametrize("doc", [*DOCS, ROOT / "bench" / "README.md"], ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(doc):
    broken = [link for link in LINK.findall(doc.read_text())
              if "://" not in link and not link.startswith("mailto:") and not (doc.parent / link).exists()]
    assert not broken, broken


def test_the_readme_is_short():
    """A newcomer's first page: what, the guarantees, prerequisites, quick start, links."""
    assert len((ROOT / "README.md").read_bytes()) <= 10 * 1024
