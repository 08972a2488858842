"""The Pulumi CLI's stack-config pipeline, ported rule by rule, so that the offline preview
accepts exactly the stacks `pulumi preview` accepts and hands the program the same map.

Source: pulumi/pulumi at 1b5949891b (the newest stored snapshot, after v3.259.0; the pinned
SDK is 3.272.0, whose tree is not stored) and gopkg.in/yaml.v3 v3.0.1 (branch v3, f6f7691).
Each rule names the Go file and function it comes from. The order is the CLI's:

1. read the stack file (workspace/loaders.go LoadProjectStackBytes): strip a UTF-8 BOM,
   yaml.v3-decode into `any`, refuse non-string mapping keys, namespace bare keys with the
   project name, re-encode, decode each value into a config.Value;
2. merge the project's declared defaults (pkg/workspace/config.go mergeConfig);
3. refuse missing required keys, then validate each declared key: a secret key must be
   `secure:`, and every value must match its declared `type`/`items`
   (pkg/workspace/config.go validateStackConfigValues, validateStackConfigValue;
   workspace/project.go ValidateConfigValue).

Stack keys the project does not declare pass through untouched (mergeConfig iterates the
project's keys only); the program's settings judge them. Where this port cannot model the
CLI exactly (YAML merge keys, two spellings of one key with different values), it refuses
and says so.
"""
from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import math
import re
import sys
import threading
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import jsonschema
import yaml

SCHEMA_FILE = Path(__file__).with_name("pulumi-project.schema.json")  # workspace/project.json at the same commit


class CliRefusal(ValueError):
    """The CLI refuses the stack or the project; `problems` holds one line per problem."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Value:
    """resource/config/value.go Value: the text the program receives, and its flags."""
    text: str
    secure: bool = False
    object: bool = False


@dataclass(frozen=True)
class Declaration:
    """workspace/project.go ProjectConfigType."""
    type: str | None
    items: dict | None
    default: Any
    has_default: bool
    value: Any
    has_value: bool
    secret: bool


@dataclass(frozen=True)
class Project:
    name: str
    config: dict[str, Declaration]


@dataclass(frozen=True)
class Ciphertext:
    value: str


@dataclass(frozen=True)
class GoTime:
    """A yaml.v3 timestamp (time.Time): the instant and the zone as Go keeps it."""
    moment: dt.datetime
    zone_name: str  # "UTC", or "" for a fixed offset with no name

    def go_string(self) -> str:
        """time.Time.String(): "2006-01-02 15:04:05.999999999 -0700 MST"."""
        m = self.moment
        frac = f".{m.microsecond:06d}".rstrip("0").rstrip(".") if m.microsecond else ""
        delta = m.utcoffset()
        off = int(delta.total_seconds()) // 60 if delta else 0
        sign = "-" if off < 0 else "+"
        offset = f"{sign}{abs(off) // 60:02d}{abs(off) % 60:02d}"
        return f"{m:%Y-%m-%d %H:%M:%S}{frac} {offset} {self.zone_name or offset}"


# --- yaml.v3: resolve.go resolve(), decode.go scalar()/mapping() ------------------------------

_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")  # resolve.go yamlStyleFloat
_MAP = {**{s: True for s in ("true", "True", "TRUE")}, **{s: False for s in ("false", "False", "FALSE")},
        **{s: None for s in ("", "~", "null", "Null", "NULL")},
        **{s: math.nan for s in (".nan", ".NaN", ".NAN")},
        **{s: math.inf for s in (".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF")},
        **{s: -math.inf for s in ("-.inf", "-.Inf", "-.INF")}}
_INT64 = (-(2 ** 63), 2 ** 63 - 1)
_UINT64_MAX = 2 ** 64 - 1
_STR, _RESOLVABLE = "!!str", {"", "!!str", "!!bool", "!!int", "!!float", "!!null", "!!timestamp"}
_TS = [  # resolve.go allowedTimestampFormats, as time.Parse reads them
    re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})[Tt](\d{1,2}):(\d{1,2}):(\d{1,2})(\.\d+)?(Z|[+-]\d{2}:\d{2})"),
    re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2}) (\d{1,2}):(\d{1,2}):(\d{1,2})(\.\d+)?()"),
    re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})()()()()()"),
]


class YamlError(ValueError):
    pass


def _go_parse_int(text: str) -> int | None:
    """strconv.ParseInt/ParseUint(s, 0, 64): sign, then 0x/0o/0b or a leading-0 octal, or decimal."""
    m = re.fullmatch(r"([+-]?)(0[xX][0-9a-fA-F]+|0[oO][0-7]+|0[bB][01]+|0[0-7]*|[1-9][0-9]*)", text)
    if not m:
        return None
    digits = m.group(2)
    if len(digits) > 1 and digits[0] == "0" and digits[1] not in "xXoObB":
        number = int(digits, 8)  # Go's base 0: a leading 0 is octal
    else:
        number = int(digits, 0)
    number = -number if m.group(1) == "-" else number
    return number if _INT64[0] <= number <= _UINT64_MAX else None


def _go_parse_float(text: str) -> float | None:
    """strconv.ParseFloat(s, 64) for the forms yaml.v3 passes it; out of range is an error."""
    try:
        value = float(text)
    except ValueError:
        return None
    return None if math.isinf(value) else value


def _timestamp(text: str) -> GoTime | None:
    """resolve.go parseTimestamp: four digits and '-', then one of the allowed layouts."""
    if not re.match(r"[0-9]{4}-", text):
        return None
    for pattern in _TS:
        m = pattern.fullmatch(text)
        if not m:
            continue
        year, month, day = int(m[1]), int(m[2]), int(m[3])
        hour, minute, second = (int(m[i]) if m[i] else 0 for i in (4, 5, 6))
        micro = int((m[7] or ".0")[1:7].ljust(6, "0"))
        zone = m[8]
        try:
            if zone in ("", "Z", "+00:00", "-00:00"):
                # time.Parse gives UTC, or Local for a zero offset; the CLI runs with Local = UTC.
                return GoTime(dt.datetime(year, month, day, hour, minute, second, micro, dt.timezone.utc), "UTC")
            sign = -1 if zone[0] == "-" else 1
            tz = dt.timezone(sign * dt.timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6])))
            return GoTime(dt.datetime(year, month, day, hour, minute, second, micro, tz), "")
        except ValueError:
            return None  # month, day, hour ... out of range: time.Parse fails, so not a timestamp
    return None


def resolve(tag: str, text: str) -> Any:
    """resolve.go resolve(): an untagged (or resolvable-tagged) plain scalar's value."""
    if tag not in _RESOLVABLE:
        return text
    result = _resolve_plain(text, tag) if tag != _STR else text
    kind = _kind(result)
    if tag in ("", _STR) or tag == kind:
        return result
    if tag == "!!float" and kind == "!!int":
        return float(result)
    raise YamlError(f"cannot decode {kind} `{text}` as a {tag}")


