"""Capacity benchmark: N concurrent idle connections, then one round trip on each.

Reports the server's RSS per connection (over its idle baseline) and thread count, for
cello's sync echo against the raw ASGI echo on the same uvicorn, measured in one run.

    python bench/capacity.py --connections 10000 --out bench/results/capacity.md
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

from websockets.asyncio.client import ClientConnection, connect

sys.path.insert(0, str(Path(__file__).resolve().parent))
from echo import SERVERS, serve
from report import header, publish

BATCH = 200  # connections opened at once, well under the listen backlog


def status(pid: int, field: str) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(text.split(f"{field}:")[1].split()[0])


async def fill(port: int, pid: int, n: int) -> dict[str, float]:
    base_rss = status(pid, "VmRSS")
    url = f"ws://127.0.0.1:{port}/"
    started = time.monotonic()
    conns: list[ClientConnection] = []
    for i in range(0, n, BATCH):
        conns += await asyncio.gather(
            *(connect(url, open_timeout=60, ping_interval=None) for _ in range(min(BATCH, n - i)))
        )
    opened = time.monotonic() - started
    rss = status(pid, "VmRSS")
    threads = status(pid, "Threads")

    async def round_trip(conn: ClientConnection, i: int) -> bool:
        await conn.send(str(i))
        return await asyncio.wait_for(conn.recv(), 60) == str(i)

    started = time.monotonic()
    answered = sum(await asyncio.gather(*(round_trip(c, i) for i, c in enumerate(conns))))
    trips = time.monotonic() - started
    await asyncio.gather(*(c.close() for c in conns))
    return {
        "answered": answered,
        "open_s": opened,
        "trips_s": trips,
        "kib_per_conn": (rss - base_rss) / n,
        "threads": threads,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--ws", default="websockets-sansio")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rows = {}
    for name in ("raw", "cello-sync"):
        with serve(SERVERS[name], args.ws, core=0) as (pid, port):
            rows[name] = asyncio.run(fill(port, pid, args.connections))
    base = rows["raw"]["kib_per_conn"]
    lines = header(
        "Capacity benchmark",
        f"uvicorn `--ws {args.ws}`; {args.connections:,} concurrent connections (websockets "
        "client), then one round trip on each.",
    )
    lines += [
        "| server | answered | open all (s) | round trips (s) | RSS KiB/conn | vs raw | threads |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['answered']:,.0f} | {r['open_s']:.1f} | {r['trips_s']:.1f} "
            f"| {r['kib_per_conn']:.1f} | {r['kib_per_conn'] / base:.2f} | {r['threads']:,.0f} |"
        )
    publish(lines, args.out)


if __name__ == "__main__":
    main()
