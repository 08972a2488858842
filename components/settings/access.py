"""Access to the relay: how it is managed (the tailnet and its key), SSH keys and break-glass
SSH, and the certificate account. The pack's area: policy/backup_mx_rules/userdata.py
(relay-user-data: the env file, the key file for the shape, the SSH keys) and security-list for
SSH."""
from __future__ import annotations

import re
from typing import Optional

from ..grammar import email_problem, https_url_problem, ssh_key_problem
from .model import SecretConfig
from .reader import Reader

# How the relay is managed: joins headscale, joins Tailscale's hosted tailnet, or neither
# (SSH only with breakGlassSsh, else the OCI console).
TAILNETS = ("headscale", "tailscale", "none")
# The tailnet key's name, and a neutral one for it (a Tailscale auth key is no headscale key);
# a stack sets one of the two.
TAILNET_KEY, TAILNET_KEY_ALIAS = "headscalePreauthKey", "tailnetAuthKey"
SECRET_KEYS = (TAILNET_KEY, TAILNET_KEY_ALIAS, "wireguardPrivateKey")


def required_secrets(tailnet: str, drain_transport: str) -> tuple[str, ...]:
    """The secret keys a shape needs: the tailnet key unless tailnet none, the WireGuard key
    with drainTransport wireguard. (The offline preview stands in a placeholder for these.)"""
    return tuple(key for key, needed in (("headscalePreauthKey", tailnet != "none"),
                                         ("wireguardPrivateKey", drain_transport == "wireguard")) if needed)


def check(r: Reader, v: dict) -> None:
    if email_problem(v["certbotEmail"]):
        r.fail("certbotEmail", f"{v['certbotEmail']!r} {email_problem(v['certbotEmail'])}")
    _tailnet(r, v)
    if not re.fullmatch(r"tag:[a-z0-9-]+", v["tailnetTag"]):
        r.fail("tailnetTag", f"{v['tailnetTag']!r} must look like tag:backup-mx")
    for key in v["sshAuthorizedKeys"]:
        problem = ssh_key_problem(key)
        if problem:
            r.fail("sshAuthorizedKeys", f"{key[:30]!r}... {problem}")


def _tailnet(r: Reader, v: dict) -> None:
    """headscale needs its login server; tailscale and none take none (Tailscale's own control
    server is the client's default)."""
    tailnet, server = v["tailnet"], v["headscaleLoginServer"]
    if tailnet not in TAILNETS:
        r.fail("tailnet", f"{tailnet!r} is not allowed; allowed: {', '.join(TAILNETS)}")
    elif tailnet == "headscale" and not server:
        r.fail("headscaleLoginServer", "is required with tailnet headscale: the https URL of your headscale server "
                                       "(or set tailnet: tailscale, or none)")
    elif tailnet == "headscale" and https_url_problem(server):
        r.fail("headscaleLoginServer", f"{server!r} {https_url_problem(server)}; allowed: https://host[:port][/path]")
    elif tailnet != "headscale" and server:
        r.fail("headscaleLoginServer", f"is set but tailnet is {tailnet}; set tailnet: headscale, or remove it")


def _given(key: Optional[SecretConfig]) -> bool:
    return key is not None and (bool(key.text) or key.secret)


def tailnet_key(r: Reader, key: Optional[SecretConfig], alias: Optional[SecretConfig]
                ) -> tuple[str, Optional[SecretConfig]]:
    """The tailnet key and the name the stack gave it: headscalePreauthKey or tailnetAuthKey,
    never both (which one would the relay join with?)."""
    if _given(key) and _given(alias):
        r.fail(TAILNET_KEY_ALIAS, f"is set, and so is {TAILNET_KEY}, its other name; keep one, e.g. "
                                  f"`pulumi config rm {TAILNET_KEY}`")
    if _given(alias) or key is None:
        return TAILNET_KEY_ALIAS, alias
    return TAILNET_KEY, key


def check_tailnet_key(r: Reader, key: Optional[SecretConfig], tailnet: str, name: str = TAILNET_KEY) -> None:
    """The tailnet key: required, encrypted and one clean line with a tailnet; absent without.
    Never echoed. None: not passed (renderer tests), so not judged."""
    if key is None or tailnet not in TAILNETS:
        return  # tailnet is named above
    how = f"set it with `pulumi config set --secret {name} <key>`"
    if tailnet == "none":
        if key.text:
            r.fail(name, "is set but tailnet is none, so nothing would use it; remove it with "
                         f"`pulumi config rm {name}`, or set tailnet: headscale or tailscale")
        return
    kind = "a headscale preauth key" if tailnet == "headscale" else "a Tailscale auth key tagged with tailnetTag"
    if not key.text and not key.secret:
        r.fail(name, f"is required with tailnet {tailnet} ({kind}); {how} (or under its neutral name "
                     f"{TAILNET_KEY_ALIAS}), or set tailnet: none")
    elif not key.secret:
        r.fail(name, "is stored in plain text in the stack file; remove it there and " + how)
    elif not key.text:
        r.fail(name, f"is empty; {how} (a single-use key that expires within a day)")
    elif any(c.isspace() or not c.isprintable() for c in key.text):
        r.fail(name, f"contains whitespace or control characters (a paste error?); {how}")