def _kind(value: Any) -> str:
    if value is None:
        return "!!null"
    if isinstance(value, bool):
        return "!!bool"
    if isinstance(value, int):
        return "!!int"
    if isinstance(value, float):
        return "!!float"
    if isinstance(value, GoTime):
        return "!!timestamp"
    return _STR


def _resolve_plain(text: str, tag: str) -> Any:
    hint = text[:1]
    if text in _MAP:
        return _MAP[text]
    if hint == ".":
        value = _go_parse_float(text)
        return text if value is None else value
    if hint and (hint.isdigit() or hint in "+-"):
        if tag in ("", "!!timestamp"):
            stamp = _timestamp(text)
            if stamp:
                return stamp
        plain = text.replace("_", "")
        number = _go_parse_int(plain)
        if number is not None:
            return number
        if _FLOAT.fullmatch(plain):
            value = _go_parse_float(plain)
            if value is not None:
                return value
    return text


MAX_DEPTH = 10000  # scannerc.go max_flow_level and max_indents


class _Alias(yaml.Node):
    """An alias as yaml.v3 keeps it (a node of its own, pointing at the anchored node); PyYAML's
    composer would hand back the anchored node itself, and decode.go counts and refuses by
    alias nodes."""

    def __init__(self, target: yaml.Node, name: str, mark) -> None:
        super().__init__("", name, mark, mark)
        self.target = target


