"""A TCP proxy the fault suite controls, between one device and the broker (no iptables needed).

* :meth:`TcpProxy.stall`: stop forwarding in both directions without closing anything, as a pulled cable or
  a dead switch does: bytes wait in the proxy, TCP connections stay up, nobody notices until a keepalive runs
  out (Mosquitto: 1.5 x the client's keepalive).  :meth:`resume` forwards what waited, in order.
* :meth:`TcpProxy.cut`: close every connection and refuse new ones until :meth:`resume`, as a crashed link
  or router does: the broker sees the device leave (and publishes its last will), the device reconnects with
  backoff.
"""

from __future__ import annotations

import logging
import socket
import threading

log = logging.getLogger(__name__)


class TcpProxy:
    """``127.0.0.1:port`` -> ``target``; start with :meth:`start`, end with :meth:`close`."""

    def __init__(self, target: tuple[str, int], host: str = "127.0.0.1", port: int = 0):
        self.target = target
        self._srv = socket.socket()
        self._srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._srv.bind((host, port))
        self._srv.listen(16)
        self.host, self.port = self._srv.getsockname()[:2]
        self._flowing = threading.Event()
        self._flowing.set()
        self._refusing = False
        self._closed = False
        self._lock = threading.Lock()
        self._conns: list[tuple[socket.socket, socket.socket]] = []
        self.accepted = 0
        self.refused = 0
        self.bytes = 0

    def start(self) -> TcpProxy:
        threading.Thread(target=self._accept, name="chaos-proxy", daemon=True).start()
        return self

    # ------------------------------------------------------------------ faults
    def stall(self) -> None:
        """Hold every byte (both directions) until :meth:`resume`; connections stay open."""
        self._flowing.clear()

    def cut(self) -> None:
        """Close every connection now and refuse new ones until :meth:`resume`."""
        with self._lock:
            self._refusing = True
            conns, self._conns = self._conns, []
        for a, b in conns:
            _close(a)
            _close(b)

    def resume(self) -> None:
        with self._lock:
            self._refusing = False
        self._flowing.set()

    def close(self) -> None:
        self._closed = True
        self._flowing.set()
        self.cut()
        _close(self._srv)

    # ------------------------------------------------------------------ plumbing
    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._srv.accept()
            except OSError:
                return
            with self._lock:
                refusing = self._refusing
            if refusing:
                self.refused += 1
                _close(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError as exc:
                log.info("proxy: upstream %s refused: %s", self.target, exc)
                _close(client)
                continue
            self.accepted += 1
            with self._lock:
                self._conns.append((client, upstream))
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                self._flowing.wait()
                dst.sendall(data)
                self.bytes += len(data)
        except OSError:
            pass
        finally:
            _close(src)
            _close(dst)


def _close(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        s.close()
    except OSError:
        pass
