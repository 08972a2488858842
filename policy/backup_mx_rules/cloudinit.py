"""The pack's own model of what cloud-init does with the relay's user_data.

It answers one question: which Postfix configuration files will the relay run? Per the
project's contract the relay's config is rendered, staged by `write_files` under
STAGING_DIR and installed verbatim into /etc/postfix by the bootstrap. It is never edited
on the VM, so anything that could change it after rendering is reported, and anything
the pack cannot model (another user-data format, a cloud-config key it does not know, a
`write_files` form it cannot decode) fails closed.
"""
from __future__ import annotations

import base64
import binascii
import gzip
import hashlib
import json
import posixpath
import re
import shlex
from pathlib import Path

import yaml

STAGING_DIR = "/etc/backup-mx/postfix"  # the renderer's staging directory (the contract)
POSTFIX_DIR = "/etc/postfix"
CERT_DIR = "/etc/postfix/tls"  # certificates, written by the bootstrap and certbot's deploy hook
CONFIG_NAMES = ("main.cf", "master.cf")
# Cloud-config keys that cannot touch Postfix or that the scan below covers.
KNOWN_KEYS = {
    "hostname", "fqdn", "prefer_fqdn_over_hostname", "manage_etc_hosts", "ssh_pwauth", "disable_root",
    "ssh_authorized_keys", "ssh_deletekeys", "ssh_genkeytypes", "timezone", "locale", "final_message",
    "write_files", "runcmd", "bootcmd", "package_update", "package_upgrade", "package_reboot_if_required",
}
ENCODINGS = {
    "": (), "text/plain": (), "b64": ("b64",), "base64": ("b64",), "gz": ("gz",), "gzip": ("gz",),
    "gz+base64": ("b64", "gz"), "gzip+base64": ("b64", "gz"), "gz+b64": ("b64", "gz"), "gzip+b64": ("b64", "gz"),
}
WRITERS = {"cp", "mv", "install", "ln", "rm", "truncate", "tee", "dd", "patch", "rsync", "ed", "ex", "vi", "vim",
           "sponge", "unlink", "shred"}
IN_PLACE = {"sed", "perl", "awk", "gawk", "ruby"}


class UserDataError(ValueError):
    """The relay's Postfix configuration cannot be determined from user_data."""


def decode(value: object) -> str:
    """OCI's metadata.user_data is base64 (of text or gzip); anything else fails closed."""
    if value is None:
        raise UserDataError("the instance has no metadata.user_data, so the relay would boot without its "
                            "Postfix configuration")
    if not isinstance(value, str):
        raise UserDataError(f"metadata.user_data is a {type(value).__name__}, not base64 text")
    try:
        data = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise UserDataError("metadata.user_data is not base64; OCI expects base64-encoded user data") from None
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise UserDataError(f"metadata.user_data is a broken gzip stream ({exc})") from None
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise UserDataError("metadata.user_data does not decode to UTF-8 text") from None


