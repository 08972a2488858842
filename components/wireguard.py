"""The relay's WireGuard public key, derived from its private key (RFC 7748 X25519 with the
base point), so the firewall's peer entry comes out of the stack as data. Proven equal to
`wg pubkey` in tests/test_wireguard.py."""
from __future__ import annotations

import base64

_P = 2**255 - 19
_A24 = 121665


def _x25519_base(scalar: bytes) -> bytes:
    k = bytearray(scalar)
    k[0] &= 248
    k[31] = (k[31] & 127) | 64
    n = int.from_bytes(k, "little")
    x1, x2, z2, x3, z3, swap = 9, 1, 0, 9, 1, 0
    for t in reversed(range(255)):
        bit = (n >> t) & 1
        swap ^= bit
        if swap:
            x2, x3, z2, z3 = x3, x2, z3, z2
        swap = bit
        a, b = (x2 + z2) % _P, (x2 - z2) % _P
        aa, bb = a * a % _P, b * b % _P
        e = (aa - bb) % _P
        c, d = (x3 + z3) % _P, (x3 - z3) % _P
        da, cb = d * a % _P, c * b % _P
        x3, z3 = (da + cb) ** 2 % _P, x1 * (da - cb) ** 2 % _P
        x2, z2 = aa * bb % _P, e * (aa + _A24 * e) % _P
    if swap:
        x2, z2 = x3, z3
    return (x2 * pow(z2, _P - 2, _P) % _P).to_bytes(32, "little")


def public_key(private_key: str) -> str:
    """base64 public key for a base64 private key, as `wg pubkey` prints it."""
    return base64.b64encode(_x25519_base(base64.b64decode(private_key))).decode()
