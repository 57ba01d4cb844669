"""Echo benchmark: server CPU per message, cello against a raw ASGI app, same uvicorn.

Each server runs as its own uvicorn process pinned to core 0; the load generator (picows,
a fast client written in Cython) runs here pinned to core 1. For each server and workload
the figure that matters is the server's CPU time (user + system, all its threads) per
echoed message over the measurement window, reported also as a ratio to `raw` measured in
the same run, because these machines are shared and absolute figures drift.

    python bench/echo.py --seconds 5 --ws websockets-sansio --out bench/results/echo.md
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import header, publish

ROOT = Path(__file__).resolve().parent.parent
SERVERS = {
    "raw": "bench.apps:raw",
    "raw-thread": "bench.apps:raw_thread",
    "cello-sync": "bench.apps:cello_sync",
    "cello-async": "bench.apps:cello_async",
}
PAYLOAD = b"x" * 32
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process, all its threads included."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def serve(target: str, ws: str, core: int) -> Iterator[tuple[int, int]]:
    port = free_port()
    cmd = [
        "taskset", "-c", str(core), sys.executable, "-m", "uvicorn", target,
        "--host", "127.0.0.1", "--port", str(port), "--ws", ws,
        "--log-level", "warning", "--no-access-log", "--lifespan", "auto",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT)
    try:
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"{target} did not start")
            time.sleep(0.05)
        yield proc.pid, port
    finally:
        proc.terminate()
        proc.wait(20)


class Echoer(WSListener):
    """Sends the next message as soon as the echo of the previous one arrives."""

    def __init__(self) -> None:
        self.count = 0
        self.latencies: list[float] = []
        self.sent_at = 0.0
        self.running = True

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def start(self) -> None:
        self.sent_at = time.perf_counter()
        self.transport.send(WSMsgType.TEXT, PAYLOAD)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type != WSMsgType.TEXT:
            return
        now = time.perf_counter()
        self.count += 1
        if self.count % 16 == 0:
            self.latencies.append(now - self.sent_at)
        if self.running:
            self.sent_at = now
            transport.send(WSMsgType.TEXT, PAYLOAD)


@dataclass
class Result:
    server: str
    connections: int
    messages: int
    seconds: float
    server_cpu: float
    client_cpu: float
    p50_us: float
    p99_us: float

    @property
    def rate(self) -> float:
        return self.messages / self.seconds

    @property
    def cpu_us_per_msg(self) -> float:
        return self.server_cpu / self.messages * 1e6


async def load(
    port: int, pid: int, connections: int, seconds: float
) -> tuple[int, float, float, list[float]]:
    url = f"ws://127.0.0.1:{port}/"
    clients = []
    for _ in range(connections):
        transport, client = await ws_connect(Echoer, url)
        clients.append((transport, client))
    for _, client in clients:
        client.start()
    await asyncio.sleep(min(1.0, seconds / 4))  # warm-up
    base = sum(c.count for _, c in clients)
    for _, c in clients:
        c.latencies.clear()
    cpu0, own0, t0 = cpu_seconds(pid), time.process_time(), time.perf_counter()
    await asyncio.sleep(seconds)
    cpu1, own1, t1 = cpu_seconds(pid), time.process_time(), time.perf_counter()
    done = sum(c.count for _, c in clients) - base
    latencies = sorted(x for _, c in clients for x in c.latencies)
    for transport, client in clients:
        client.running = False
        transport.send_close()
        transport.disconnect()
    return done, cpu1 - cpu0, (own1 - own0) / (t1 - t0), latencies


def measure(name: str, ws: str, connections: int, seconds: float) -> Result:
    with serve(SERVERS[name], ws, core=0) as (pid, port):
        done, server_cpu, client_util, lat = asyncio.run(load(port, pid, connections, seconds))
    pct = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1e6 if lat else float("nan")  # noqa: E731
    return Result(name, connections, done, seconds, server_cpu, client_util, pct(0.5), pct(0.99))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--ws", default="websockets-sansio", help="uvicorn --ws backend")
    parser.add_argument("--connections", default="1,50", help="comma-separated workloads")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per server")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    os.sched_setaffinity(0, {1})
    rows: list[Result] = []
    for connections in (int(c) for c in args.connections.split(",")):
        best: dict[str, Result] = {}
        for _ in range(args.rounds):  # interleaved, best of N: the least disturbed window
            for name in SERVERS:
                result = measure(name, args.ws, connections, args.seconds)
                if name not in best or result.cpu_us_per_msg < best[name].cpu_us_per_msg:
                    best[name] = result
        rows.extend(best.values())
    publish(render(rows, args), args.out)


def render(rows: list[Result], args: argparse.Namespace) -> list[str]:
    import uvicorn

    lines = header(
        "Echo benchmark",
        f"uvicorn {uvicorn.__version__} `--ws {args.ws}`; server pinned to core 0, client to "
        f"core 1; best of {args.rounds} interleaved rounds of {args.seconds:g} s; 32-byte "
        "text messages.",
    )
    lines += [
        "| server | conns | msgs/s | p50 µs | p99 µs | server CPU µs/msg | vs raw | client CPU |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        base = next(r for r in rows if r.server == "raw" and r.connections == row.connections)
        warn = " ⚠ client-bound" if row.client_cpu > 0.9 else ""
        lines.append(
            f"| {row.server} | {row.connections} | {row.rate:,.0f} "
            f"| {row.p50_us:.0f} | {row.p99_us:.0f} "
            f"| {row.cpu_us_per_msg:.1f} | {row.cpu_us_per_msg / base.cpu_us_per_msg:.2f} "
            f"| {row.client_cpu:.0%}{warn} |"
        )
    return lines


if __name__ == "__main__":
    main()
