"""The pack's own reading of what the VM will run: user_data -> cloud-config -> Postfix files.

Independent of the program's renderers on purpose, so a renderer bug cannot hide from
the policies. Follows Postfix's documented syntax, not the renderer's formatting.
"""
from __future__ import annotations

import base64
import binascii
import gzip
import re
from dataclasses import dataclass, field

import yaml

MAIN_CF, MASTER_CF = "main.cf", "master.cf"
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
LIFETIME_CAP_S = 100 * 86400

# Postfix defaults for the parameters the policies judge (3.7/3.8).
DEFAULTS = {
    "soft_bounce": "no",
    "maximal_queue_lifetime": "5d",
    "bounce_queue_lifetime": "5d",
    "message_size_limit": "10240000",
    "mynetworks_style": "host",  # compatibility_level >= 2
    "postscreen_greet_action": "ignore",
    "postscreen_dnsbl_action": "ignore",
    "postscreen_blacklist_action": "ignore",
    "postscreen_denylist_action": "ignore",
    "postscreen_pipelining_action": "enforce",
    "postscreen_non_smtp_command_action": "drop",
    "postscreen_bare_newline_action": "ignore",
    "postscreen_pipelining_enable": "no",
    "postscreen_non_smtp_command_enable": "no",
    "postscreen_bare_newline_enable": "no",
    "postscreen_dnsbl_sites": "",
    "postscreen_access_list": "permit_mynetworks",
    "smtpd_reject_unlisted_recipient": "yes",
    "smtpd_relay_restrictions": "permit_mynetworks, permit_sasl_authenticated, defer_unauth_destination",
    "relay_domains": "",
    "relay_recipient_maps": "",
    "transport_maps": "",
    "mydestination": "$myhostname, localhost.$mydomain, localhost",
}
POSTSCREEN_ACTIONS = ("ignore", "enforce", "drop")


class UserDataError(ValueError):
    pass


@dataclass
class Service:
    name: str
    kind: str
    command: str
    options: dict[str, str] = field(default_factory=dict)
    line: str = ""


@dataclass
class MailConfig:
    files: dict[str, str]         # path on the VM -> text
    main: dict[str, str]          # main.cf name -> raw value
    services: list[Service]

    def param(self, name: str, service: Service | None = None) -> str:
        if service is not None and name in service.options:
            return expand(service.options[name], self.main)
        return expand(self.main.get(name, DEFAULTS.get(name, "")), self.main)

    def file_named(self, name: str) -> tuple[str, str] | None:
        for path, text in self.files.items():
            if path.rsplit("/", 1)[-1] == name:
                return path, text
        return None

    def table(self, spec: str) -> dict[str, str] | None:
        """Contents of an inline or file-based lookup table, when the files say; else None."""
        spec = spec.strip()
        if spec.startswith("inline:"):
            body = spec[len("inline:"):].strip().strip("{}")
            return dict(_pair(p) for p in re.split(r"[,\s]+(?=[^=,\s]+=)", body) if "=" in p)
        kind, _, path = spec.partition(":")
        # cloud-init may stage a map elsewhere and install it under the same file name.
        found = path if path in self.files else (self.file_named(path.rsplit("/", 1)[-1]) or (None,))[0]
        if kind in ("hash", "btree", "lmdb", "texthash", "cdb") and found:
            rows = {}
            for line in _logical_lines(self.files[found]):
                key, _, value = line.partition(" ") if " " in line else line.partition("\t")
                rows[key.strip().lower()] = value.strip()
            return rows
        return None


def _pair(text: str) -> tuple[str, str]:
    k, _, v = text.partition("=")
    return k.strip().lower(), v.strip()


def decode_user_data(value: str) -> str:
    """OCI user_data is base64 (optionally of gzip); accept plain text too."""
    data: bytes
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        data = value.encode()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    try:
        return data.decode()
    except UnicodeDecodeError as exc:
        raise UserDataError(f"user_data is neither text nor base64 of text: {exc}") from None


def cloud_config_files(user_data_text: str) -> dict[str, str]:
    if not user_data_text.lstrip().startswith("#cloud-config"):
        raise UserDataError("user_data is not a #cloud-config document")
    try:
        doc = yaml.safe_load(user_data_text) or {}
    except yaml.YAMLError as exc:
        raise UserDataError(f"user_data is not valid YAML: {exc}") from None
    files = {}
    for entry in doc.get("write_files") or []:
        content = entry.get("content", "")
        encoding = (entry.get("encoding") or "text/plain").lower()
        if not isinstance(content, (str, bytes)):
            raise UserDataError(f"write_files entry {entry.get('path')!r} has non-text content")
        raw = content.encode() if isinstance(content, str) else content
        if encoding in ("b64", "base64"):
            raw = base64.b64decode(raw)
        elif encoding in ("gz", "gzip"):
            raw = gzip.decompress(raw)
        elif encoding in ("gz+base64", "gzip+base64", "gz+b64", "gzip+b64"):
            raw = gzip.decompress(base64.b64decode(raw))
        files[entry["path"]] = raw.decode()
    return files


def _logical_lines(text: str) -> list[str]:
    """Postfix syntax: '#' comments, and a line starting with whitespace continues the last."""
    lines: list[str] = []
    for raw in text.splitlines():
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        if raw[0].isspace() and lines:
            lines[-1] += " " + raw.strip()
        else:
            lines.append(raw.strip())
    return lines


def parse_main_cf(text: str) -> dict[str, str]:
    params = {}
    for line in _logical_lines(text):
        name, sep, value = line.partition("=")
        if sep:
            params[name.strip()] = value.strip()
    return params


def parse_master_cf(text: str) -> list[Service]:
    services = []
    for line in _logical_lines(text):
        fields = line.split()
        if len(fields) < 8:
            continue
        # -o name=value, and Postfix 3's -o { name = value } (values may then contain spaces)
        rest = line.split(None, 8)[8] if len(fields) > 8 else ""
        options = {k.strip(): v.strip() for k, v in re.findall(r"-o\s*\{\s*([^=}]+?)\s*=\s*([^}]*)\}", rest)}
        options.update({k: v for k, v in re.findall(r"-o\s+([^\s={]+)=(\S*)", rest)})
        services.append(Service(fields[0], fields[1], fields[7], options, line))
    return services


def expand(value: str, main: dict[str, str], depth: int = 0) -> str:
    """Expand $name and ${name} from main.cf (enough for the parameters judged here)."""
    if depth > 5 or "$" not in value:
        return value

    def sub(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        return expand(main.get(name, DEFAULTS.get(name, "")), main, depth + 1)

    return re.sub(r"\$\{?([a-z0-9_]+)\}?|\$\(([a-z0-9_]+)\)", sub, value)


def split_list(value: str) -> list[str]:
    return [v for v in re.split(r"[\s,]+", value.strip()) if v]


def seconds(value: str, default_unit: str = "d") -> int:
    match = re.fullmatch(r"(\d+)([smhdw]?)", value.strip())
    if not match:
        raise ValueError(f"{value!r} is not a Postfix time value")
    return int(match.group(1)) * UNITS[match.group(2) or default_unit]


def from_user_data(value: str) -> MailConfig:
    files = cloud_config_files(decode_user_data(value))
    main_path = next((p for p in files if p.endswith("/" + MAIN_CF)), None)
    master_path = next((p for p in files if p.endswith("/" + MASTER_CF)), None)
    if main_path is None or master_path is None:
        raise UserDataError("user_data writes no main.cf/master.cf (write_files)")
    return MailConfig(files, parse_main_cf(files[main_path]), parse_master_cf(files[master_path]))
