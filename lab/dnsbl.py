"""DNSBL zones for the lab resolver, so postscreen's DNSBL path runs offline."""
from __future__ import annotations

from .dnszone import ZoneServer


def dnsbl_server(host: str, zones: list[str], listings: dict[str, str], port: int = 53) -> ZoneServer:
    """Answer <reversed client ip>.<zone> A queries from `listings` {client_ip: reply};
    NXDOMAIN for everything else (including PTR, so no lab address has a hostname)."""
    records = {(".".join(reversed(ip.split("."))) + "." + zone, "A"): [reply]
               for zone in zones for ip, reply in listings.items()}
    return ZoneServer(host, port, records)
