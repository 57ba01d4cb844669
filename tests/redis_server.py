"""A real `redis-server` for the hub's tests, on a free loopback port, keeping nothing
(or, `persistent`, everything on disk across a restart)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from servers import bound_socket


class RedisServer:
    """`redis-server` on 127.0.0.1, started and stopped by the tests (restartable)."""

    def __init__(self, workdir: Path, *, persistent: bool = False) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(
                "redis-server is not installed (Debian: apt-get install redis-server)"
            )
        self.binary = binary
        self.workdir = workdir
        sock = bound_socket()
        self.port: int = sock.getsockname()[1]
        sock.close()
        self.proc: subprocess.Popen[bytes] | None = None
        #: Keep every write on disk (append-only file, fsync'd), so a restart loses nothing.
        self.persistent = persistent

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        options = {
            "bind": "127.0.0.1",
            "port": str(self.port),
            "save": "",
            "appendonly": "yes" if self.persistent else "no",
            "appendfsync": "always",
            "dir": str(self.workdir),
            "loglevel": "warning",
        }
        args = [part for name, value in options.items() for part in (f"--{name}", value)]
        self.proc = subprocess.Popen(
            [self.binary, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), 0.2) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
            time.sleep(0.05)
        raise RuntimeError("redis-server did not answer")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