def cloud_config(text: str) -> dict:
    first = text.split("\n", 1)[0].rstrip("\r")
    if not first.startswith("#cloud-config"):
        raise UserDataError(f"user_data starts with {first[:40]!r}, not #cloud-config; the pack models only "
                            "a cloud-config document")
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UserDataError(f"user_data is not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(doc, dict):
        raise UserDataError("the cloud-config document is not a mapping")
    unknown = sorted(str(k) for k in doc if k not in KNOWN_KEYS)
    if unknown:
        raise UserDataError(f"cloud-config key(s) {unknown} are not modeled by the pack (they could install "
                            "software or change files); render the relay with write_files and runcmd only")
    return doc


def _content(entry: dict, where: str) -> str:
    if "source" in entry:
        raise UserDataError(f"{where} fetches its content from a source URI the pack cannot see")
    content = entry.get("content", "")
    encoding = str(entry.get("encoding") or "").strip().lower()
    if encoding not in ENCODINGS:
        raise UserDataError(f"{where} has encoding {encoding!r}, which the pack does not model")
    raw = content.encode() if isinstance(content, str) else content
    if not isinstance(raw, bytes):
        raise UserDataError(f"{where} has non-text content")
    try:
        for step in ENCODINGS[encoding]:
            raw = base64.b64decode(raw) if step == "b64" else gzip.decompress(raw)
        return raw.decode()
    except (binascii.Error, OSError, EOFError, UnicodeDecodeError) as exc:
        raise UserDataError(f"{where} cannot be decoded as {encoding} ({exc})") from None


def entry_path(entry: dict) -> str:
    """A write_files path as cloud-init resolves it: cc_write_files takes os.path.abspath() of
    it as written (relative paths are under /), so a space before or after is part of the name."""
    return posixpath.normpath("/" + entry["path"].lstrip("/"))


def file_mode(permissions: object) -> str:
    """cloud-init's cc_write_files decode_perms(): a YAML number is the mode itself (an
    unquoted 0755 is the integer 493), text is read as octal, anything unreadable keeps the
    default 0644. Returned as octal digits without leading zeros."""
    if permissions is None:
        return "644"
    try:
        mode = int(permissions) if isinstance(permissions, (int, float)) else int(str(permissions).strip(), 8)
    except ValueError:
        mode = 0o644
    return format(mode, "o")


def written_modes(doc: dict) -> dict[str, str]:
    """path -> the octal mode the file ends with (the last entry that writes it decides)."""
    modes = {}
    for entry in doc.get("write_files") or []:
        if isinstance(entry, dict) and isinstance(entry.get("path"), str) and entry["path"].strip():
            modes[entry_path(entry)] = file_mode(entry.get("permissions"))
    return modes


def written_files(doc: dict) -> dict[str, str]:
    """write_files applied in order, as cloud-init writes them: path -> final text."""
    entries = doc.get("write_files") or []
    if not isinstance(entries, list):
        raise UserDataError("write_files is not a list")
    files: dict[str, str] = {}
    for n, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str) or not entry["path"].strip():
            raise UserDataError(f"write_files entry {n} has no path")
        path = entry_path(entry)
        where = f"write_files entry {path}"
        text = _content(entry, where)
        if entry.get("append") is True or str(entry.get("append")).lower() == "true":
            if _is_postfix_config(path) and path not in files:
                raise UserDataError(f"{where} appends to a file whose earlier content the pack cannot see")
            files[path] = files.get(path, "") + text
        else:
            files[path] = text
        if entry.get("defer") not in (None, False) and _is_postfix_config(path):
            raise UserDataError(f"{where} is deferred (written in the final stage), which the pack does not model")
    return files


def _is_postfix_config(path: str) -> bool:
    return (path.startswith(STAGING_DIR + "/") or path.startswith(POSTFIX_DIR + "/")) \
        and not path.startswith(CERT_DIR + "/")


def postfix_files(files: dict[str, str]) -> dict[str, str]:
    """Postfix's config directory as the relay runs it: staged files (installed by the
    bootstrap) or files written straight to /etc/postfix, never both for one name."""
    staged = {p[len(STAGING_DIR) + 1:]: t for p, t in files.items() if p.startswith(STAGING_DIR + "/")}
    direct = {p[len(POSTFIX_DIR) + 1:]: t for p, t in files.items() if _is_postfix_config(p)
              and p.startswith(POSTFIX_DIR + "/")}
    both = sorted(set(staged) & set(direct))
    if both:
        raise UserDataError(f"{both} written both to {STAGING_DIR} and to {POSTFIX_DIR}; the pack cannot "
                            "tell which one Postfix reads")
    return {POSTFIX_DIR + "/" + name: text for name, text in {**staged, **direct}.items()}


# --- edits after rendering ------------------------------------------------------------------

CONTRACT_FILE = Path(__file__).with_name("relay_files.json")
# Files the contract lets write a Postfix file after rendering ("writes"): reviewed assets, each
# only as pinned by its SHA-256, and only in the shape that ships it.
RUNTIME_WRITERS = {f["path"]: f for f in json.loads(CONTRACT_FILE.read_text())["files"] if f.get("writes")}


def sanctioned_writers(files: dict[str, str], shapes: set[str]) -> set[str]:
    """The written files that are a contract's runtime writer, byte for byte, in this shape."""
    return {path for path, spec in RUNTIME_WRITERS.items()
            if spec["shape"] in shapes and path in files
            and hashlib.sha256(files[path].encode()).hexdigest() == spec["sha256"]}


