"""Server processes for the benchmarks: start one pinned to a core, read its CPU and memory.

A server may be a tree of processes (gunicorn runs a master and a worker), so CPU time,
RSS and thread counts are summed over the process and all its descendants. A server
counts as started once it completes a WebSocket handshake, not merely once its port
accepts (gunicorn's master listens before its worker has imported the app).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def exit_on_sigterm() -> None:
    """Turn SIGTERM into `SystemExit`, so a stopped benchmark still stops its servers.

    (By default SIGTERM ends Python at once, skipping the `finally` in `serve`.)
    """
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def process_tree(pid: int) -> list[int]:
    """`pid` and every live descendant of it."""
    pids = [pid]
    for parent in pids:  # grows while iterating: a breadth-first walk
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{parent}/task").iterdir():
                pids += [int(child) for child in (task / "children").read_text().split()]
    return pids


def cpu_times(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of a process tree, all threads included."""
    user = system = 0
    for member in process_tree(pid):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
            user += int(fields[11])
            system += int(fields[12])
    return user / CLOCK_TICKS, system / CLOCK_TICKS


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process tree, all threads included."""
    return sum(cpu_times(pid))


def context_switches(pid: int) -> dict[int, int]:
    """Context switches so far of each live thread (by thread id) of a process tree.

    Each time a thread blocks (waits for a socket, a lock, a queue) and is woken counts
    one: the price of handing work between threads shows up here. Per thread, so that a
    window can count the threads that start or end within it (see `switches_between`).
    """
    counts: dict[int, int] = {}
    for member in process_tree(pid):
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{member}/task").iterdir():
                with contextlib.suppress(OSError):
                    lines = (task / "status").read_text().splitlines()
                    counts[int(task.name)] = sum(
                        int(line.split()[1]) for line in lines if "ctxt_switches:" in line
                    )
    return counts


def switches_between(before: dict[int, int], after: dict[int, int]) -> int:
    """Switches between two samples: threads alive at the end, less what they had before.

    A thread that ended between the samples is not counted, so this is a lower bound.
    """
    return sum(count - before.get(tid, 0) for tid, count in after.items())


def core_busy_seconds(core: int) -> float:
    """CPU time core `core` has spent busy (anything but idle), from `/proc/stat`."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{core} "):
            ticks = [int(x) for x in line.split()[1:]]
            return (sum(ticks) - ticks[3] - ticks[4]) / CLOCK_TICKS  # less idle and iowait
    raise ValueError(f"no core {core}")


def settle(pid: int, timeout: float = 30, quiet: float = 0.05) -> None:
    """Wait until the server is nearly idle (under `quiet` of a core for 0.2 s).

    A server may still be tearing down the previous workload's connections (Flask-Sock
    under gunicorn takes seconds for 1,000); measuring meanwhile would charge it to the
    next workload.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = cpu_seconds(pid)
        time.sleep(0.2)
        if cpu_seconds(pid) - before < quiet * 0.2:
            return


def status_total(pid: int, field: str) -> int:
    """A `/proc/PID/status` figure (`VmRSS` in KiB, `Threads`) summed over the tree."""
    total = 0
    for member in process_tree(pid):
        with contextlib.suppress(OSError):
            text = Path(f"/proc/{member}/status").read_text()
            total += int(text.split(f"{field}:")[1].split()[0])
    return total


def handshake_completes(port: int, path: str = "/greet") -> bool:
    """Whether a WebSocket upgrade on `path` gets its 101 response."""
    try:
        with socket.create_connection(("127.0.0.1", port), 1.0) as sock:
            sock.sendall(
                (
                    f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                    "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                    "Sec-WebSocket-Version: 13\r\n\r\n"
                ).encode()
            )
            response = b""
            while b"\r\n\r\n" not in response:
                chunk = sock.recv(4096)
                if not chunk:
                    return False
                response += chunk
            return response.startswith(b"HTTP/1.1 101")
    except OSError:
        return False


@contextlib.contextmanager
def serve(
    argv: list[str], port: int, core: int, timeout: float = 30, env: dict[str, str] | None = None
) -> Iterator[int]:
    """Run `argv` (a server listening on `port`) pinned to `core`; yield its pid."""
    proc = subprocess.Popen(["taskset", "-c", str(core), *argv], cwd=ROOT, env=env)
    try:
        deadline = time.monotonic() + timeout
        while not handshake_completes(port):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"{argv} did not start")
            time.sleep(0.05)
        yield proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
