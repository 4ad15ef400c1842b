"""A TCP proxy that really drops connections, for tests of reconnecting to real servers."""

from __future__ import annotations

import random
import threading
from pathlib import Path

from .crash import Storage


class DroppingProxy:
    """A TCP proxy on 127.0.0.1 that really drops connections: each one is reset (RST, both ways) after
    a seeded random number of bytes, with mean ``mean_bytes``. Put it between tuckbox and a real server
    to prove that lost connections are re-established and the operations in flight retried.
    """

    def __init__(self, target_host: str, target_port: int, *, seed: int, mean_bytes: int) -> None:
        import socket

        self.target = (target_host, target_port)
        self.mean = mean_bytes
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.drops = 0
        self.connections = 0
        self._server = socket.socket()
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(64)
        self.port = self._server.getsockname()[1]
        self._stop = threading.Event()
        self._socks: set[Any] = set()
        self._threads = [threading.Thread(target=self._accept, name="proxy-accept", daemon=True)]
        self._threads[0].start()

    def _accept(self) -> None:
        import socket

        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self.connections += 1
                budget = max(4096, int(self._rng.expovariate(1 / self.mean)))
                self._socks |= {client, upstream}
            state = {"left": budget, "dropped": False}
            for a, b in ((client, upstream), (upstream, client)):
                pump = threading.Thread(target=self._pump, args=(a, b, client, upstream, state), daemon=True)
                pump.start()
                with self._lock:
                    self._threads.append(pump)

    def _reset(self, *socks: Any) -> None:
        import socket
        import struct

        for s in socks:
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # the last close sends RST
                s.shutdown(socket.SHUT_RD)  # wakes the other pump's recv, so the socket really gets closed
            except OSError:
                pass
            try:
                s.close()
            except OSError:
                pass

    def _pump(self, src: Any, dst: Any, client: Any, upstream: Any, state: dict[str, Any]) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                with self._lock:
                    state["left"] -= len(data)
                    drop = state["left"] <= 0 and not state["dropped"]
                    if drop:
                        state["dropped"] = True
                        self.drops += 1
                if drop:
                    dst.sendall(data[: len(data) // 2])  # part of the message gets through, then the line dies
                    self._reset(client, upstream)
                    return
                dst.sendall(data)
        except OSError:
            pass
        try:
            dst.shutdown(1)  # half-close: pass the EOF on
        except OSError:
            pass

    def close(self) -> None:
        """Stop accepting, cut every connection, and wait for the proxy's threads to end.

        (Closing a socket does not wake a thread blocked on it; ``shutdown`` does. A thread left
        behind would keep later restores in the test process from forking their workers.)
        """
        import socket

        self._stop.set()
        with self._lock:
            socks, self._socks = [self._server, *self._socks], set()
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                s.close()
            except OSError:
                pass
        with self._lock:
            threads = list(self._threads)
        for t in threads:
            t.join(timeout=10)


def through_proxy(storage: Storage, proxy: DroppingProxy, tmp: Path) -> Storage:
    """The same repository, reached through ``proxy`` (SFTP: a known_hosts entry for the proxy's port)."""
    from urllib.parse import urlsplit

    if storage.kind == "sftp":
        u = urlsplit(storage.url)
        url = storage.url.replace(f"{u.hostname}:{u.port}", f"127.0.0.1:{proxy.port}", 1)
        kh = tmp / "proxy_known_hosts"
        lines = Path(storage.options["sftp.known_hosts"]).read_text().splitlines()
        kh.write_text("\n".join(ln.replace(f"[{u.hostname}]:{u.port}", f"[127.0.0.1]:{proxy.port}") for ln in lines) + "\n")
        return Storage(storage.kind, url, {**storage.options, "sftp.known_hosts": str(kh)}, dict(storage.env),
                       storage.local_root, storage.connections)
    if storage.kind == "s3":
        u = urlsplit(storage.options["s3.endpoint"])
        endpoint = f"{u.scheme}://127.0.0.1:{proxy.port}"
        return Storage(storage.kind, storage.url, {**storage.options, "s3.endpoint": endpoint}, dict(storage.env),
                       storage.local_root, storage.connections)
    raise ValueError(f"no proxy for {storage.kind} storage")
