"""An HTTPS server for the valid-recipient list (recipients list), on loopback, in a thread:
the lab's stand-in for the URL the primary publishes its list at."""
from __future__ import annotations

import http.server
import ssl
import threading
from pathlib import Path

from . import make_tls


class ListServer:
    """Serves `body` at https://localhost:<port>/recipients.txt with a certificate for localhost
    (ca_bundle); `status` other than 200 answers that instead. Stop it with close()."""

    def __init__(self, directory: Path, body: str = "", status: int = 200):
        self.body, self.status = body, status
        self.tls = make_tls(directory, "localhost")
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                data = outer.body.encode()
                self.send_response(outer.status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.tls / "fullchain.pem", self.tls / "privkey.pem")
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.url = f"https://localhost:{self.httpd.server_address[1]}/recipients.txt"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def ca_bundle(self) -> Path:
        return self.tls / "fullchain.pem"

    def close(self) -> None:
        if self.thread.is_alive():
            self.httpd.shutdown()
            self.thread.join(10)
        self.httpd.server_close()
