"""A local HTTP origin for the proxy benchmark, run as its own process: ``python bench/origin.py PORT``.

``/page?n=..`` answers ``--size`` bytes with ``Cache-Control: max-age=3600`` (cacheable, a different URL per
``n``); ``/private?n=..`` the same with ``no-store``. HTTP/1.1 keep-alive, so a direct client pays no
connection per request, as a client of the proxy doesn't either.
"""

from __future__ import annotations

import argparse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("port", type=int)
    parser.add_argument("--size", type=int, default=10 * 1024)
    args = parser.parse_args()
    body = b"s" * args.size

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall

        def do_GET(self) -> None:
            cache_control = "no-store" if self.path.startswith("/private") else "public, max-age=3600"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", cache_control)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            """Quiet: one line per request would cost the origin more than the request itself."""

    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
