"""docs/configuration.md, generated from Pulumi.yaml (the single declaration of every key).

    python -m offline.configdoc          # rewrite docs/configuration.md
    python -m offline.configdoc --check  # exit 1 if it differs (tests/test_docs.py runs this)
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "docs" / "configuration.md"
HEADER = """# Configuration

Generated from `Pulumi.yaml` by `python -m offline.configdoc`; edit the declaration there, then
rerun it (`tests/test_docs.py` fails while the two differ).

Every key lives in the `backup-mx:` namespace. `Pulumi.example.yaml` is a neutral starting stack
(example.org, RFC 5737 addresses, every value to replace marked `REPLACE`); `examples/` holds
one stack per deployment shape ([`shapes.md`](shapes.md)) and the ADR's seed deployment
(`examples/Pulumi.seed.yaml`), which the tests run on.

Invalid config fails at preview with exit status 2 and every bad key named, with what is
allowed, e.g. `backup-mx:queueLifetime: '101d' exceeds Postfix's 100d cap (qmgr would not
start); allowed: 1s..100d`. The policy pack re-checks the same invariants independently from
the rendered artifacts ([`policies.md`](policies.md)).

| key | type | default | meaning |
|---|---|---|---|
"""


def _default(decl: dict) -> str:
    if "default" not in decl:
        return "*(required, secret)*" if decl.get("secret") else "*(required)*"
    value = decl["default"]
    if value == "":
        return '""'
    if isinstance(value, (list, bool)):
        return json.dumps(value)
    return str(value)


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|")


def render(project: Path = ROOT / "Pulumi.yaml") -> str:
    config = yaml.safe_load(project.read_text())["config"]
    rows = [f"| `{key}` | {decl.get('type', 'string')} | {_default(decl)} | {_cell(decl.get('description', ''))} |\n"
            for key, decl in config.items()]
    return HEADER + "".join(rows)


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if TARGET.read_text() != text:
            print(f"{TARGET.relative_to(ROOT)} differs from Pulumi.yaml: run python -m offline.configdoc")
            return 1
        return 0
    TARGET.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
