"""Ground-floor grammars the settings check values against: host names, addresses, https
URLs, e-mail addresses and SSH public keys. Nothing here imports the rest.

SSH public keys are read the way sshd reads an authorized_keys line (OpenSSH auth2-pubkeyfile.c
check_authkey_line -> sshkey_read -> sshkey_from_blob_internal in sshkey.c): the base64 blob
must decode, the key type named inside it must equal the one written before it, every field
must be present with the length its type demands, and nothing may follow the last field
(SSH_ERR_UNEXPECTED_TRAILING_DATA). A line that fails any of these is skipped by sshd, which
locks the operator out.
"""
from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from urllib.parse import urlsplit

# key type -> the curve name its blob carries (ECDSA) or None
SSH_KEY_TYPES = {
    "ssh-ed25519": None,
    "ssh-rsa": None,
    "ecdsa-sha2-nistp256": "nistp256",
    "ecdsa-sha2-nistp384": "nistp384",
    "ecdsa-sha2-nistp521": "nistp521",
    "sk-ssh-ed25519@openssh.com": None,
    "sk-ecdsa-sha2-nistp256@openssh.com": "nistp256",
}
ED25519_KEY_BYTES = 32  # crypto_sign_ed25519_PUBLICKEYBYTES
EC_POINT_BYTES = {"nistp256": 65, "nistp384": 97, "nistp521": 133}  # uncompressed 0x04 || X || Y
RSA_MIN_BITS = 1024  # SSH_RSA_MINIMUM_MODULUS_SIZE; sshd refuses smaller moduli
_LINE = re.compile(r"(?P<type>\S+) (?P<blob>[A-Za-z0-9+/]+={0,2})(?: [\x21-\x7e][\x20-\x7e]*)?")


class _Blob:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def string(self) -> bytes:
        """An SSH wire string: uint32 length, then that many bytes (sshbuf_get_string)."""
        if self.pos + 4 > len(self.data):
            raise ValueError("the blob ends inside a length field")
        size = int.from_bytes(self.data[self.pos:self.pos + 4], "big")
        start, self.pos = self.pos + 4, self.pos + 4 + size
        if self.pos > len(self.data):
            raise ValueError("the blob ends inside a field")
        return self.data[start:self.pos]

    def mpint(self) -> int:
        raw = self.string()
        if raw[:1] and raw[0] & 0x80:
            raise ValueError("a negative number where the key needs a positive one")
        return int.from_bytes(raw, "big")

    def done(self) -> bool:
        return self.pos == len(self.data)


def ssh_key_problem(line: str) -> str:
    """'' when sshd would accept `line` as one authorized key; else what is wrong."""
    match = _LINE.fullmatch(line)
    if not match:
        return "is not one SSH public key on one line (type, base64 blob, optional comment; no newline, no options)"
    kind, blob = match["type"], match["blob"]
    if kind not in SSH_KEY_TYPES:
        allowed = ", ".join(SSH_KEY_TYPES)
        extra = " (ssh-dss: DSA keys are disabled in current OpenSSH)" if kind == "ssh-dss" else ""
        return f"has key type {kind!r}{extra}; allowed: {allowed}"
    try:
        reader = _Blob(base64.b64decode(blob, validate=True))
        named = reader.string().decode("ascii", "replace")
        if named != kind:
            return f"says {kind} but its blob holds a {named!r} key; paste the whole line from the .pub file"
        problem = _fields(kind, reader)
    except (binascii.Error, ValueError) as exc:
        return f"has a blob that is not a {kind} key ({exc}); paste the whole line from the .pub file"
    return problem


def _fields(kind: str, reader: _Blob) -> str:
    curve = SSH_KEY_TYPES[kind]
    if kind in ("ssh-ed25519", "sk-ssh-ed25519@openssh.com"):
        if len(reader.string()) != ED25519_KEY_BYTES:
            return f"has an Ed25519 key that is not {ED25519_KEY_BYTES} bytes"
    elif kind == "ssh-rsa":
        exponent, modulus = reader.mpint(), reader.mpint()
        if exponent < 3 or exponent % 2 == 0:
            return "has an RSA key with an invalid public exponent"
        if modulus.bit_length() < RSA_MIN_BITS:
            return f"has an RSA key of {modulus.bit_length()} bits; sshd needs at least {RSA_MIN_BITS}"
    elif curve is not None:
        named_curve = reader.string().decode("ascii", "replace")
        if named_curve != curve:
            return f"says {kind} but names curve {named_curve!r}"
        point = reader.string()
        if len(point) != EC_POINT_BYTES[curve] or point[0] != 4:
            return f"has an EC point that is not an uncompressed {curve} point"
    if kind.startswith("sk-"):
        reader.string()  # the FIDO application, e.g. ssh:
    if not reader.done():
        return "has bytes after the key (a truncated or joined paste?)"
    return ""

# RFC 1123 host names, lower case, with a TLD of letters (what the relay, the primary and the
# DNS records may be called).
HOSTNAME = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")


def host_name(text: str) -> str:
    """A host or domain name as every setting compares and renders it: DNS names are
    case-insensitive and `name.` is `name` (RFC 4343, RFC 1034 section 3.1); one dot only,
    so `name..` stays malformed."""
    return text.lower().removesuffix(".")


def is_ipv4(text: str) -> bool:
    try:
        return ipaddress.ip_address(text).version == 4
    except ValueError:
        return False


def is_cidr(text: str) -> bool:
    try:
        ipaddress.ip_network(text, strict=False)
        return True
    except ValueError:
        return False


def https_url_problem(url: str) -> str:
    """'' when `url` is https://host[:port][/path] with nothing a shell or a quote could act on
    (the relay's scripts pass it to commands); else what is wrong."""
    if any(c.isspace() or not c.isprintable() for c in url):
        return "contains whitespace or control characters"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"is not a valid URL ({exc})"
    if parts.scheme != "https":
        return "must use https://"
    if parts.username or parts.password or parts.query or parts.fragment:
        return "must not carry credentials, a query or a fragment"
    if not parts.hostname or not (HOSTNAME.match(parts.hostname) or is_ipv4(parts.hostname)):
        return "has no valid host name"
    if port is not None and not 1 <= port <= 65535:
        return f"has port {port}, outside 1..65535"
    if re.search(r"[\"'`$;&|<>\\]", url):
        return "contains shell or quoting metacharacters"
    return ""


def email_problem(address: str) -> str:
    """'' for a plain address: letters, digits and . _ + - before the @, a host name after it."""
    local, _, domain = address.rpartition("@")
    if re.fullmatch(r"[A-Za-z0-9._+-]{1,64}", local) and HOSTNAME.match(domain.lower()):
        return ""
    return "is not a plain e-mail address (letters, digits and . _ + - before the @, a domain name after it)"
