"""The pack's own model of how Postfix 3.7/3.8 reads its configuration.

Every rule here follows Postfix's C source (file and function named on each), not the
renderer's formatting, and `tests/test_policy_differential.py` holds it to `postconf`
on a real instance. Two kinds of failure are kept apart:

- `WouldNotStart`: Postfix itself refuses the text (a fatal error at startup or when the
  daemon that reads the value starts), so the relay would not serve mail;
- `Unmodeled`: the pack cannot tell what Postfix would do (it fails closed on it).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

# util/sys_defs.h ISSPACE: isascii && isspace.
SPACE = " \t\n\v\f\r"
LONG_MAX = 2**63 - 1
INT_MAX = 2**31 - 1
TIME_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
LIFETIME_MAX = 8640000  # qmgr.c: maximal_queue_lifetime and bounce_queue_lifetime, min 0, max 100d
MASTER_TYPES = ("inet", "unix", "unix-dgram", "fifo", "pass")
# master/*_server.c GETOPT(): options that take a value.
DAEMON_OPTS_WITH_VALUE = "imnorst"
DAEMON_OPTS = "cdDilmnorsStuvVz"


class WouldNotStart(ValueError):
    """Postfix refuses this configuration: the relay would not start (or a daemon exits)."""


class Unmodeled(ValueError):
    """The pack cannot tell what Postfix would do with this text."""


class TableUnusable(ValueError):
    """Postfix daemons open this lookup table as unusable: every lookup fails (451)."""


def logical_lines(text: str, path: str) -> list[str]:
    """util/readlline.c readllines(): only '\\n' ends a physical line; blank and comment
    lines never end a logical line; a line that starts with whitespace continues the
    previous one (its text is appended as is); a logical line that itself starts with
    whitespace (an indented first line) is dropped with a warning."""
    if "\0" in text:
        raise Unmodeled(f"{path} contains a NUL byte (Postfix ignores text after it)")
    lines: list[str] = []
    current: str | None = None
    for raw in text.split("\n"):
        stripped = raw.lstrip(SPACE)
        if not stripped or stripped.startswith("#"):
            continue
        if raw[0] in SPACE and current is not None:
            current += raw
            continue
        if current is not None:
            lines.append(current)
        current = raw
    if current is not None:
        lines.append(current)
    return [line for line in lines if line[0] not in SPACE]


def split_nameval(text: str, where: str) -> tuple[str, str]:
    """util/split_nameval.c: name ends at whitespace or '='; value is trimmed."""
    body = text.lstrip(SPACE)
    if not body or body[0] == "=":
        raise WouldNotStart(f"{where}: missing attribute name: {text.strip()!r}")
    end = 0
    while end < len(body) and body[end] not in SPACE and body[end] != "=":
        end += 1
    name, rest = body[:end], body[end:].lstrip(SPACE)
    if not rest.startswith("="):
        raise WouldNotStart(f"{where}: missing '=' after attribute name: {text.strip()!r}")
    return name, rest[1:].strip(SPACE)


def parse_main_cf(text: str, path: str = "main.cf") -> dict[str, str]:
    """util/dict.c dict_load_fp(): the last setting of a name wins."""
    params: dict[str, str] = {}
    for line in logical_lines(text, path):
        name, value = split_nameval(line, path)
        params[name] = value
    return params


# --- master.cf ---------------------------------------------------------------------------

@dataclass
class Service:
    name: str
    kind: str
    private: str
    unpriv: str
    chroot: str
    wakeup: str
    maxproc: str
    command: str
    args: list[str]
    options: dict[str, str] = field(default_factory=dict)  # -o overrides, in the daemon's order
    operands: list[str] = field(default_factory=list)  # arguments after the options

    @property
    def key(self) -> str:
        return f"{self.name}/{self.kind}"


def _tokens(text: str, where: str) -> list[str]:
    """util/mystrtok.c mystrtokq() with '{}', then extpar() on tokens that start with '{'."""
    out: list[str] = []
    i = 0
    while True:
        while i < len(text) and text[i] in SPACE:
            i += 1
        if i >= len(text):
            return out
        start, level = i, 0
        while i < len(text):
            ch = text[i]
            if ch == "{":
                level += 1
            elif level > 0 and ch == "}":
                level -= 1
            elif level == 0 and ch in SPACE:
                break
            i += 1
        token = text[start:i]
        if token.startswith("{"):
            token = _extpar(token, where)
        out.append(token)


def _extpar(token: str, where: str) -> str:
    level = 0
    for n, ch in enumerate(token):
        level += ch == "{"
        level -= ch == "}"
        if level == 0:
            if n != len(token) - 1:
                raise WouldNotStart(f"{where}: syntax error after '}}' in {token!r}")
            return token[1:-1].strip(SPACE)
    raise WouldNotStart(f"{where}: missing '}}' in {token!r}")


def _daemon_options(args: list[str], where: str) -> tuple[dict[str, str], list[str]]:
    """The daemon's GETOPT(argc, argv, "+cdDi:lm:n:o:r:s:St:uvVz"): options stop at the
    first non-option argument or '--'; '-vo x' and '-ox' are the same as '-o x'; each
    -o is applied in order with split_nameval(), so a later one wins."""
    options: dict[str, str] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            return options, args[i + 1:]
        if not arg.startswith("-") or arg == "-":
            break
        j = 1
        while j < len(arg):
            letter = arg[j]
            if letter not in DAEMON_OPTS:
                raise WouldNotStart(f"{where}: invalid option: -{letter}")
            if letter in DAEMON_OPTS_WITH_VALUE:
                if j + 1 < len(arg):
                    value = arg[j + 1:]
                else:
                    i += 1
                    if i >= len(args):
                        raise WouldNotStart(f"{where}: option -{letter} needs a value")
                    value = args[i]
                if letter == "o":
                    if value.startswith("{"):
                        # The daemon sees '{name=value}' (a bogus name); postconf unwraps it.
                        raise Unmodeled(f"{where}: '-o{value}' is read as a parameter named "
                                        f"{value.split('=')[0]!r} by the daemon but unwrapped by postconf; "
                                        "write -o { name = value } with spaces, or -o name=value")
                    name, val = split_nameval(value, f'{where}: invalid "-o {value}" option value')
                    options.pop(name, None)
                    options[name] = val
                break
            j += 1
        i += 1
    return options, args[i:]


def parse_master_cf(text: str, path: str = "master.cf") -> list[Service]:
    """master/master_ent.c get_master_ent(): seven fields and a command, then arguments."""
    services = []
    seen: set[str] = set()
    for line in logical_lines(text, path):
        fields = []
        rest = line
        for _ in range(8):
            rest = rest.lstrip(SPACE)
            if not rest:
                break
            end = next((n for n, ch in enumerate(rest) if ch in SPACE), len(rest))
            fields.append(rest[:end])
            rest = rest[end:]
        where = f"{path}: service {'/'.join(fields[:2]) or line.strip()!r}"
        if len(fields) < 8:
            raise WouldNotStart(f"{where}: missing field(s), need 8: {line.strip()!r}")
        kind = fields[1]
        if kind not in MASTER_TYPES:
            raise WouldNotStart(f"{where}: unknown transport type {kind!r} (allowed: {', '.join(MASTER_TYPES)})")
        args = _tokens(rest, where)
        options, operands = _daemon_options(args, where)
        name, _, private, unpriv, chroot, wakeup, maxproc, command = fields[:8]
        svc = Service(name, kind, private, unpriv, chroot, wakeup, maxproc, command,
                      args=args, options=options, operands=operands)
        if svc.key in seen:
            raise WouldNotStart(f"{where}: duplicate service {svc.key}")
        seen.add(svc.key)
        services.append(svc)
    return services


# --- values -------------------------------------------------------------------------------

_NAME = re.compile(r"[A-Za-z0-9_]+")


def expand(value: str, lookup, depth: int = 0) -> str:
    """util/mac_expand.c for the forms Postfix's own defaults use: $name, ${name}, $(name),
    ${name?text}, ${name:text}, ${name?{t}:{f}}, ${{a} <level {b} ? {t} : {f}} and $$."""
    if depth > 100:
        raise WouldNotStart("macro expansion loops (more than 100 levels)")
    out: list[str] = []
    i = 0
    while i < len(value):
        ch = value[i]
        if ch != "$":
            out.append(ch)
            i += 1
            continue
        nxt = value[i + 1:i + 2]
        if nxt == "$":
            out.append("$")
            i += 2
        elif nxt in ("{", "("):
            close = "}" if nxt == "{" else ")"
            end = _matching(value, i + 1, nxt, close)
            out.append(_expand_braced(value[i + 2:end], lookup, depth))
            i = end + 1
        else:
            m = _NAME.match(value, i + 1)
            if not m:
                raise Unmodeled(f"'$' not followed by a parameter name in {value!r}")
            out.append(expand(lookup(m.group(0)) or "", lookup, depth + 1))
            i = m.end()
    return "".join(out)


def _matching(text: str, start: int, open_: str, close: str) -> int:
    level = 0
    for n in range(start, len(text)):
        if text[n] == open_:
            level += 1
        elif text[n] == close:
            level -= 1
            if level == 0:
                return n
    raise WouldNotStart(f"unbalanced {open_!r} in {text!r}")


def _braced_arg(text: str) -> str:
    text = text.strip(SPACE)
    if text.startswith("{") and _matching(text, 0, "{", "}") == len(text) - 1:
        return text[1:-1].strip(SPACE)
    return text


def _expand_braced(body: str, lookup, depth: int) -> str:
    if body.startswith("{"):
        m = re.fullmatch(r"\{(.*?)\}\s*(==|!=|<level|<=level|>level|>=level)\s*\{(.*?)\}\s*\?\s*\{(.*)\}\s*:\s*\{(.*)\}",
                         body, re.S)
        if not m:
            raise Unmodeled(f"cannot model the macro expression ${{{body}}}")
        left, op, right = (expand(m.group(n), lookup, depth + 1).strip() for n in (1, 2, 3))
        truth = _compare(left, op, right)
        return expand(m.group(4) if truth else m.group(5), lookup, depth + 1)
    m = _NAME.match(body)
    if not m:
        raise Unmodeled(f"cannot model the macro ${{{body}}}")
    name, rest = m.group(0), body[m.end():]
    val = expand(lookup(name) or "", lookup, depth + 1)
    if not rest:
        return val
    op, arg = rest[0], rest[1:]
    if op == "?":
        branches = re.fullmatch(r"\s*(\{.*\})\s*:\s*(\{.*\})\s*", arg, re.S)
        if branches:
            return expand(_braced_arg(branches.group(1) if val else branches.group(2)), lookup, depth + 1)
        return expand(_braced_arg(arg), lookup, depth + 1) if val else ""
    if op == ":":
        return val or expand(_braced_arg(arg), lookup, depth + 1)
    raise Unmodeled(f"cannot model the macro ${{{body}}}")


def _compare(left: str, op: str, right: str) -> bool:
    if op == "==":
        return left == right
    if op == "!=":
        return left != right

    def level(text: str) -> tuple[int, ...]:
        if not re.fullmatch(r"\d+(\.\d+){0,2}", text):
            raise WouldNotStart(f"bad compatibility level {text!r}")
        return tuple(int(p) for p in text.split("."))
    a, b = level(left), level(right)
    return {"<level": a < b, "<=level": a <= b, ">level": a > b, ">=level": a >= b}[op]


def boolean(name: str, value: str) -> bool:
    """global/mail_conf_bool.c: yes or no, in any case; anything else is fatal."""
    if value.lower() == "yes":
        return True
    if value.lower() == "no":
        return False
    raise WouldNotStart(f"bad boolean configuration: {name} = {value} (Postfix accepts only yes or no)")


def _strtol(text: str) -> tuple[int | None, str]:
    """C strtol(text, &end, 10): leading whitespace, a sign, digits; (value, rest)."""
    m = re.match(r"[ \t\n\v\f\r]*([+-]?)(\d+)", text)
    if not m:
        return None, text
    return int(m.group(1) + m.group(2)), text[m.end():]


def long_value(name: str, value: str, minimum: int = 0, maximum: int = 0) -> int:
    """global/mail_conf_long.c: strtol with no trailing text, within LONG range, then min/max."""
    number, rest = _strtol(value)
    if not value or number is None or rest or not -LONG_MAX - 1 <= number <= LONG_MAX:
        raise WouldNotStart(f"bad numerical configuration: {name} = {value}")
    if (minimum and number < minimum) or (maximum and number > maximum):
        raise WouldNotStart(f"invalid {name} parameter value {number} (allowed {minimum}..{maximum or LONG_MAX})")
    return number


def time_value(name: str, value: str, default_unit: str, minimum: int = 0, maximum: int = 0) -> int:
    """global/conv_time.c conv_time(): strtol, then one unit letter (s, m, h, d, w); text after
    the unit letter is ignored; no digits count as 0; then mail_conf_time.c min/max."""
    number, rest = _strtol(value)
    if number is None:
        number, rest = 0, value
    unit = rest[0] if rest else default_unit
    if not value or number < 0 or number > INT_MAX or unit not in TIME_UNITS \
            or (unit != "s" and number >= INT_MAX // TIME_UNITS[unit]):
        raise WouldNotStart(f"parameter {name}: bad time value or unit: {value}")
    seconds = number * TIME_UNITS[unit]
    if (minimum and seconds < minimum) or (maximum and seconds > maximum):
        raise WouldNotStart(f"invalid {name}: {seconds}s is outside {minimum}s..{maximum}s")
    return seconds


def split_list(value: str) -> list[str]:
    """CHARS_COMMA_SP: Postfix lists split on commas and whitespace."""
    return [v for v in re.split(r"[,\s]+", value) if v]


# --- postscreen DNSBL sites (postscreen/postscreen_dnsbl.c, util/ip_match.c) ----------------

def dnsbl_site(site: str) -> tuple[str, str | None, int]:
    """domain[=filter][*weight] -> (domain, filter, weight); errors are postscreen-fatal."""
    rest, _, weight_text = site.partition("*")
    weight = 1
    if "*" in site:
        if not re.fullmatch(r"[ \t\n\v\f\r]*[+-]?\d+", weight_text):
            raise WouldNotStart(f'bad DNSBL weight factor "{weight_text}" in "{site}"')
        weight = int(weight_text)
    domain, eq, pattern = rest.partition("=")
    if eq:
        _ip_match_parse(pattern, site)
    if not _valid_hostname(domain):
        raise WouldNotStart(f'bad DNSBL domain name "{domain}" in "{site}"')
    return domain, pattern if eq else None, weight


def ip_match(pattern: str, address: str, site: str = "") -> bool:
    """util/ip_match.c: does the DNSBL reply filter `pattern` match the IPv4 `address`?"""
    octets = [int(o) for o in address.split(".")]
    return all(o in allowed for o, allowed in zip(octets, _ip_match_parse(pattern, site or pattern), strict=True))


def _ip_match_parse(pattern: str, site: str) -> list[set[int]]:
    def bad(why: str):
        return WouldNotStart(f"bad DNSBL filter syntax in {site!r}: {why} (postscreen would exit at startup)")
    if pattern.startswith("["):
        level, end = 0, -1
        for i, ch in enumerate(pattern):
            level += (ch == "[") - (ch == "]")
            if level == 0:
                end = i
                break
        if end < 0:
            raise bad('missing "]" character')
        if end == len(pattern) - 1:
            pattern = pattern[1:-1]
    if not pattern:
        raise bad("empty address pattern")
    tokens = re.findall(r"\d+|.", pattern)
    pos = 0

    def take() -> str:
        nonlocal pos
        tok = tokens[pos] if pos < len(tokens) else ""
        pos += 1
        return tok

    def octet(tok: str) -> bool:
        return tok.isdigit() and int(tok) <= 255

    fields: list[set[int]] = []
    for field_no in range(4):
        tok = take()
        allowed: set[int] = set()
        if octet(tok):
            allowed.add(int(tok))
        elif tok == "[":
            while True:
                tok = take()
                if not octet(tok):
                    raise bad("need decimal number 0..255")
                low = high = int(tok)
                look = take()
                if look == ".":
                    if take() != "." or not octet(hi := take()) or int(tok) > int(hi):
                        raise bad("numeric range error")
                    high = int(hi)
                    look = take()
                allowed.update(range(low, high + 1))
                if look == ";":
                    continue
                if look == "]":
                    break
                raise bad('need ";" or "]"')
        else:
            raise bad('need decimal number 0..255 or "["')
        fields.append(allowed)
        if field_no == 3:
            if pos < len(tokens):
                raise bad("garbage after pattern")
            return fields
        if take() != ".":
            raise bad('need "."')
    return fields


def _valid_hostname(name: str) -> bool:
    """util/valid_hostname.c: letters, digits, '-' and '_' in labels of at most 63,
    no label that starts or ends with '-', not all numeric, at most 255 characters."""
    if not name or len(name) > 255 or name.startswith(".") or name.endswith(".") or ".." in name:
        return False
    for label in name.split("."):
        if len(label) > 63 or not re.fullmatch(r"[A-Za-z0-9_-]+", label) or label[0] == "-" or label[-1] == "-":
            return False
    return not re.fullmatch(r"[\d.]+", name)