class _Loader(yaml.SafeLoader):
    """Composes nodes and keeps each scalar's tag as written (yaml.v3 tells an explicit
    `!!str` from a resolved one; PyYAML's composer would resolve it away), keeps aliases as
    nodes, and stops at yaml.v3's nesting limit."""

    def compose_scalar_node(self, anchor):
        event = self.peek_event()
        node = super().compose_scalar_node(anchor)
        node.written_tag = event.tag  # type: ignore[attr-defined]
        return node

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.get_event()
            if event.anchor not in self.anchors:
                raise yaml.composer.ComposerError(None, None, f"found undefined alias {event.anchor!r}",
                                                  event.start_mark)
            return _Alias(self.anchors[event.anchor], event.anchor, event.start_mark)
        # yaml.go parser.anchor: an anchor defined again names the later node from there on
        # (aliases before it keep the earlier one); PyYAML's composer would refuse it
        self.anchors.pop(self.peek_event().anchor, None)
        return super().compose_node(parent, index)

    def scan_to_next_token(self):
        """scannerc.go yaml_parser_scan_to_next_token: a tab is a blank in the flow context and
        wherever a simple key cannot start (after a key's `:`, after a scalar), never at the
        start of a line or after `-` or `?`. (A BOM after the first byte is text to yaml.v3,
        as to PyYAML.)"""
        if self.index == 0 and self.peek() == "\ufeff":
            self.forward()
        found = False
        while not found:
            while self.peek() == " " or (self.peek() == "\t" and (self.flow_level or not self.allow_simple_key)):
                self.forward()
            if self.peek() == "#":
                while self.peek() not in "\0\r\n\x85\u2028\u2029":
                    self.forward()
            if self.scan_line_break():
                if not self.flow_level:
                    self.allow_simple_key = True
            else:
                found = True

    def process_directives(self):
        """parserc.go yaml_parser_process_directives: only `%YAML 1.1` is compatible."""
        value = super().process_directives()
        if self.yaml_version not in (None, (1, 1)):
            raise yaml.parser.ParserError(None, None, "found incompatible YAML document", self.peek_token().start_mark)
        return value

    # scannerc.go yaml_parser_increase_flow_level and yaml_parser_roll_indent
    def fetch_flow_collection_start(self, TokenClass):
        super().fetch_flow_collection_start(TokenClass)
        if self.flow_level > MAX_DEPTH:
            raise yaml.scanner.ScannerError("while increasing flow level", None,
                                            f"exceeded max depth of {MAX_DEPTH}", self.get_mark())

    def add_indent(self, column):
        added = super().add_indent(column)
        if len(self.indents) > MAX_DEPTH:
            raise yaml.scanner.ScannerError("while increasing indent level", None,
                                            f"exceeded max depth of {MAX_DEPTH}", self.get_mark())
        return added


def _short(tag: str | None) -> str:
    if not tag:
        return ""
    return "!!" + tag.removeprefix("tag:yaml.org,2002:") if tag.startswith("tag:yaml.org,2002:") else tag


def _scalar(node: yaml.ScalarNode) -> Any:
    """decode.go scalar() into interface{}: quoted or block scalars and `!!str` are text."""
    tag = _short(getattr(node, "written_tag", None))
    if tag in ("", "!") and node.style in ('"', "'", "|", ">"):
        return node.value
    if tag == "!":
        return node.value
    if tag == "!!binary":
        try:
            return base64.b64decode(node.value, validate=False).decode("utf-8", "replace")
        except (binascii.Error, ValueError):
            raise YamlError("!!binary value contains invalid base64 data") from None
    return resolve(tag, node.value)


@dataclass(frozen=True)
class _GeneralMap:
    """A mapping with a non-string key (map[interface{}]interface{} in Go)."""
    items: tuple


