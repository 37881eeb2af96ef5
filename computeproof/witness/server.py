"""`computeproof witness serve`: the witness over HTTP, with the standard library.

Why not the collector's FastAPI stack: a witness is meant to run somewhere else than the
ledger, by someone else (a funder, a partner site), on a small host with nothing but this
package. Its interface is two plain-text endpoints, its load is one request per
checkpoint per log (about one a second), and its security is its key and its state
file. ``http.server`` serves that with no dependency to install or keep patched, and the
whole request path fits on a page. Bounded: request bodies (64 KiB), concurrent requests
(64; more get 503), and a 10 s socket timeout per connection.

    POST <prefix>/add-checkpoint              C2SP tlog-witness
    GET  <prefix>/computeproof/log-key?origin=O   the signed log key statement (logkey.py)
    GET  <prefix>/                             this witness's verifier key
"""

from __future__ import annotations

import http.server
import logging
import threading
import urllib.parse
from typing import Any

from computeproof.errors import WitnessError
from computeproof.witness.service import MAX_REQUEST_BYTES, Response, Witness

MAX_CONCURRENT = 64
SOCKET_TIMEOUT_S = 10.0
log = logging.getLogger("computeproof.witness")


class _Handler(http.server.BaseHTTPRequestHandler):
    server: WitnessHTTPServer
    timeout = SOCKET_TIMEOUT_S
    protocol_version = "HTTP/1.1"  # keep-alive, as the spec recommends

    def _send(self, r: Response) -> None:
        self.send_response(r.status)
        self.send_header("Content-Type", r.content_type)
        self.send_header("Content-Length", str(len(r.body)))
        self.end_headers()
        self.wfile.write(r.body)

    def _guarded(self, work: Any) -> None:
        if not self.server.slots.acquire(blocking=False):
            self._send(Response(503, b"busy: too many requests at once\n"))
            return
        try:
            self._send(work())
        except WitnessError as e:
            log.error("witness: %s", e)
            self._send(Response(500, f"witness error: {e}\n".encode()))
        finally:
            self.server.slots.release()

    def do_POST(self) -> None:
        """add-checkpoint."""
        path = urllib.parse.urlsplit(self.path).path
        if path != self.server.prefix + "/add-checkpoint":
            self._send(Response(404, b"not found\n"))
            return
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            self._send(Response(411, b"a Content-Length is required\n"))
            return
        if int(length) > MAX_REQUEST_BYTES:
            self._send(Response(413, b"request too large\n"))
            self.close_connection = True
            return
        body = self.rfile.read(int(length))
        self._guarded(lambda: self.server.witness.add_checkpoint(body))

    def do_GET(self) -> None:
        """The verifier key, or a log key statement."""
        url = urllib.parse.urlsplit(self.path)
        if url.path in (self.server.prefix + "/", self.server.prefix or "/"):
            self._send(Response(200, (self.server.witness.vkey + "\n").encode()))
        elif url.path == self.server.prefix + "/computeproof/log-key":
            origin = urllib.parse.parse_qs(url.query).get("origin", [""])[0]
            self._guarded(lambda: self.server.witness.log_key_statement(origin))
        else:
            self._send(Response(404, b"not found\n"))

    def log_message(self, format: str, *args: Any) -> None:
        """Access log lines go to the logger, not to stderr."""
        log.info("%s %s", self.address_string(), format % args)


class WitnessHTTPServer(http.server.ThreadingHTTPServer):
    """The HTTP server of one witness."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], witness: Witness, prefix: str = "") -> None:
        self.witness = witness
        self.prefix = prefix.rstrip("/")
        self.slots = threading.BoundedSemaphore(MAX_CONCURRENT)
        try:
            super().__init__(address, _Handler)
        except OSError as e:
            raise WitnessError(f"cannot listen on {address[0]}:{address[1]}: {e.strerror}") from e

    @property
    def url(self) -> str:
        """The submission prefix, as a ledger's config names it."""
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}{self.prefix}"
