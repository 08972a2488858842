"""A tiny authoritative DNS server for DNSBL zones, so postscreen's DNSBL path runs offline.

Answers A queries for <reversed client ip>.<zone> from a fixed table and NXDOMAIN for
everything else. Only what dnsblog asks is implemented."""
from __future__ import annotations

import socket
import struct
import threading

NXDOMAIN, NOERROR = 3, 0


def _qname(packet: bytes, offset: int = 12) -> tuple[str, int]:
    labels = []
    while packet[offset]:
        length = packet[offset]
        labels.append(packet[offset + 1: offset + 1 + length].decode())
        offset += 1 + length
    return ".".join(labels).lower(), offset + 1


def answer(query: bytes, table: dict[str, str]) -> bytes:
    qid, _flags, qdcount = struct.unpack(">HHH", query[:6])
    name, end = _qname(query)
    qtype = struct.unpack(">H", query[end:end + 2])[0]
    question = query[12:end + 4]
    address = table.get(name) if qtype == 1 else None
    rcode = NOERROR if address else NXDOMAIN
    header = struct.pack(">HHHHHH", qid, 0x8400 | rcode, qdcount, 1 if address else 0, 0, 0)
    body = question
    if address:
        body += b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 60, 4) + socket.inet_aton(address)
    return header + body


class DnsblServer:
    """Serve `listings` {client_ip: reply} for each zone on udp://host:53."""

    def __init__(self, host: str, zones: list[str], listings: dict[str, str]):
        self.table = {".".join(reversed(ip.split("."))) + "." + zone: reply
                      for zone in zones for ip, reply in listings.items()}
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 53))
        self.sock.settimeout(0.5)
        self.queries: list[str] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                packet, peer = self.sock.recvfrom(512)
            except OSError:
                continue
            try:
                self.queries.append(_qname(packet)[0])
                self.sock.sendto(answer(packet, self.table), peer)
            except (IndexError, struct.error, UnicodeDecodeError):
                continue

    def close(self) -> None:
        self._stop.set()
        self.thread.join(timeout=2)
        self.sock.close()
