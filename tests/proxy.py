"""A TCP proxy between a browser and a server: the network, as the tests break it.

`cut()` resets every connection through it at once, as a dropped Wi-Fi or a NAT that
forgot the connection would (the browser sees its WebSocket fail, 1006). `upstream` may
change between connections: a server restarted on another port. Every thread it starts
ends by `close()`.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from types import TracebackType

from servers import bound_socket


def _reset(sock: socket.socket) -> None:
    """Close with a reset (RST), not a polite FIN.

    A thread blocked in `recv` on the socket keeps it open in the kernel after `close`:
    shutting down its reading side first wakes that thread, and the reset goes out once
    both let go of it (lingering 0 s)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RD)
    with contextlib.suppress(OSError):
        sock.close()


class TcpProxy:
    """Forwards 127.0.0.1:`port` to 127.0.0.1:`upstream`."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self._listener = bound_socket()
        self._listener.listen(64)
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._closed = False
        self._start(self._accept)

    def _start(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            try:
                server = socket.create_connection(("127.0.0.1", self.upstream), timeout=2)
                server.settimeout(None)
            except OSError:
                _reset(client)  # the server is down: the browser's connection fails
                continue
            with self._lock:
                if self._closed:
                    _reset(client)
                    _reset(server)
                    return
                self._open.update((client, server))
            self._start(self._pump, client, server)
            self._start(self._pump, server, client)

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
            target.shutdown(socket.SHUT_WR)  # a clean end goes through as one
        except OSError:
            pass  # cut, or the other side reset: the pair is done
        finally:
            with self._lock:
                done = source in self._open
                self._open.discard(source)
            if done:
                with contextlib.suppress(OSError):
                    source.close()

    def cut(self) -> None:
        """Reset every connection through the proxy now (new ones are let through)."""
        with self._lock:
            sockets, self._open = list(self._open), set()
        for sock in sockets:
            _reset(sock)

    def close(self) -> None:
        with self._lock:
            self._closed = True
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self.cut()
        for thread in list(self._threads):
            thread.join(5)

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
