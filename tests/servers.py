"""Real servers for transport tests: uvicorn in a thread, or in a subprocess.

Sockets are bound before uvicorn starts (port 0), so tests never race for a free port.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import uvicorn

from cello import App
from cello.serving import WS_PROTOCOL, Server

#: uvicorn's WebSocket backends that speak the denial-response extension, and cello's
#: corrected `websockets-sansio` (`WS_PROTOCOL`, what `app.run()` serves with).
WS_BACKENDS = ("websockets", "websockets-sansio", WS_PROTOCOL, "wsproto")
#: The backends that parse the upgrade request with websockets' sans-I/O `ServerProtocol`.
SANSIO_BACKENDS = ("websockets-sansio", WS_PROTOCOL)

ROOT = Path(__file__).resolve().parent.parent


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll `condition` until it holds (True) or `timeout` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def handler_budget(runner: str, limit: int) -> dict[str, int]:
    """`App` options that allow `limit` sync handlers at once on `runner`."""
    return {"websocket_threads" if runner == "thread" else "websocket_greenlets": limit}


def busy_handlers(app: App) -> int:
    """Sync handlers running now, on either runner (threads and greenlets)."""
    return app.handler_threads.busy + app.handler_greenlets.busy


def bound_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.set_inheritable(True)
    return sock


class ThreadServer:
    """A uvicorn serving `app` on a loopback port from a background thread; by default
    with the WebSocket backend `app.run()` serves with (`WS_PROTOCOL`)."""

    def __init__(self, app: App, ws: str = WS_PROTOCOL, **options: Any) -> None:
        self.sock = bound_socket()
        self.port: int = self.sock.getsockname()[1]
        options.setdefault("log_level", "warning")
        options.setdefault("lifespan", "on")
        options.setdefault("timeout_graceful_shutdown", 5)
        config = uvicorn.Config(app, ws=ws, **options)  # type: ignore[arg-type]
        # A cello app gets cello's server (1001 on shutdown); anything else plain uvicorn.
        self.server = Server(config, app) if isinstance(app, App) else uvicorn.Server(config)
        self.thread = threading.Thread(target=self._serve, name="test-uvicorn", daemon=True)

    def _serve(self) -> None:
        asyncio.run(self.server.serve(sockets=[self.sock]))

    def url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def http_url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def __enter__(self) -> ThreadServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(15)
        self.sock.close()
        assert not self.thread.is_alive(), "uvicorn did not stop"


@contextlib.contextmanager
def subprocess_server(
    target: str, *, cwd: Path = ROOT, extra: tuple[str, ...] = (), use_run: bool = False
) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """Serve `module:app` with the `uvicorn` command (or `app.run`) in a child process."""
    sock = bound_socket()
    port = sock.getsockname()[1]
    sock.close()  # the child binds it; SO_REUSEADDR keeps the window harmless
    if use_run:
        module, _, attr = target.partition(":")
        code = (
            f"import sys; sys.path.insert(0, '.'); from {module} import {attr or 'app'} as app; "
            f"app.run(host='127.0.0.1', port={port}, log_level='info')"
        )
        cmd = [sys.executable, "-c", code]
    else:
        cmd = [
            sys.executable, "-m", "uvicorn", target, "--host", "127.0.0.1",
            "--port", str(port), *extra,
        ]  # fmt: skip
    with child_server(cmd, port, cwd=cwd) as proc:
        yield proc, port


@contextlib.contextmanager
def child_server(
    cmd: list[str],
    port: int,
    *,
    cwd: Path = ROOT,
    env: dict[str, str] | None = None,
    stop_timeout: float = 15,
) -> Iterator[subprocess.Popen[str]]:
    """Run `cmd`, a server that will listen on `port`, until the block ends; then SIGTERM
    (SIGKILL after `stop_timeout` s). Its output is on `proc.stdout`."""
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for_port(port, proc)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(stop_timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def wait_for_port(port: int, proc: subprocess.Popen[str], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            raise RuntimeError(f"server exited with {proc.returncode}:\n{out}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"server did not listen on {port}")


def raw_upgrade(port: int, path: str, *, rcvbuf: int | None = None) -> socket.socket:
    """Open a WebSocket with a bare socket and return it after the 101 response.

    For clients that misbehave on purpose: never read, or vanish without a close frame.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    sock.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        chunk = sock.recv(1)  # byte by byte: leave any frame after the headers unread
        if not chunk:
            raise ConnectionError("closed during the handshake")
        response += chunk
    if not response.startswith(b"HTTP/1.1 101"):
        raise ConnectionError(response.decode(errors="replace"))
    return sock


#: WebSocket frame opcodes, for tests that speak the protocol over a bare socket.
CONTINUATION, TEXT, BINARY, CLOSE = 0x0, 0x1, 0x2, 0x8


def frame(opcode: int, payload: bytes, *, fin: bool = True, length: int | None = None) -> bytes:
    """A masked client frame; `length` may claim more payload than is sent."""
    size = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | opcode])
    if size < 126:
        head += bytes([0x80 | size])
    elif size < 1 << 16:
        head += bytes([0x80 | 126]) + struct.pack("!H", size)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", size)
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def read_frame(sock: socket.socket) -> tuple[int, bytes]:
    """The next server frame (servers never mask): its opcode and payload."""

    def exactly(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("the server closed the TCP connection")
            data += chunk
        return data

    first, second = exactly(2)
    size = second & 0x7F
    if size == 126:
        size = struct.unpack("!H", exactly(2))[0]
    elif size == 127:
        size = struct.unpack("!Q", exactly(8))[0]
    return first & 0x0F, exactly(size)


class BufferedClient:
    """A WebSocket client as an ASGI server hands it to the app, with every message it sent
    already read off the socket: `receive` returns them without waiting (as a server's
    does from its buffer), then waits for `leave`; `send` writes without waiting."""

    def __init__(self, path: str, texts: list[str]) -> None:
        self.scope = {
            "type": "websocket",
            "asgi": {"version": "3.0"},
            "scheme": "ws",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": [(b"host", b"test")],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 80),
            "subprotocols": [],
        }
        self.incoming = [{"type": "websocket.connect"}]
        self.incoming += [{"type": "websocket.receive", "text": t} for t in texts]
        self.leave = asyncio.Event()
        self.sent: list[dict[str, Any]] = []
        self._sent_more = asyncio.Condition()

    async def receive(self) -> dict[str, Any]:
        if self.incoming:
            return self.incoming.pop(0)
        await self.leave.wait()
        return {"type": "websocket.disconnect", "code": 1000}

    async def send(self, event: dict[str, Any]) -> None:
        self.sent.append(event)
        async with self._sent_more:  # free unless a test waits: taken without waiting
            self._sent_more.notify_all()

    async def wait_for_texts(self, count: int) -> None:
        """Wait until the app has sent `count` messages, or closed."""
        async with self._sent_more:
            await self._sent_more.wait_for(
                lambda: (
                    len(self.texts()) >= count
                    or any(e["type"] == "websocket.close" for e in self.sent)
                )
            )

    def texts(self) -> list[object]:
        return [e.get("text") for e in self.sent if e["type"] == "websocket.send"]
