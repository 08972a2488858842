"""A raw SMTP client that records every reply, for probes where smtplib hides too much
(pregreet, pipelining, odd recipients). Bounded: every read has a timeout."""
from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

CRLF = b"\r\n"


@dataclass
class Reply:
    command: str
    code: int
    text: str


@dataclass
class Session:
    replies: list[Reply] = field(default_factory=list)

    def codes(self, command_prefix: str = "") -> list[int]:
        return [r.code for r in self.replies if r.command.upper().startswith(command_prefix.upper())]

    @property
    def accepted(self) -> bool:
        """The message was taken (250 after the end of DATA)."""
        return any(r.command == "." and r.code == 250 for r in self.replies)


class Client:
    def __init__(self, port: int, source: str = "127.0.0.1", host: str = "127.0.0.1", timeout: float = 60):
        self.sock = socket.create_connection((host, port), timeout=timeout, source_address=(source, 0))
        self.buf = b""
        self.session = Session()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def _line(self) -> bytes:
        while CRLF not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("server closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(CRLF, 1)
        return line

    def read(self, command: str) -> Reply:
        lines, code = [], None
        while True:
            raw = self._line()
            line = raw.decode(errors="replace")
            if code is not None and line[:3] != code:
                # postscreen's teaser "220-" can be followed directly by the next reply.
                self.buf = raw + CRLF + self.buf
                break
            code = line[:3]
            lines.append(line[4:])
            if len(line) < 4 or line[3] != "-":
                break
        reply = Reply(command, int(code), "\n".join(lines))
        self.session.replies.append(reply)
        return reply

    def send(self, raw: bytes) -> None:
        self.sock.sendall(raw)

    def cmd(self, command: str) -> Reply:
        self.send(command.encode() + CRLF)
        return self.read(command.split(" ")[0] if not command.startswith(("MAIL", "RCPT")) else command[:4])


def message(lab_id: str, size: int = 1024, headers: dict[str, str] | None = None, body_line: str = "x",
            received: int = 0) -> bytes:
    hops = "".join(f"Received: from hop{i}.example.net by hop{i + 1}.example.net; Tue, 24 Nov 2026 10:00:00 +0000\r\n"
                   for i in range(received))
    head = {"From": "sender@example.com", "To": "rcpt@viktorbarzin.me", "Subject": f"lab {lab_id}",
            "Message-ID": f"<{uuid.uuid4().hex}@lab.invalid>", "X-Lab-Id": lab_id, **(headers or {})}
    text = hops + "".join(f"{k}: {v}\r\n" for k, v in head.items()) + "\r\n"
    line = (body_line * 76)[:76] + "\r\n"
    body = line * max(1, (size - len(text)) // len(line))
    return (text + body).encode()


def dot_stuff(data: bytes) -> bytes:
    lines = data.split(CRLF)
    return CRLF.join(b"." + ln if ln.startswith(b".") else ln for ln in lines)


def deliver(port: int, mail_from: str, rcpts: list[str], data: bytes, source: str = "127.0.0.1",
            ehlo: str = "client.example.com", mail_params: str = "", pipelining: bool = False,
            pregreet: bool = False) -> Session:
    """One SMTP transaction; returns every reply. Never raises: a refused or dropped connection
    is recorded as a reply with command 'connection' and code 0."""
    try:
        c = Client(port, source)
    except OSError as exc:
        return Session([Reply("connection", 0, str(exc))])
    try:
        if pregreet:
            c.send(f"EHLO {ehlo}\r\n".encode())  # talks before the banner, like spambots
            c.read("banner")
            c.read("EHLO")
        else:
            c.read("banner")
            c.cmd(f"EHLO {ehlo}")
        if c.session.replies[-1].code >= 400:
            return c.session
        if pipelining:
            cmds = [f"MAIL FROM:<{mail_from}>{mail_params}"] + [f"RCPT TO:<{r}>" for r in rcpts] + ["DATA"]
            c.send(b"".join(x.encode() + CRLF for x in cmds))
            for x in cmds:
                c.read(x[:4] if x != "DATA" else "DATA")
        else:
            if c.cmd(f"MAIL FROM:<{mail_from}>{mail_params}").code >= 400:
                c.cmd("QUIT")
                return c.session
            for r in rcpts:
                c.cmd(f"RCPT TO:<{r}>")
            if not any(x.code == 250 for x in c.session.replies if x.command == "RCPT"):
                c.cmd("QUIT")
                return c.session
            c.cmd("DATA")
        if c.session.replies[-1].code == 354:
            c.send(dot_stuff(data) + (b"" if data.endswith(CRLF) else CRLF) + b"." + CRLF)
            c.read(".")
        elif pipelining:
            pass
        try:
            c.cmd("QUIT")
        except (ConnectionError, OSError):
            pass
    except (ConnectionError, OSError) as exc:
        c.session.replies.append(Reply("connection", 0, str(exc)))
    finally:
        c.close()
    return c.session


def send_many(port: int, count: int, prefix: str, size_of: Callable[[int], int] = lambda i: 1024,
              threads: int = 4, source_of: Callable[[int], str] = lambda i: "127.0.0.1",
              domain: str = "viktorbarzin.me") -> dict[str, Session]:
    """`count` messages over `threads` parallel connections (thread t sends i = t, t+threads,
    ...), each tagged X-Lab-Id: <prefix>-<i>; returns {lab id: Session}."""
    sessions: dict[str, Session] = {}
    lock = threading.Lock()

    def worker(start: int) -> None:
        for i in range(start, count, threads):
            lab_id = f"{prefix}-{i:04d}"
            s = deliver(port, "sender@example.com", [f"user{i % 7}@{domain}"], message(lab_id, size_of(i)),
                        source=source_of(i))
            with lock:
                sessions[lab_id] = s

    pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=900)
    return sessions