class _Decoder:
    """decode.go's decoder into interface{}: unmarshal() with its alias bookkeeping, alias(),
    and mapping()'s duplicate-key check."""
    # decode.go alias_ratio_range_low and alias_ratio_range_high
    RATIO_LOW, RATIO_HIGH = 400000, 4000000

    def __init__(self) -> None:
        self.decode_count = self.alias_count = self.alias_depth = 0
        self.aliases: set[int] = set()

    def allowed_alias_ratio(self) -> float:
        """decode.go allowedAliasRatio: 99% for small documents, down to 10% for large ones."""
        n = self.decode_count
        if n <= self.RATIO_LOW:
            return 0.99
        if n >= self.RATIO_HIGH:
            return 0.10
        return 0.99 - 0.89 * ((n - self.RATIO_LOW) / (self.RATIO_HIGH - self.RATIO_LOW))

    def unmarshal(self, node: yaml.Node) -> Any:
        self.decode_count += 1
        if self.alias_depth > 0:
            self.alias_count += 1
        if self.alias_count > 100 and self.decode_count > 1000 \
                and self.alias_count / self.decode_count > self.allowed_alias_ratio():
            raise YamlError("document contains excessive aliasing")
        if isinstance(node, _Alias):
            return self.alias(node)
        if isinstance(node, yaml.ScalarNode):
            return _scalar(node)
        if isinstance(node, yaml.SequenceNode):
            return [self.unmarshal(item) for item in node.value]
        assert isinstance(node, yaml.MappingNode)
        return self.mapping(node)

    def alias(self, node: _Alias) -> Any:
        if id(node) in self.aliases:
            raise YamlError(f"anchor '{node.value}' value contains itself")
        self.aliases.add(id(node))
        self.alias_depth += 1
        try:
            return self.unmarshal(node.target)
        finally:
            self.alias_depth -= 1
            self.aliases.discard(id(node))

    def mapping(self, node: yaml.MappingNode) -> Any:
        pairs = node.value
        problems = []
        for i, (ki, _) in enumerate(pairs):
            for kj, _ in pairs[i + 1:]:
                if type(ki) is type(kj) and ki.value == kj.value and isinstance(ki, (yaml.ScalarNode, _Alias)):
                    problems.append(f"line {kj.start_mark.line + 1}: mapping key {json.dumps(kj.value)} "
                                    f"already defined at line {ki.start_mark.line + 1}")
        if problems:
            raise YamlError("; ".join(problems))
        keys = []
        for key_node, _ in pairs:
            if isinstance(key_node, yaml.ScalarNode) and _short(getattr(key_node, "written_tag", None)) \
                    in ("", "!!merge") and key_node.value == "<<" and key_node.style is None:
                raise YamlError(f"line {key_node.start_mark.line + 1}: a YAML merge key (<<); the offline preview "
                                "does not model yaml.v3's merge, so write the keys out")
            target = key_node.target if isinstance(key_node, _Alias) else key_node
            if not isinstance(target, yaml.ScalarNode):
                raise YamlError(f"line {key_node.start_mark.line + 1}: invalid map key (a list or mapping)")
            keys.append(self.unmarshal(key_node))
        values = [self.unmarshal(v) for _, v in pairs]
        if all(isinstance(k, str) for k in keys):
            return dict(zip(keys, values, strict=True))
        return _GeneralMap(tuple(zip(keys, values, strict=True)))


def _go_type_value(value: Any) -> str:
    """fmt's %s of a non-string key, as SimplifyMarshalledValue's error prints it."""
    if value is None:
        return "%!s(<nil>)"
    if isinstance(value, bool):
        return f"%!s(bool={str(value).lower()})"
    if isinstance(value, int):
        return f"%!s({'int' if value <= _INT64[1] else 'uint64'}={value})"
    if isinstance(value, float):
        return f"%!s(float64={_go_g(value)})"
    if isinstance(value, GoTime):
        return value.go_string()
    return str(value)


