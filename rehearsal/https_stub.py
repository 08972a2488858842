"""A static HTTP(S) server for the rehearsal's stubs (tailscale apt repository, headscale, the
Ubuntu archive name the egress check connects to)."""
import argparse
import functools
import http.server
import ssl


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--bind", required=True)
    p.add_argument("--port", type=int, default=443)
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--root", required=True)
    a = p.parse_args()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=a.root)
    server = http.server.ThreadingHTTPServer((a.bind, a.port), handler)
    if a.cert:  # plain HTTP without a certificate
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(a.cert, a.key)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
