"""What a process pays for other processes' broadcasts: 100 groups over two processes.

Two servers of `bench/hub_app.py` share a Redis hub. Process A has a member in one group,
process B one in each of the other 99; a publisher (standing for other processes) sends
messages to the 100 groups in turn, in the relay's wire format, at a fixed rate. What
each server spends per published message shows how its cost grows: with per-group
subscriptions A receives only its group's messages (a hundredth), B its 99; with one
pattern subscription for all groups (cello before per-group subscriptions) both receive
all of them and drop what no member of theirs is in. B's CPU per delivered message is
the relay's cost per message on the receiving side (Redis to the member's socket).

Both servers are pinned to core 0; Redis, the publisher and the 100 receiving clients
to core 1. `--at` measures cello as of a commit (repeat it to compare commits in one run).

    python bench/hub_groups.py --at a42e84b --at HEAD --rounds 3 --out bench/results/hub-groups.md
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import redis.asyncio as aioredis
import uvloop
from websockets.asyncio.client import connect

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers
from hub_fanout import redis_server
from processes import cpu_seconds, free_port, serve, settle
from report import export_source, header, publish, revision

GROUPS = 100
SERVER_CORE = 0
PAYLOAD = b"x" * 32


async def receive(url: str, counts: list[int], index: int, ready: asyncio.Event) -> None:
    async with connect(url, max_queue=None) as ws:
        assert await ws.recv() == "joined"
        ready.set()
        async for _ in ws:
            counts[index] += 1


async def run(
    ports: tuple[int, int], pids: tuple[int, int], url: str, seconds: float, rate: int
) -> dict[str, float]:
    """Connect the members, publish at `rate` for `seconds`, measure both servers."""
    counts = [0] * GROUPS
    readies = [asyncio.Event() for _ in range(GROUPS)]
    members = [
        asyncio.create_task(
            receive(
                f"ws://127.0.0.1:{ports[0] if g == 0 else ports[1]}/member/g{g}",
                counts,
                g,
                readies[g],
            )
        )
        for g in range(GROUPS)
    ]
    await asyncio.gather(*(ready.wait() for ready in readies))
    await asyncio.sleep(0.5)  # subscriptions confirmed, servers quiet
    redis = aioredis.Redis.from_url(url)
    origin = uuid.uuid4().bytes
    channels = [f"cello:hub:g{g}".encode() for g in range(GROUPS)]
    batch = max(1, rate // 100)  # every 10 ms
    # What the servers spend with nothing published (timers, keepalives), subtracted.
    idle_before = [cpu_seconds(pid) for pid in pids]
    idle_start = time.perf_counter()
    await asyncio.sleep(seconds)
    idle_seconds = time.perf_counter() - idle_start
    idle = [(cpu_seconds(pid) - b) / idle_seconds for pid, b in zip(pids, idle_before, strict=True)]
    before = [cpu_seconds(pid) for pid in pids]
    start = time.perf_counter()
    published = 0
    while (elapsed := time.perf_counter() - start) < seconds:
        due = int(elapsed * rate) + batch
        async with redis.pipeline(transaction=False) as pipe:
            while published < due:
                pipe.publish(channels[published % GROUPS], origin + b"t" + PAYLOAD)
                published += 1
            await pipe.execute()
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.5)  # the last ones delivered
    window = time.perf_counter() - start
    spent = [
        cpu_seconds(pid) - b - rest * window
        for pid, b, rest in zip(pids, before, idle, strict=True)
    ]
    delivered = sum(counts)
    for task in members:
        task.cancel()
    await asyncio.gather(*members, return_exceptions=True)
    await redis.aclose()
    return {
        "published": published,
        "delivered_ratio": delivered / published,
        "a_us": spent[0] / published * 1e6,
        "b_us": spent[1] / published * 1e6,
        "b_per_delivery_us": spent[1] / max(1, sum(counts[1:])) * 1e6,
        "idle_a": idle[0],
        "idle_b": idle[1],
    }


def measure(at: str, seconds: float, rate: int) -> dict[str, float]:
    with contextlib.ExitStack() as stack:
        url, _ = stack.enter_context(redis_server())
        source = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        env = {**export_source(at, source), "CELLO_HUB_URL": url}
        servers = []
        for _ in range(2):
            port = free_port()
            argv = peers.uvicorn("bench.hub_app:app", port, peers.CELLO_WS)
            servers.append((port, stack.enter_context(serve(argv, port, SERVER_CORE, env=env))))
        for _, pid in servers:
            settle(pid)
        ports = (servers[0][0], servers[1][0])
        pids = (servers[0][1], servers[1][1])
        return uvloop.run(run(ports, pids, url, seconds, rate))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--at", action="append", required=True, help="a commit (repeat)")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=int, default=10_000, help="messages published per second")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    os.sched_setaffinity(0, {1})
    best: dict[str, dict[str, float]] = {}
    for _ in range(args.rounds):  # interleaved; the lowest CPU of each commit's rounds
        for at in args.at:
            result = measure(at, args.seconds, args.rate)
            if at not in best or result["b_us"] < best[at]["b_us"]:
                best[at] = result
    lines = header(
        "Cross-process fan-out: 100 groups over two processes",
        f"uvicorn --ws {peers.CELLO_WS}; both servers pinned to core 0, Redis, the publisher "
        f"and the 100 clients to core 1; {args.rate:,} messages/s published to {GROUPS} "
        f"groups in turn; process A holds 1 group, B 99; best of {args.rounds} rounds of "
        f"{args.seconds:g} s.",
        at=args.at[-1],
    )
    lines += [
        "Server CPU while publishing, less what each spent idle (measured just before, "
        "shown as a share of a core), per message published to any of the 100 groups.",
        "",
        "| cello at | published | delivered | A (1 group): CPU µs per published message "
        "| B (99 groups): CPU µs per published message | B: CPU µs per delivery "
        "| idle A, B |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for at, r in best.items():
        lines.append(
            f"| {revision(at)} | {r['published']:,.0f} | {r['delivered_ratio']:.0%} "
            f"| {r['a_us']:.2f} | {r['b_us']:.2f} | {r['b_per_delivery_us']:.2f} "
            f"| {r['idle_a']:.1%}, {r['idle_b']:.1%} |"
        )
    publish(lines, args.out)


if __name__ == "__main__":
    main()
