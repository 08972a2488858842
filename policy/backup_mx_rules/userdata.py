"""relay-user-data and free-tier-keepalive: what cloud-init puts on a relay is an allow-list.

The contract (docs/policies.md#relay-user-data), judged per relay instance:
- The cloud-config document has exactly the keys the program renders (TOP_KEYS), with the
  relay's own host name, password login and root login off, and the stack's SSH keys only.
- Every write_files path is one listed in relay_files.json, for this shape, with its mode and
  role. A static script or unit must match its pinned SHA-256: a changed asset is refused until
  its new digest is reviewed into that list (tests/test_user_data_contract.py keeps the list
  equal to what the program renders). Rendered files are judged by their own rule: the env file
  here, value by value, against the stack config; the staged Postfix files by the mail
  policies; wg-quick's config by wireguard-tunnel; the preauth key is a secret and only its
  presence and mode are judged.
- An entry uses only path, content, permissions and encoding, and each path is written once.
- runcmd and bootcmd, parsed into words (`sh -c` and `bash -c` strings recursively), are
  exactly the known sequence.
Anything else fails closed, with the path, key or command named.
"""
from __future__ import annotations

import hashlib
import json
import posixpath
import re
import shlex
from pathlib import Path

from pulumi_policy.proxy import UNKNOWN_STRING_VALUE, UnknownValueError

from . import cloudinit, environment
from .environment import FactError
from .postfix import WouldNotStart, time_value
from .view import INSTANCE, dig, known, plain, resource_policy

CONTRACT_FILE = "policy/backup_mx_rules/relay_files.json"
CONTRACT = json.loads(Path(__file__).with_name("relay_files.json").read_text())
FILES = {f["path"]: f for f in CONTRACT["files"]}
TOP_KEYS = ("hostname", "fqdn", "prefer_fqdn_over_hostname", "ssh_pwauth", "disable_root", "write_files", "runcmd",
            "bootcmd", "ssh_authorized_keys")  # runcmd, bootcmd: judged against the known sequence
FIXED_TOP = {"prefer_fqdn_over_hostname": True, "ssh_pwauth": False, "disable_root": True}
ENTRY_KEYS = {"path", "content", "permissions", "encoding"}
SHELLS = ("sh", "bash", "dash")
KEEPALIVE = "keepalive"  # every path and unit of the keep-alive carries it
KEEPALIVE_ENV = ("ACCOUNT_MODE", *CONTRACT["env_free"])
# VAR='text' (shlex.quote's form) or VAR=word with no shell syntax: nothing in the env file
# may run when a script sources it.
_ASSIGNMENT = re.compile(r"([A-Z_][A-Z0-9_]*)=(?:'([^']*)'|([A-Za-z0-9_@%+=:,./-]*))")


class ContractError(ValueError):
    pass


def shapes(account_mode: str, transport: str, tailnet: str, recipients: str = "catchall") -> set[str]:
    """The contract's shapes this stack has: every relay has "all"; "free" with accountMode
    free, "wireguard" with drainTransport wireguard, "tailnet" unless tailnet none, "list" with
    recipients list."""
    return {"all"} | {name for name, on in (("free", account_mode == "free"), ("wireguard", transport == "wireguard"),
                                            ("tailnet", tailnet != "none"), ("list", recipients == "list")) if on}


def document(props: dict, where: str) -> dict:
    value = dig(props, "metadata", "user_data")
    if value is not None and not known(value):
        raise UnknownValueError(UNKNOWN_STRING_VALUE, [where, "metadata", "user_data"])
    return cloudinit.cloud_config(cloudinit.decode(value))


