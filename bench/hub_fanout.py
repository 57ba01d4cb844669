"""Hub fan-out in one process against the same room spread over two processes on Redis.

The `fanout` workload's room (one sender, 100 receivers, every message to every member,
the sender included; an operation is one delivery), served by `bench/hub_app.py`:

* `memory`: one server, the in-memory hub, all 101 members on it;
* `redis-1`: one server whose hub relays through Redis (what the relay costs when there
  is no other process to reach);
* `redis-2`: two servers sharing a Redis, the sender and 50 receivers on the first, 50
  receivers on the second: every message crosses Redis to reach half the room.

Both servers are pinned to core 0, so the two-process room has the same CPU as the
one-process room; Redis and this load generator run on core 1. Server CPU is summed over
the servers (and Redis, shown apart). The target: `redis-2` deliveries/s at least 0.5x
`memory`'s.

    python bench/hub_fanout.py --seconds 3 --rounds 3 --out bench/results/hub-fanout.md
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers
from fanout import Room, close_room, open_room
from processes import cpu_seconds, free_port, serve, settle
from report import header, publish
from workload import Window

RECEIVERS = 100
SERVER_CORE = "0"
REDIS_CORE = "1"


@contextlib.contextmanager
def redis_server() -> Iterator[tuple[str, int]]:
    """A throwaway `redis-server` on a free loopback port (nothing saved); its URL and pid."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is needed (Debian: apt-get install redis-server)")
    port = free_port()
    with tempfile.TemporaryDirectory() as workdir:
        proc = subprocess.Popen(
            ["taskset", "-c", REDIS_CORE, binary, "--bind", "127.0.0.1", "--port", str(port),
             "--save", "", "--appendonly", "no", "--dir", workdir],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 10
            while True:
                with (
                    contextlib.suppress(OSError),
                    socket.create_connection(("127.0.0.1", port), 0.2) as conn,
                ):
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start")
                time.sleep(0.05)
            yield f"redis://127.0.0.1:{port}/0", proc.pid
        finally:
            proc.terminate()
            proc.wait(10)


@contextlib.contextmanager
def hub_servers(count: int, hub_url: str | None) -> Iterator[list[tuple[int, int]]]:
    """`count` servers of `hub_app` on core 0 sharing `hub_url`; their (port, pid)."""
    previous = os.environ.pop("CELLO_HUB_URL", None)
    if hub_url is not None:
        os.environ["CELLO_HUB_URL"] = hub_url
    try:
        with contextlib.ExitStack() as stack:
            servers = []
            for _ in range(count):
                port = free_port()
                argv = peers.uvicorn("bench.hub_app:app", port, peers.CELLO_WS)
                servers.append((port, stack.enter_context(serve(argv, port, int(SERVER_CORE)))))
            yield servers
    finally:
        os.environ.pop("CELLO_HUB_URL", None)
        if previous is not None:
            os.environ["CELLO_HUB_URL"] = previous


async def room_run(
    servers: list[tuple[int, int]], redis_pid: int | None, seconds: float
) -> dict[str, float]:
    """Fill the room (members spread evenly, the sender on the first server), measure."""
    room = Room(RECEIVERS + 1)
    transports = await open_room(room, [f"ws://127.0.0.1:{port}/fanout" for port, _ in servers])
    await asyncio.sleep(min(0.5, seconds / 4))
    base = room.tally.count
    room.tally.latencies.clear()
    windows = [Window(pid) for _, pid in servers]
    redis_before = cpu_seconds(redis_pid) if redis_pid else 0.0
    await asyncio.sleep(seconds)
    measured = [w.close(room.tally.count - base, list(room.tally.latencies)) for w in windows]
    redis_cpu = (cpu_seconds(redis_pid) - redis_before) if redis_pid else 0.0
    await close_room(room, transports)
    first = measured[0]
    deliveries = first.ops
    server_cpu = sum(m.server_cpu for m in measured)
    return {
        "rate": deliveries / first.seconds,
        "server_us": server_cpu / deliveries * 1e6 if deliveries else float("inf"),
        "redis_us": redis_cpu / deliveries * 1e6 if deliveries else 0.0,
        "p50_us": first.percentile_us(0.5),
        "p99_us": first.percentile_us(0.99),
        "client_cpu": first.client_cpu,
    }


CONFIGS = {"memory": (1, False), "redis-1": (1, True), "redis-2": (2, True)}


def measure(config: str, seconds: float) -> dict[str, float]:
    count, uses_redis = CONFIGS[config]
    with contextlib.ExitStack() as stack:
        url, redis_pid = (None, None)
        if uses_redis:
            url, redis_pid = stack.enter_context(redis_server())
        servers = stack.enter_context(hub_servers(count, url))
        for _, pid in servers:
            settle(pid)
        return uvloop.run(room_run(servers, redis_pid, seconds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--configs", default=",".join(CONFIGS), help="a subset, memory first")
    args = parser.parse_args()
    configs = args.configs.split(",")
    os.sched_setaffinity(0, {int(REDIS_CORE)})

    best: dict[str, dict[str, float]] = {}
    for _ in range(args.rounds):  # interleaved rounds; keep each config's best window
        for config in configs:
            result = measure(config, args.seconds)
            if config not in best or result["rate"] > best[config]["rate"]:
                best[config] = result
    base = best["memory"]["rate"]
    lines = header(
        "Hub fan-out: one process against two on Redis",
        f"uvicorn --ws {peers.CELLO_WS}; servers pinned to core 0, Redis and the picows load "
        f"generator to core 1; 1 sender + {RECEIVERS} receivers; best of {args.rounds} rounds "
        f"of {args.seconds:g} s.",
    )
    lines += [
        "| config | deliveries/s | vs memory | server CPU µs/delivery | Redis CPU µs/delivery "
        "| p50 µs | p99 µs | load generator CPU |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for config, r in best.items():
        warn = " (saturated)" if r["client_cpu"] > 0.9 else ""
        lines.append(
            f"| {config} | {r['rate']:,.0f} | {r['rate'] / base:.2f}x | {r['server_us']:.2f} "
            f"| {r['redis_us']:.2f} | {r['p50_us']:,.0f} | {r['p99_us']:,.0f} "
            f"| {r['client_cpu']:.0%}{warn} |"
        )
    if "redis-2" in best:
        ratio = best["redis-2"]["rate"] / base
        lines += [
            "",
            f"Target: redis-2 deliveries/s >= 0.5x memory: {ratio:.2f}x, "
            + ("met." if ratio >= 0.5 else "missed."),
        ]
    publish(lines, args.out)


if __name__ == "__main__":
    main()