def _simplify(value: Any) -> Any:
    """workspace/project.go SimplifyMarshalledValue: every mapping key must be a string."""
    if isinstance(value, _GeneralMap):
        bad = next(k for k, _ in value.items if not isinstance(k, str))
        raise CliRefusal([f"expected only string keys, got '{_go_type_value(bad)}'"])
    if isinstance(value, dict):
        return {k: _simplify(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_simplify(v) for v in value]
    return value


def _read_yaml(text: str) -> Any:
    try:
        docs = yaml.compose_all(text, Loader=_Loader)
        root = next(iter(docs), None)
    except yaml.YAMLError as exc:
        raise CliRefusal([f"invalid YAML file: {' '.join(str(exc).split())}"]) from None
    if root is None:
        return None
    try:
        return _Decoder().unmarshal(root)
    except YamlError as exc:
        raise CliRefusal([f"yaml: unmarshal errors: {exc}"]) from None


def read_yaml(text: str) -> Any:
    """yaml.v3 Unmarshal into interface{} of the first document (encoding/marshal.go). It
    recurses per level of nesting, as every later step does: run the pipeline under
    with_deep_stack."""
    return _read_yaml(text)


# Composing, decoding and each later walk over a value recurse a few times per level, and
# yaml.v3 reads up to MAX_DEPTH levels: room for that many frames, on a thread of its own.
_FRAMES, _STACK_BYTES = 20 * MAX_DEPTH, 64 * 1024 * 1024  # 16 MiB was enough for 10,000 levels


def with_deep_stack(fn, *args, **kwargs):
    """fn(*args, **kwargs) on a thread with room for MAX_DEPTH levels of nesting; its result
    or its exception, as if called here."""
    result: dict[str, Any] = {}

    def work() -> None:
        try:
            result["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # handed to the caller's thread as it is
            result["error"] = exc

    limit, size = sys.getrecursionlimit(), threading.stack_size()
    sys.setrecursionlimit(max(limit, _FRAMES))
    threading.stack_size(_STACK_BYTES)
    try:
        worker = threading.Thread(target=work, name="deep-stack")
        worker.start()
        worker.join()
    finally:
        threading.stack_size(size)
        sys.setrecursionlimit(limit)
    if "error" in result:
        raise result["error"]
    return result["value"]


# --- the re-encode step and config.Value (resource/config/object.go) ------------------------

def _digits(value: float) -> tuple[str, str, int]:
    """Sign, shortest round-trip digits and decimal exponent (as strconv's shortest mode)."""
    sign, digits, exponent = Decimal(repr(value)).normalize().as_tuple()
    assert isinstance(exponent, int)
    mantissa = "".join(map(str, digits))
    return ("-" if sign else ""), mantissa, len(mantissa) + exponent - 1


def _exp_form(sign: str, mantissa: str, exp: int) -> str:
    tail = mantissa[1:]
    return f"{sign}{mantissa[0]}{'.' + tail if tail else ''}e{'-' if exp < 0 else '+'}{abs(exp):02d}"


def _go_g(value: float) -> str:
    """strconv.FormatFloat(f, 'g', -1, 64), as yaml.v3's encoder writes a float: %e when the
    exponent is < -4 or >= 6 (the shortest form's eprec), else %f."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "-0" if math.copysign(1, value) < 0 else "0"
    sign, mantissa, exp = _digits(value)
    if exp < -4 or exp >= 6:
        return _exp_form(sign, mantissa, exp)
    return sign + _fixed(mantissa, exp)


def _fixed(mantissa: str, exp: int) -> str:
    point = exp + 1
    if point <= 0:
        return "0." + "0" * -point + mantissa
    if point >= len(mantissa):
        return mantissa + "0" * (point - len(mantissa))
    return mantissa[:point] + "." + mantissa[point:]


def _go_json_float(value: float) -> str:
    """encoding/json floatEncoder: 'f' unless |f| < 1e-6 or >= 1e21, then 'e' with e-07 -> e-7."""
    if math.isnan(value) or math.isinf(value):
        raise CliRefusal([f"json: unsupported value: {_go_g(value)}"])
    if value == 0:
        return "-0" if math.copysign(1, value) < 0 else "0"
    sign, mantissa, exp = _digits(value)
    if abs(value) < 1e-6 or abs(value) >= 1e21:
        return re.sub(r"e-0([0-9])$", r"e-\1", _exp_form(sign, mantissa, exp))
    return sign + _fixed(mantissa, exp)


def _round_trip(value: Any) -> Any:
    """LoadProjectStackBytes re-encodes the decoded stack and decodes it again: a float is
    written with 'g' and read back, so 20.0 comes back as the int 20 and 2e8 as a float."""
    def reread(leaf: Any) -> Any:
        if isinstance(leaf, float):
            text = _go_g(leaf)
            return resolve("", {"+Inf": ".inf", "-Inf": "-.inf", "NaN": ".nan"}.get(text, text))
        return leaf
    return _leaves(value, reread)


def _leaves(value: Any, fn) -> Any:
    """`value` with `fn` applied to every scalar inside its lists and mappings."""
    if isinstance(value, dict):
        return {k: _leaves(v, fn) for k, v in value.items()}
    if isinstance(value, list):
        return [_leaves(v, fn) for v in value]
    return fn(value)


def _object(value: Any) -> Any:
    """object.go unmarshalObject: a {secure: <string>} mapping is ciphertext; time is its String()."""
    if isinstance(value, GoTime):
        return value.go_string()
    if isinstance(value, dict):
        if len(value) == 1 and isinstance(value.get("secure"), str):
            return Ciphertext(value["secure"])
        return {k: _object(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_object(v) for v in value]
    return value


def go_json(value: Any) -> str:
    """encoding/json Marshal: sorted keys, no spaces, <>& and U+2028/9 escaped."""
    if isinstance(value, Ciphertext):
        return go_json({"secure": value.value})
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _go_json_float(value)
    if isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
        for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                             ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
            text = text.replace(char, escape)
        return text
    if isinstance(value, list):
        return "[" + ",".join(go_json(v) for v in value) + "]"
    return "{" + ",".join(f"{go_json(k)}:{go_json(value[k])}" for k in sorted(value)) + "}"


def _has_ciphertext(value: Any) -> bool:
    if isinstance(value, Ciphertext):
        return True
    if isinstance(value, dict):
        return any(_has_ciphertext(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_ciphertext(v) for v in value)
    return False


def to_value(raw: Any) -> Value:
    """object.go MarshalString: scalars become their text (numbers and booleans as JSON),
    ciphertext stays secure, lists and mappings become JSON objects. A null is ""."""
    if raw is None:
        return Value("")  # decode.go prepare(): a null never reaches Value.UnmarshalYAML
    value = _object(_round_trip(raw))
    if isinstance(value, Ciphertext):
        return Value(value.value, secure=True)
    if isinstance(value, str):
        return Value(value)
    if isinstance(value, (bool, int, float)):
        return Value(go_json(value))
    return Value(go_json(value), secure=_has_ciphertext(value), object=True)


def parse_key(key: str) -> tuple[str, str]:
    """resource/config/key.go ParseKey: <namespace>:<name>, or <namespace>:config:<name>."""
    parts = key.split(":")
    if len(parts) == 2:
        return parts[0], parts[1]
    if len(parts) == 3 and parts[1] == "config" and parts[0] and parts[2]:
        return parts[0], parts[2]
    raise CliRefusal([f"could not unmarshal map: could not parse {key} as a configuration key "
                      "(configuration keys should be of the form `<namespace>:<name>`)"])


# --- the project file (workspace/loaders.go LoadProjectBytes, project.go Validate) -------------

def load_project(path: Path) -> Project:
    """Pulumi.yaml as the CLI loads it: schema, shorthand rewrite, then Project.Validate."""
    raw = _simplify(read_yaml(_strip_bom(path.read_bytes()).decode("utf-8")))
    return project_from_raw(raw, path.name)


def project_from_raw(raw: Any, name: str = "Pulumi.yaml") -> Project:
    if not isinstance(raw, dict):
        raise CliRefusal([f"could not validate '{name}': expected project to be an object"])
    if not isinstance(raw.get("name"), str) or not raw["name"]:
        raise CliRefusal([f"could not validate '{name}': project is missing a non-empty string 'name' attribute"])
    schema = json.loads(SCHEMA_FILE.read_text())
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(_jsonable(raw)), key=lambda e: list(e.path))
    if errors:
        raise CliRefusal([f"could not validate '{name}': #/{'/'.join(map(str, e.path))}: {e.message}" for e in errors])
    project_name = raw["name"]
    decls = {}
    for key, spec in (raw.get("config") or {}).items():
        if not isinstance(spec, dict):  # project.go RewriteShorthandConfigValues
            namespaced = ":" not in key or key.startswith(project_name + ":")
            spec = {"default": spec} if namespaced else {"value": spec}
        decls[key] = Declaration(
            type=spec.get("type"), items=spec.get("items"), default=_round_trip(spec.get("default")),
            has_default=spec.get("default") is not None, value=_round_trip(spec.get("value")),
            has_value=spec.get("value") is not None, secret=bool(spec.get("secret")))
    problems = [p for key, decl in sorted(decls.items()) if (p := _declaration_problem(project_name, key, decl))]
    if problems:
        raise CliRefusal([f"could not unmarshal '{name}': {p}" for p in problems])
    return Project(project_name, decls)


def _declaration_problem(project: str, key: str, decl: Declaration) -> str:
    """project.go (*Project).Validate."""
    if decl.has_default and decl.has_value:
        return f"project config '{key}' cannot have both a 'default' and 'value' attribute"
    if ":" not in key or key.startswith(project + ":"):
        if decl.type == "array" and decl.items is None:
            return (f"The configuration key '{key}' declares an array but does not specify the underlying type "
                    "via the 'items' attribute")
        if decl.type is not None and decl.has_default and not valid_value(decl.type, decl.items, decl.default):
            return (f"The default value specified for configuration key '{key}' is not of the expected type "
                    f"'{type_name(decl.type, decl.items)}'")
        return ""
    if decl.type is not None:
        return f"Configuration key '{key}' is not namespaced by the project and should not define a type"
    if decl.has_default:
        return (f"Configuration key '{key}' is not namespaced by the project and should not define a default value. "
                "Did you mean to use the 'value' attribute instead of 'default'?")
    if not decl.has_value:
        return f"Configuration key '{key}' is namespaced and must provide an attribute 'value'"
    return ""


def _jsonable(value: Any) -> Any:
    return _leaves(value, lambda leaf: leaf.go_string() if isinstance(leaf, GoTime) else leaf)


def _strip_bom(data: bytes) -> bytes:
    """loaders.go readFileStripUTF8BOM."""
    return data[3:] if data.startswith(b"\xef\xbb\xbf") else data


# --- the stack file and the merge (loaders.go, pkg/workspace/config.go) -----------------------

def read_stack(text: str, project: Project) -> dict[str, Value]:
    """loaders.go LoadProjectStackBytes: "namespace:name" -> Value."""
    raw = read_yaml(text.removeprefix("\ufeff"))
    if raw is None:
        return {}
    raw = _simplify(raw)  # project.go SimplifyMarshalledProject
    if not isinstance(raw, dict):
        go_type = "[]interface {}" if isinstance(raw, list) else _go_type_name(raw)
        raise CliRefusal([f"expected project to be an object, was '{go_type}'"])
    config = raw.get("config")
    if config is None:
        return {}
    if not isinstance(config, dict):
        kind = "!!seq" if isinstance(config, list) else _kind(config)
        raise CliRefusal([f"could not unmarshal map: cannot unmarshal {kind} into map[string]config.Value"])
    # loaders.go stackConfigNamespacedWithProject names bare keys, then config/map.go
    # UnmarshalYAML keys the map by ParseKey, which reads <namespace>:config:<name> as
    # <namespace>:<name>. Spellings of one key land on one entry, in Go's random map order:
    # with equal values that is one value; with different ones the CLI keeps either.
    spelled: dict[str, list[str]] = {}
    for key in config:
        spelled.setdefault(":".join(parse_key(key if ":" in key else f"{project.name}:{key}")), []).append(key)
    values: dict[str, Value] = {}
    twice = []
    for full, forms in spelled.items():
        found = [to_value(config[key]) for key in forms]
        if any(v != found[0] for v in found[1:]):
            twice.append(f"{full} is written as {' and as '.join(forms)} with different values; the CLI keeps "
                         "one of them at random (Go map order), so the offline preview refuses it: keep one")
        values[full] = found[0]
    if twice:
        raise CliRefusal(twice)
    return values


def _go_type_name(value: Any) -> str:
    return {bool: "bool", int: "int", float: "float64", str: "string"}.get(type(value), "interface {}")


def type_name(kind: str, items: dict | None) -> str:
    """project.go InferFullTypeName."""
    if items is not None:
        return f"array<{type_name(items.get('type', ''), items.get('items'))}>"
    return kind


def valid_value(kind: str, items: dict | None, value: Any) -> bool:
    """project.go ValidateConfigValue."""
    if kind == "string":
        return isinstance(value, str)
    if kind == "integer":
        if isinstance(value, int) and not isinstance(value, bool):
            return True
        if isinstance(value, float):
            return value == math.trunc(value)
        if isinstance(value, str):  # strconv.Atoi
            return bool(re.fullmatch(r"[+-]?[0-9]+", value)) and _INT64[0] <= int(value) <= _INT64[1]
        return False
    if kind == "boolean":
        return value in ("true", "false") or isinstance(value, bool)
    if kind == "object":
        return isinstance(value, dict)
    if not isinstance(value, list) or items is None:
        return False
    return all(valid_value(items.get("type", ""), items.get("items"), item) for item in value)


def _default_value(value: Any) -> Value:
    """config.go createConfigValue: string/int/bool as fmt's %v, anything else as JSON."""
    if isinstance(value, bool):
        return Value("true" if value else "false")
    if isinstance(value, (str, int)):
        return Value(str(value))
    return Value(go_json(_object(value)), object=True)


def merge(stack_name: str, project: Project, stack: dict[str, Value]) -> dict[str, Value]:
    """config.go mergeConfig with validate=true (ValidateStackConfigAndApplyProjectConfig):
    defaults merged as plaintext, then missing keys, then each value checked. The CLI stops at
    its first error; this lists every problem, the CLI's first one first."""
    merged = dict(stack)
    missing = []
    for key in sorted(project.config):
        decl = project.config[key]
        full = key if ":" in key else f"{project.name}:{key}"  # config.go parseConfigKey
        if full in merged:
            continue
        if decl.has_value or decl.has_default:
            merged[full] = _default_value(decl.default if decl.has_default else decl.value)
        elif parse_key(full)[0] == project.name:
            missing.append(key)
    if missing:
        raise CliRefusal([missing_keys_error(stack_name, missing)])
    problems = []
    for key in sorted(project.config):  # config.go validateStackConfigValues
        decl = project.config[key]
        if decl.type is None:
            continue
        value = merged[key if ":" in key else f"{project.name}:{key}"]
        named = f"{full_key(project, key)}: the Pulumi CLI refuses the stack: "
        if decl.secret and not value.secure:
            problems.append(f"{named}Stack '{stack_name}' with configuration key '{key}' must be encrypted as "
                            f"it's secret; set it with: pulumi config set --secret {key} <value>")
            continue
        if value.secure and not value.object:
            continue  # ciphertext: judged on the decrypted text, which only the CLI has
        content = json.loads(value.text) if value.object else value.text
        if not valid_value(decl.type, decl.items, _strip_secure(content)):
            kind = type_name(decl.type, decl.items)
            problems.append(f"{named}Stack '{stack_name}' with configuration key '{key}' must be of type "
                            f"'{kind}'; allowed: {TYPE_HINTS.get(kind, kind)}")
    if problems:
        raise CliRefusal(problems)
    return merged


def _strip_secure(content: Any) -> Any:
    """Inside an object value a secret is {"secure": ...}; decrypted, it is its text."""
    if isinstance(content, dict):
        if len(content) == 1 and isinstance(content.get("secure"), str):
            return content["secure"]
        return {k: _strip_secure(v) for k, v in content.items()}
    if isinstance(content, list):
        return [_strip_secure(v) for v in content]
    return content


TYPE_HINTS = {
    "integer": "a whole number in decimal digits, e.g. 20",
    "boolean": "true or false",
    "string": "text (quote it if YAML would read it as a list or mapping)",
    "array<string>": "a YAML list whose items are text (quote items YAML reads as numbers, booleans or mappings)",
    "object": "a YAML mapping",
}


def full_key(project: Project, key: str) -> str:
    return key if ":" in key else f"{project.name}:{key}"


def missing_keys_error(stack_name: str, keys: list[str]) -> str:
    """config.go missingStackConfigurationKeysError and formatMissingKeys."""
    if len(keys) == 1:
        return f"Stack '{stack_name}' is missing configuration value '{keys[0]}'"
    keys = sorted(keys)
    listed = ", ".join(f"'{k}'" for k in keys[:-2])
    listed = (listed + ", " if listed else "") + f"'{keys[-2]}' and '{keys[-1]}'"
    return f"Stack '{stack_name}' is missing configuration values {listed}"


def effective_config(stack_name: str, project: Project, stack_text: str) -> dict[str, Value]:
    """The whole pipeline: what the engine hands the program as PULUMI_CONFIG (secrets still
    ciphertext here), or CliRefusal with the CLI's reasons."""
    return merge(stack_name, project, read_stack(stack_text, project))


def empty_value_warnings(stack_text: str) -> list[str]:
    """loaders.go checkForEmptyConfig: a key with no value is read as "" (a warning)."""
    try:
        raw = read_yaml(stack_text.removeprefix("\ufeff"))
    except CliRefusal:
        return []
    config = raw.get("config") if isinstance(raw, dict) else None
    if not isinstance(config, dict):
        return []
    empty = sorted(k for k, v in config.items() if v is None)
    if not empty:
        return []
    keys = " and ".join(f'"{k}"' for k in empty) if len(empty) == 2 else ", ".join(f'"{k}"' for k in empty)
    return [f"No value for configuration key{'s' if len(empty) > 1 else ''} {keys}. This is currently treated as "
            "an empty string `\"\"`, but will be treated as `null` in a future version of pulumi."]