def parse_env(text: str) -> dict[str, str]:
    values: dict[str, str] = {}
    # bash splits words on blanks only: a form feed, a no-break space or a CR stays in the word,
    # so such a line is a command, not an assignment; the lines are judged as bash reads them.
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip(" \t"):
            continue
        match = _ASSIGNMENT.fullmatch(line.strip(" \t"))
        if not match:
            raise ContractError(f"line {n} of the env file is not a plain VAR='value' assignment ({line[:60]!r}); "
                                "the scripts source it, so anything else would run on the relay")
        if match.group(1) in values:
            raise ContractError(f"the env file sets {match.group(1)} twice")
        values[match.group(1)] = match.group(2) if match.group(2) is not None else match.group(3)
    return values


def expected_env(hostname: str) -> dict[str, str]:
    """The env file's values, from the stack config and the contract's fixed facts."""
    host, port, _ = environment.drain_target()
    values = {
        "RELAY_HOSTNAME": hostname, "DOMAINS": " ".join(environment.domains()),
        "DRAIN_HOST": host, "DRAIN_PORT": str(port), "HOMELAB_CIDR": _homelab(),
        "BREAK_GLASS_SSH": "true" if environment.fact("breakGlassSsh") else "false",
        "CERTBOT_EMAIL": str(environment.fact("certbotEmail")),
        "TAILNET": environment.tailnet(), "HEADSCALE_LOGIN_SERVER": str(environment.fact("headscaleLoginServer")),
        "TAILNET_TAG": str(environment.fact("tailnetTag")),
        "DRAIN_TRANSPORT": environment.drain_transport(), "ACCOUNT_MODE": environment.account_mode(),
        "DRAIN_CANARY_SIZE": str(environment.fact("messageSizeLimit")),
        "QUEUE_LIFETIME_S": str(_seconds("queueLifetime")), "RECIPIENTS": environment.recipients(),
        **CONTRACT["env_fixed"],
    }
    if environment.recipients() == "list":
        values.update(CONTRACT["env_list"])
        values["RECIPIENT_LIST_URL"] = str(environment.fact("recipientListUrl"))
    if environment.account_mode() == "free":
        values.update(CONTRACT["env_free"])
    if environment.drain_transport() == "wireguard":
        values.update(CONTRACT["env_wireguard"])
        values.update({"WG_PEER_PUBLIC_KEY": str(environment.fact("wireguardPeerPublicKey")),
                       "WG_ENDPOINT": str(environment.fact("wireguardEndpoint"))})
    return values


def _homelab() -> str:
    """homelabCidr as the program reads it (Python's ip_network): a bare address is its /32."""
    return ", ".join(str(n) for n in environment.networks("homelabCidr"))


def _seconds(key: str) -> int:
    text = str(environment.fact(key)).strip()
    try:
        return time_value(key, text, "d")
    except WouldNotStart:
        raise FactError(f"stack config {environment.project()}:{key} = {text!r} is not a Postfix time") from None


def commands(items: object, where: str) -> list[list[str]]:
    """runcmd/bootcmd as the commands they run, `sh -c` strings parsed recursively."""
    if items is None:
        return []
    if not isinstance(items, list):
        raise ContractError(f"{where} is not a list")
    found: list[list[str]] = []
    for n, item in enumerate(items):
        if isinstance(item, list) and all(isinstance(w, str) for w in item):
            found += _unwrap([str(w) for w in item], f"{where}[{n}]")
        elif isinstance(item, str):
            found += _shell(item, f"{where}[{n}]")
        else:
            raise ContractError(f"{where}[{n}] is neither a command line nor a list of words")
    return found


def _shell(text: str, where: str) -> list[list[str]]:
    lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|()<>`$")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    try:
        words = list(lexer)
    except ValueError as exc:
        raise ContractError(f"{where} cannot be parsed as a shell command ({exc})") from None
    out: list[list[str]] = []
    current: list[str] = []
    for word in words + [";"]:
        if word in (";", "&&", "||", "&", "\n"):
            if current:
                out += _unwrap(current, where)
            current = []
        elif set(word) & set("|()<>`$"):
            raise ContractError(f"{where} uses shell syntax {word!r} (a pipe, redirect or substitution) that is "
                                "not the known sequence")
        else:
            current.append(word)
    return out


