"""The relay's Postfix configuration as each Postfix daemon will see it.

user_data -> cloud-init's files (cloudinit.py) -> main.cf, master.cf and maps parsed the
way Postfix parses them (postfix.py) -> the effective value of a parameter *in the daemon
that uses it*: a `-o` in master.cf overrides main.cf for that one service, and an unset
parameter takes Postfix's default (postconf -d of 3.7, checked against the real thing in
tests/test_policy_differential.py).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from . import cloudinit, environment
from .cloudinit import UserDataError
from .postfix import (
    Service,
    TableUnusable,
    Unmodeled,
    WouldNotStart,
    expand,
    logical_lines,
    parse_main_cf,
    parse_master_cf,
    split_list,
)

__all__ = ["MailConfig", "Service", "TableUnusable", "Unmodeled", "UserDataError", "WouldNotStart", "from_user_data",
           "split_list"]

_DEFAULTS = json.loads((Path(__file__).with_name("postfix_defaults.json")).read_text())["defaults"]
POSTSCREEN_ACTIONS = ("ignore", "enforce", "drop")
TABLE_FILE_TYPES = ("texthash",)  # read from the rendered file at startup; no postmap step to model


@dataclass
class MailConfig:
    files: dict[str, str]          # /etc/postfix/<name> -> text, as the relay runs them
    main: dict[str, str]           # main.cf name -> raw value (last setting wins)
    services: list[Service]

    # --- values -------------------------------------------------------------------------
    def raw(self, name: str, service: Service | None = None) -> str | None:
        if service is not None and name in service.options:
            return service.options[name]
        if name in self.main:
            return self.main[name]
        if name == "mydomain" and "myhostname" in self.main:
            return self.param("myhostname", service).partition(".")[2]
        return _DEFAULTS.get(name)

    def param(self, name: str, service: Service | None = None) -> str:
        """The value `service` (None: main.cf) uses, $macros expanded as Postfix does."""
        value = self.raw(name, service)
        if value is None:
            raise Unmodeled(f"{name} depends on the VM (unset here, and Postfix derives it at run time)")

        def lookup(other: str) -> str | None:
            found = self.raw(other, service)
            if found is None and other in ("myhostname", "mynetworks"):
                raise Unmodeled(f"{name} uses ${other}, which Postfix derives from the VM at run time")
            return found
        return expand(value, lookup)

    def is_set(self, name: str, service: Service | None = None) -> bool:
        return (service is not None and name in service.options) or name in self.main

    # --- services -----------------------------------------------------------------------
    def services_running(self, *commands: str, kind: str | None = None) -> list[Service]:
        return [s for s in self.services if s.command in commands and (kind is None or s.kind == kind)]

    def service(self, name: str, kind: str = "unix") -> Service | None:
        return next((s for s in self.services if s.name == name and s.kind == kind), None)

    def daemon(self, service_param: str, commands: tuple[str, ...]) -> Service:
        """The service Postfix's clients reach by `<x>_service_name` (qmgr, rewrite, cleanup)."""
        name = self.param(service_param)
        svc = self.service(name)
        if svc is None:
            raise WouldNotStart(f"master.cf has no '{name} unix' service ({service_param} = {name})")
        if svc.command not in commands:
            raise Unmodeled(f"master.cf service '{name} unix' runs {svc.command!r}, not {' or '.join(commands)}")
        return svc

    # --- lookup tables ------------------------------------------------------------------
    def table(self, spec: str) -> list[tuple[str, str]]:
        """Rows of one lookup table, in file order, keys folded to lower case as Postfix's
        indexed tables do. Only tables whose whole content the pack can see are modeled."""
        kind, sep, rest = spec.strip().partition(":")
        if not sep:
            raise WouldNotStart(f"{spec!r} is not a lookup table (type:name)")
        if kind == "inline":
            body = rest.strip()
            if not (body.startswith("{") and body.endswith("}")):
                raise WouldNotStart(f"inline table {spec!r} needs {{ }} around its entries")
            rows = []
            for item in _inline_items(body[1:-1]):
                key, _, value = item.partition("=")
                rows.append((key.strip().lower(), value.strip()))
            return rows
        if kind == "static":
            return [("*", rest.strip().strip("{}").strip())]
        if kind in TABLE_FILE_TYPES:
            text = self.files.get(rest)
            if text is None:
                raise Unmodeled(f"table {spec!r} is not a file the relay's user_data writes")
            rows = []
            for line in _table_lines(text):
                parts = line.split(None, 1)
                if '"' in line or "\\" in line:
                    raise Unmodeled(f"table {spec!r} uses quotes or backslashes, which the pack does not model")
                key = parts[0].lower()
                if any(k == key for k, _ in rows):
                    # postmap -q warns and keeps the first; the daemons open the table as
                    # unusable (dict_thash without DICT_FLAG_DUP_WARN), so every lookup fails.
                    raise TableUnusable(f"table {spec!r} lists {parts[0]!r} twice: Postfix's daemons then refuse "
                                        "the whole table and answer 451 'Temporary lookup failure' to every "
                                        "recipient; keep one row per key")
                rows.append((key, parts[1].strip() if len(parts) > 1 else ""))
            return rows
        raise Unmodeled(f"lookup table type {kind!r} in {spec!r} is not modeled (use texthash: or inline:)")

    def lookup_first(self, maps: str, key: str) -> str | None:
        """Postfix's maps_find(): the first map that has the key wins, and within one table the
        first of two duplicate keys wins (postmap warns and keeps it)."""
        for spec in split_list_maps(maps):
            rows = self.table(spec)
            if spec.strip().partition(":")[0] == "static":  # answers every key with its one value
                return rows[0][1]
            for k, v in rows:
                if k == key.lower():
                    return v
        return None


