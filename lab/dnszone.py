"""A loopback DNS server answering from a fixed record set (dnspython): the verifier tests' zone and
the lab's DNSBL and PTR resolver."""
from __future__ import annotations

import socket
import threading

import dns.exception
import dns.message
import dns.rcode
import dns.rrset


class ZoneServer:
    def __init__(self, host: str, port: int, records: dict[tuple[str, str], list[str]]):
        self.records = {(name.lower().rstrip(".") + ".", kind): values for (name, kind), values in records.items()}
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, port))
        self.sock.settimeout(0.5)
        self.address = f"{host}:{self.sock.getsockname()[1]}"
        self.queries: list[str] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                wire, peer = self.sock.recvfrom(4096)
            except OSError:
                continue
            try:
                query = dns.message.from_wire(wire)
                question = query.question[0]
            except (dns.exception.DNSException, IndexError):
                continue
            response = dns.message.make_response(query)
            self.queries.append(question.name.to_text().rstrip("."))
            kind = dns.rdatatype.to_text(question.rdtype)
            name = question.name.to_text().lower()
            values = self.records.get((name, kind))
            if values:
                response.answer.append(dns.rrset.from_text_list(question.name, 300, "IN", kind, values))
            elif not any(known == name for known, _ in self.records):
                response.set_rcode(dns.rcode.NXDOMAIN)  # else NODATA: the name exists with other types
            self.sock.sendto(response.to_wire(), peer)

    def close(self) -> None:
        self._stop.set()
        self.thread.join(timeout=2)
        self.sock.close()