def _unwrap(words: list[str], where: str) -> list[list[str]]:
    if words and posixpath.basename(words[0]) in SHELLS and len(words) >= 3 and words[1] == "-c":
        return _shell(words[2], f"{where} ({words[0]} -c)")
    return [words] if words else []


def _entries(doc: dict) -> list[tuple[str, dict]]:
    entries = doc.get("write_files") or []
    if not isinstance(entries, list):
        raise ContractError("write_files is not a list")
    out = []
    for n, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str) or not entry["path"].strip():
            raise ContractError(f"write_files entry {n} has no path")
        out.append((cloudinit.entry_path(entry), entry))
    return out


def _owned(name: str, keepalive: bool, account_mode: str) -> bool:
    """With accountMode free the keep-alive's paths and env keys are free-tier-keepalive's, and
    everything else is relay-user-data's; with payg all of it is relay-user-data's."""
    mine = account_mode == "free" and (KEEPALIVE in name.lower() or name in KEEPALIVE_ENV)
    return mine == keepalive


def file_problems(doc: dict, hostname: str, mode_of_account: str, transport: str, keepalive: bool) -> list[str]:
    """Problems with write_files, for the policy `keepalive` selects (see _owned)."""
    problems = []
    active = shapes(mode_of_account, transport, environment.tailnet(), environment.recipients())
    texts = cloudinit.written_files(doc)
    modes = cloudinit.written_modes(doc)
    seen: set[str] = set()
    for path, entry in _entries(doc):
        if not _owned(path, keepalive, mode_of_account):
            continue
        if path in seen:
            problems.append(f"{path} is written twice; the relay's files are written once each")
        seen.add(path)
        extra = sorted(set(entry) - ENTRY_KEYS)
        if extra:
            problems.append(f"{path} uses write_files key(s) {extra}; the program writes path, content and "
                            "permissions only")
        known_file = FILES.get(path)
        if known_file is None or known_file["shape"] not in active:
            why = "for this shape" if known_file else f"in the pack's list of relay files ({CONTRACT_FILE})"
            problems.append(f"{path} is not {why}; the pack fails closed on files it does not know. If this is a "
                            f"reviewed change, add its line to {CONTRACT_FILE}")
            continue
    for path, spec in FILES.items():
        if not _owned(path, keepalive, mode_of_account) or spec["shape"] not in active:
            continue
        if path not in texts:
            problems.append(f"{path} ({spec['role']}) is missing from write_files")
            continue
        if modes.get(path) != spec["mode"]:
            problems.append(f"{path} is written with mode {modes.get(path)}, not {spec['mode']}")
        if spec["kind"] == "static" and _digest(texts[path]) != spec["sha256"]:
            problems.append(f"{path} ({spec['role']}) is not the reviewed asset: its SHA-256 is "
                            f"{_digest(texts[path])}, the contract pins {spec['sha256']} ({CONTRACT_FILE})")
    debconf_path = next(p for p, f in FILES.items() if f["kind"] == "debconf")
    if debconf_path in texts and not keepalive:
        want = "".join(line.format(relay=hostname) + "\n" for line in CONTRACT["debconf"])
        if texts[debconf_path] != want:
            problems.append(f"{debconf_path} is not the contract's Postfix answers ({want!r}): the bootstrap feeds "
                            "it to debconf-set-selections before Postfix is installed, and a line it refuses stops "
                            "the first boot")
    env_path = next(p for p, f in FILES.items() if f["kind"] == "env")
    if env_path in texts:
        problems += [f"{env_path}: {p}" for p in env_problems(texts[env_path], hostname, keepalive, mode_of_account)]
    return problems


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def env_problems(text: str, hostname: str, keepalive: bool, account_mode: str) -> list[str]:
    try:
        have = parse_env(text)
    except ContractError as exc:
        return [str(exc)] if not keepalive else []
    want = expected_env(hostname)
    problems = []
    for key in sorted(set(have) | set(want)):
        if not _owned(key, keepalive, account_mode):
            continue
        if key not in want:
            problems.append(f"sets {key}, which the program does not render")
        elif key not in have:
            problems.append(f"does not set {key} (expected {want[key]!r})")
        elif have[key] != want[key]:
            problems.append(f"sets {key}={have[key]!r}, but the stack config and the contract say {want[key]!r}")
    return problems


