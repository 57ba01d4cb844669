"""The stress app (`tests/apps/stress.py`) in a child process, served by `app.run`, and what
the process holds (threads, file descriptors, RSS) read from `/proc`."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from servers import ROOT, bound_socket, child_server

APP = ROOT / "tests" / "apps" / "stress.py"
GRACEFUL_TIMEOUT = 10  # what tests/apps/stress.py passes to app.run


@dataclass
class Usage:
    threads: int
    fds: int
    rss: int

    @classmethod
    def of(cls, pid: int) -> Usage:
        status = Path(f"/proc/{pid}/status").read_text()
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        return cls(
            threads=int(fields["Threads"]),
            fds=len(os.listdir(f"/proc/{pid}/fd")),
            rss=int(fields["VmRSS"].split()[0]) * 1024,
        )

    def __str__(self) -> str:
        return f"{self.threads} threads, {self.fds} fds, {self.rss / 2**20:.1f} MiB RSS"


@contextlib.contextmanager
def served(backend: str | None) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """tests/apps/stress.py under `app.run` in a child process; `None`: app.run's backend."""
    sock = bound_socket()
    port = sock.getsockname()[1]
    sock.close()
    env = {} if backend is None else {"CELLO_TEST_WS": backend}
    cmd = [sys.executable, str(APP), "--host", "127.0.0.1", "--port", str(port)]
    with child_server(cmd, port, env=env, stop_timeout=GRACEFUL_TIMEOUT + 5) as proc:
        yield proc, port
