"""The stack config as the program receives it, read by Pulumi.yaml's declarations.

The Pulumi CLI has already applied its own rules before the program runs
(offline/cli_config.py ports them from pkg/workspace/config.go): declared types, secrets
`secure:`, and every unset key merged as its declared default's text (mergeConfig). So here an
unset key arrives as its default, a scalar as its text, a list as JSON. This module turns those
strings into typed values and collects every problem, so that load() names every bad key at once.
"""
from __future__ import annotations

import difflib
import json
import re
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import yaml

PROJECT_FILE = Path(__file__).resolve().parent.parent.parent / "Pulumi.yaml"


class ConfigError(ValueError):
    """Invalid stack config. The message lists every bad key with what is allowed."""


class AmbiguousNumber(ValueError):
    pass


def declarations(path: Path = PROJECT_FILE) -> dict[str, dict]:
    return yaml.safe_load(path.read_text())["config"]


def decimal(text: str) -> int:
    """A plain decimal integer. The CLI passes a stack file's scalar through as its text, so
    `020` reaches the program as "020"; YAML 1.1 readers (and many people) take it as octal 16.
    Forms that readers disagree on are refused rather than guessed."""
    if re.fullmatch(r"-?(0|[1-9][0-9]*)", text.strip()):
        return int(text)
    if re.fullmatch(r"[-+]?0[0-9_]+", text.strip()):
        raise AmbiguousNumber(f"{text!r} has a leading zero, which YAML readers disagree on (octal or decimal); "
                              f"write it without the zero, e.g. {int(text.replace('_', '')):d}")
    raise ValueError(text)


class Reader:
    """Typed access to raw config strings (as Pulumi passes them), collecting errors."""

    def __init__(self, project: str, raw: Callable[[str], Optional[str]], decls: dict[str, dict]):
        self.project, self.raw, self.decls = project, raw, decls
        self.errors: list[str] = []

    def fail(self, key: str, message: str) -> None:
        self.errors.append(f"{self.project}:{key}: {message}")

    def stop_if_failed(self) -> None:
        if self.errors:
            raise ConfigError("invalid stack config:\n  " + "\n  ".join(self.errors))

    def undeclared(self, keys: Iterable[str]) -> None:
        """Keys the stack sets that Pulumi.yaml does not declare: the CLI passes them through,
        and nothing would read them."""
        for key in sorted(set(keys) - set(self.decls)):
            close = difflib.get_close_matches(key, list(self.decls), n=1)
            self.fail(key, "is not declared in Pulumi.yaml, so nothing reads it (the Pulumi CLI passes it through); "
                           + (f"did you mean {close[0]}?" if close else f"known keys: {', '.join(sorted(self.decls))}"))

    def given(self, key: str) -> bool:
        """Whether the stack sets the key to something other than its declared default."""
        text = self.raw(key)
        if text is None:
            return False
        if "default" not in self.decls[key]:
            return True
        default = self.decls[key]["default"]
        if isinstance(default, (list, dict)):
            try:
                return json.loads(text) != default
            except ValueError:
                return True
        return text != (str(default).lower() if isinstance(default, bool) else str(default))

    def values(self, skip: Iterable[str] = ()) -> dict[str, Any]:
        """Every declared key but `skip`, typed."""
        return {key: self.value(key) for key in self.decls if key not in set(skip)}

    def value(self, key: str) -> Any:
        decl = self.decls[key]
        text = self.raw(key)
        if text is None:
            if "default" not in decl:
                self.fail(key, "is required but not set (" + decl.get("description", "") + ")")
                return None
            return decl["default"]
        kind = decl["type"]
        try:
            if kind == "integer":
                return decimal(text)
            if kind == "boolean":
                return {"true": True, "false": False}[text.lower()]
            if kind == "array":
                items = json.loads(text)
                if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
                    raise ValueError
                return items
        except AmbiguousNumber as exc:
            self.fail(key, str(exc))
            return None
        except (ValueError, KeyError):
            self.fail(key, f"{text!r} is not a valid {kind}")
            return None
        return text