def top_problems(doc: dict, hostname: str) -> list[str]:
    problems = [f"cloud-config key {k!r} is not one the program renders" for k in doc if k not in TOP_KEYS]
    if hostname not in [h for h, _ in environment.relays()]:
        problems.append(f"fqdn {hostname!r} is not a relay this stack declares "
                        f"({', '.join(h for h, _ in environment.relays())})")
    if doc.get("hostname") != hostname.split(".")[0]:
        problems.append(f"hostname {doc.get('hostname')!r} is not the first label of the relay's name {hostname!r}")
    for key, value in FIXED_TOP.items():
        if doc.get(key) is not value:
            problems.append(f"{key} is {doc.get(key)!r}, not {value}")
    keys = environment.fact("sshAuthorizedKeys")
    if list(doc.get("ssh_authorized_keys") or []) != list(keys):
        problems.append("ssh_authorized_keys differs from stack config sshAuthorizedKeys; only the stack's keys may "
                        "log in")
    for key in ("runcmd", "bootcmd"):
        try:
            have = commands(doc.get(key), key)
        except ContractError as exc:
            problems.append(f"{exc}; the pack fails closed")
            continue
        if have != CONTRACT[key]:
            shown = "; ".join(" ".join(c) for c in have) or "nothing"
            want = "; ".join(" ".join(c) for c in CONTRACT[key]) or "nothing"
            problems.append(f"{key} runs {shown[:200]!r}, not the known sequence ({want}); anything else could "
                            "change the relay after rendering")
    return problems


def _judge(args, report_violation, keepalive: bool) -> None:
    if args.resource_type != INSTANCE:
        return
    try:
        mode, transport = environment.account_mode(), environment.drain_transport()
        if keepalive and mode != "free":
            args.not_applicable("stack config accountMode is payg: there is no keep-alive")
        doc = document(plain(args.props), args.name)
        hostname = str(doc.get("fqdn") or "").lower()
        problems = [] if keepalive else top_problems(doc, hostname)
        problems += file_problems(doc, hostname, mode, transport, keepalive)
        if keepalive:
            problems += [f"{key} {' '.join(c)!r} touches the keep-alive, which only the rendered scripts start"
                         for key in ("runcmd", "bootcmd") for c in commands(doc.get(key), key)
                         if any(KEEPALIVE in w for w in c)]
    except UnknownValueError:
        raise
    except (cloudinit.UserDataError, ContractError) as exc:
        problems = [f"cannot read user_data ({exc}); the pack fails closed"]
    except FactError as exc:
        problems = [str(exc)]
    for problem in problems:
        report_violation(f"instance '{args.name}': {problem}")


relay_user_data = resource_policy(
    "relay-user-data",
    "Every relay's cloud-config is the allow-listed contract: only the rendered keys, only the files listed in "
    "relay_files.json for this shape (static assets by SHA-256), the env file's values equal to the stack config, "
    "one write per path, and runcmd/bootcmd exactly the known sequence (sh -c parsed).",
    lambda args, report: _judge(args, report, keepalive=False))

free_tier_keepalive = resource_policy(
    "free-tier-keepalive",
    "With stack config accountMode free: the keep-alive script and unit are the reviewed assets with their modes, "
    "ACCOUNT_MODE and the KEEPALIVE_* values in the env file are the contract's, and nothing masks, overrides, "
    "throttles or stops it (no drop-in, no command naming it).",
    lambda args, report: _judge(args, report, keepalive=True))