def post_render_edits(doc: dict, files: dict[str, str], sanctioned: frozenset[str] | set[str] = frozenset()) -> list[str]:
    """Commands in runcmd, bootcmd or any written file that would change Postfix's config,
    except in the contract's sanctioned runtime writers."""
    protected = set(postfix_files(files)) | {p for p in files if _is_postfix_config(p)} | set(sanctioned)
    found = []
    sources: list[tuple[str, str]] = []
    for key in ("bootcmd", "runcmd"):
        for n, item in enumerate(doc.get(key) or []):
            text = " ".join(shlex.quote(str(a)) for a in item) if isinstance(item, list) else str(item)
            sources.append((f"{key}[{n}]", text))
    for path, text in files.items():
        if path not in protected:
            sources.append((path, text))
    for where, text in sources:
        found += [f"{where}: {problem}" for problem in _script_edits(text)]
    return found


def _script_edits(script: str) -> list[str]:
    problems = []
    tainted: set[str] = set()  # shell variables that hold a Postfix config path
    for line in script.replace("\\\n", " ").split("\n"):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        for command in re.split(r"&&|\|\||;|\||\$\(|`|\bthen\b|\bdo\b|\belse\b", line):
            problem = _command_edit(command.strip(), tainted)
            if problem:
                problems.append(problem)
    return problems


def _words(command: str) -> list[str]:
    try:
        return shlex.split(command, comments=True)
    except ValueError:
        return command.split()


def _protected_path(word: str, tainted: set[str]) -> bool:
    if any(f"${v}" in word or f"${{{v}" in word for v in tainted):
        return True
    path = word.strip("'\"")
    if path.startswith(CERT_DIR + "/") or path == CERT_DIR:
        return False
    return (POSTFIX_DIR in path or STAGING_DIR in path
            or posixpath.basename(path) in CONFIG_NAMES)


def _command_edit(command: str, tainted: set[str]) -> str:
    words = _words(command)
    assignment = re.match(r"^(?:export\s+|local\s+|readonly\s+)?([A-Za-z_]\w*)=(.*)$", command)
    if assignment and (_protected_path(assignment.group(2), tainted)):
        tainted.add(assignment.group(1))
    for target in re.findall(r"(?<![<&])\d?>{1,2}\|?\s*([^\s;|&]+)", command):
        if _protected_path(target, tainted):
            return f"redirects output into {target} ({command[:80]!r}); the relay's config is rendered, never edited"
    if not words:
        return ""
    cmd = posixpath.basename(words[0])
    if cmd in ("sudo", "env", "nice", "timeout", "xargs") and len(words) > 1:
        words = words[1:]
        cmd = posixpath.basename(words[0])
    args = words[1:]
    if cmd in ("sh", "bash", "dash") and len(args) >= 2 and args[0] == "-c":
        return next(iter(_script_edits(args[1])), "")  # the string runs as a script of its own
    if cmd == "postconf":
        after_o = False
        for arg in args:
            if arg.startswith("-") and not arg.startswith("--"):
                if set(arg[1:]) & set("eX#"):
                    return f"runs {command[:80]!r}, which edits Postfix's configuration after rendering"
                after_o = arg.endswith("o")
                continue
            if "=" in arg and not after_o:
                return f"runs {command[:80]!r}, which edits Postfix's configuration after rendering"
            after_o = False
        return ""
    targets = [a for a in args if not a.startswith("-") and _protected_path(a, tainted)]
    if cmd in WRITERS and targets:
        if cmd in ("install", "cp") and _is_staged_install(args):
            return ""
        return f"runs {command[:80]!r}, which writes {targets[0]} after rendering"
    if cmd in IN_PLACE and any(a.startswith("-i") or a == "--in-place" or a == "inplace" for a in args) and targets:
        return f"runs {command[:80]!r}, which edits {targets[0]} in place after rendering"
    return ""


def _is_staged_install(args: list[str]) -> bool:
    """The bootstrap's one sanctioned copy: STAGING_DIR/<name> -> /etc/postfix/<name>."""
    paths = [a.strip("'\"") for a in args if not a.startswith("-") and not re.fullmatch(r"0?[0-7]{3,4}", a)]
    if len(paths) != 2:
        return False
    source, dest = paths
    return (source.startswith(STAGING_DIR + "/") and dest.startswith(POSTFIX_DIR + "/")
            and source[len(STAGING_DIR):] == dest[len(POSTFIX_DIR):])