def split_list_maps(value: str) -> list[str]:
    """Map lists split on commas and whitespace, but never inside inline:{...}."""
    out, depth, cur = [], 0, ""
    for ch in value:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if depth == 0 and (ch in ", \t\n\r"):
            if cur:
                out.append(cur)
            cur = ""
        else:
            cur += ch
    if cur:
        out.append(cur)
    return out


def _inline_items(body: str) -> list[str]:
    items, depth, cur = [], 0, ""
    for ch in body:
        depth += (ch == "{") - (ch == "}")
        if depth == 0 and ch in ", \t":
            if cur.strip():
                items.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        items.append(cur.strip())
    return [i[1:-1].strip() if i.startswith("{") and i.endswith("}") else i for i in items]


def _table_lines(text: str) -> list[str]:
    """postmap(1) input: '#' comments, whitespace lines, indented continuation lines."""
    return logical_lines(text, "lookup table")


def from_user_data(value: object) -> MailConfig:
    doc = cloudinit.cloud_config(cloudinit.decode(value))
    files = cloudinit.written_files(doc)
    # recipients list: the pinned list sync may replace relay_recipients (only with addresses
    # of the protected domains, each OK); the staged copy, the first boot's, is what is judged.
    shape = {"all", "list"} if environment.recipients() == "list" else {"all"}
    edits = cloudinit.post_render_edits(doc, files, cloudinit.sanctioned_writers(files, shape))
    if edits:
        raise UserDataError("the relay's Postfix config would be changed after rendering: " + "; ".join(edits[:3]))
    postfix = cloudinit.postfix_files(files)
    main_path, master_path = cloudinit.POSTFIX_DIR + "/main.cf", cloudinit.POSTFIX_DIR + "/master.cf"
    if main_path not in postfix or master_path not in postfix:
        raise UserDataError(f"user_data writes no main.cf and master.cf under {cloudinit.STAGING_DIR} "
                            f"(or {cloudinit.POSTFIX_DIR})")
    return MailConfig(postfix, parse_main_cf(postfix[main_path], "main.cf"),
                      parse_master_cf(postfix[master_path], "master.cf"))

