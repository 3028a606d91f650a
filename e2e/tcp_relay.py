"""A TCP relay: accept on one address, pipe each connection to another, byte for byte.

The local API server listens on loopback only, which a pod's network namespace cannot
reach and which Kubernetes refuses as an endpoint address. The node harness relays its
node address (on the CNI bridge) to the API server, so the `kubernetes` Service has an
endpoint pods and host-network pods can use through kube-proxy. TLS passes through
untouched: clients still verify the API server's certificate and authenticate to it.
"""

from __future__ import annotations

import selectors
import socket
import threading
from dataclasses import dataclass

#: How often the accept loop checks whether it should stop, in seconds.
ACCEPT_POLL_SECONDS = 0.5
#: Bytes moved per read.
CHUNK = 65536


@dataclass
class RelayCounters:
    """What the relay did: connections relayed, and connections lost because the target
    refused them (each such client sees its connection closed)."""

    relayed: int = 0
    target_failures: int = 0


class TcpRelay:
    """Relay `listen` (host, port) to `target` (host, port) until stop()."""

    def __init__(self, listen: tuple[str, int], target: tuple[str, int]) -> None:
        self.listen = listen
        self.target = target
        self.counters = RelayCounters()
        self._server: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind and start accepting; raises OSError when the address cannot be bound."""
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(self.listen)
        server.listen(64)
        server.settimeout(ACCEPT_POLL_SECONDS)
        self._server = server
        self._stopping.clear()
        self._thread = threading.Thread(target=self._accept_loop, name="tcp-relay",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting and close every relayed connection; idempotent."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._server is not None:
            self._server.close()
            self._server = None
        with self._lock:
            for sock in self._open:
                _close(sock)
            self._open.clear()

    def _accept_loop(self) -> None:
        assert self._server is not None
        while not self._stopping.is_set():
            try:
                client, _address = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.target, timeout=10.0)
        except OSError:
            with self._lock:
                self.counters.target_failures += 1
            _close(client)
            return
        upstream.settimeout(None)
        with self._lock:
            self.counters.relayed += 1
            self._open.update((client, upstream))
        try:
            self._pump(client, upstream)
        finally:
            with self._lock:
                self._open.difference_update((client, upstream))
            _close(client)
            _close(upstream)

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        """Copy both ways until both sides have ended (half-closes are passed on)."""
        peer = {client: upstream, upstream: client}
        reading = {client, upstream}
        with selectors.DefaultSelector() as selector:
            for sock in reading:
                selector.register(sock, selectors.EVENT_READ)
            while reading and not self._stopping.is_set():
                for key, _events in selector.select(timeout=ACCEPT_POLL_SECONDS):
                    source = key.fileobj
                    assert isinstance(source, socket.socket)
                    try:
                        chunk = source.recv(CHUNK)
                        if chunk:
                            peer[source].sendall(chunk)
                            continue
                        peer[source].shutdown(socket.SHUT_WR)
                    except OSError:
                        return
                    selector.unregister(source)
                    reading.discard(source)


def _close(sock: socket.socket) -> None:
    try:
        sock.close()
    except OSError:
        pass
