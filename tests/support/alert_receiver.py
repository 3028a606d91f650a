"""A local HTTPS receiver of Falco JSON alerts, accepting what falcosidekick's main
handler accepts (a POST whose JSON body has a non-empty `output`, else 400), with
mutual TLS: clients must present a certificate signed by the given CA. Loopback only.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


@dataclass
class Received:
    """What the receiver got: accepted bodies with their headers, and refusals."""

    alerts: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    rejected: int = 0
    fail_next: int = 0          # answer this many POSTs with 503 first
    lock: threading.Lock = field(default_factory=threading.Lock)

    def wait(self, pred: Any, timeout_s: float = 15.0) -> list[dict[str, Any]]:
        """The alerts for which `pred(alert)` holds, once there is one (or the timeout)."""
        deadline = time.monotonic() + timeout_s
        while True:
            with self.lock:
                hits = [a for a in self.alerts if pred(a)]
            if hits or time.monotonic() > deadline:
                return hits
            time.sleep(0.05)


def _handler(received: Received) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with received.lock:
                if received.fail_next > 0:
                    received.fail_next -= 1
                    self._answer(503, b"busy")
                    return
                try:
                    alert = json.loads(body)
                    ok = isinstance(alert, dict) and bool(alert.get("output"))
                except ValueError:
                    ok = False
                if not ok:
                    received.rejected += 1
                    self._answer(400, b"Please send a valid request body")
                    return
                received.alerts.append(alert)
                received.headers.append(dict(self.headers))
            self._answer(200, b"")

        def _answer(self, code: int, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


@contextmanager
def https_receiver(cert: Path, key: Path, client_ca: Path) -> Iterator[tuple[str, Received]]:
    """Serve on 127.0.0.1 (a free port) until the block ends: (url, Received)."""
    received = Received()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(received))
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    ctx.load_verify_locations(client_ca)
    ctx.verify_mode = ssl.CERT_REQUIRED
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://localhost:{server.server_address[1]}/", received
    finally:
        server.shutdown()
        server.server_close()
