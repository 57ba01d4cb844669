"""Connect benchmark: server CPU per WebSocket connection (open, read a greeting, close).

Sequential (one client at a time) and concurrent (20 at once), for the raw ASGI app and
cello's sync and async handlers on the same uvicorn, ratios from the same run.

    python bench/connect.py --seconds 4 --out bench/results/connect.md
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

sys.path.insert(0, str(Path(__file__).resolve().parent))
from echo import SERVERS, cpu_seconds, serve
from report import header, publish

NAMES = ("raw", "cello-sync", "cello-async")


class Greeted(WSListener):
    def __init__(self) -> None:
        self.greeted: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.TEXT and not self.greeted.done():
            self.greeted.set_result(None)


async def cycle(url: str) -> None:
    transport, client = await ws_connect(Greeted, url)
    await client.greeted
    transport.send_close()
    transport.disconnect()
    await transport.wait_disconnected()


async def load(port: int, pid: int, parallel: int, seconds: float) -> tuple[int, float]:
    url = f"ws://127.0.0.1:{port}/greet"
    done = 0
    stop = False

    async def worker() -> None:
        nonlocal done
        while not stop:
            await cycle(url)
            done += 1

    tasks = [asyncio.create_task(worker()) for _ in range(parallel)]
    await asyncio.sleep(min(1.0, seconds / 4))
    base, cpu0 = done, cpu_seconds(pid)
    await asyncio.sleep(seconds)
    count, cpu1 = done - base, cpu_seconds(pid)
    stop = True
    await asyncio.gather(*tasks)
    return count, cpu1 - cpu0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--ws", default="websockets-sansio")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    os.sched_setaffinity(0, {1})
    rows: list[tuple[str, int, float, float]] = []
    for parallel in (1, 20):
        best: dict[str, tuple[float, float]] = {}
        for _ in range(args.rounds):
            for name in NAMES:
                with serve(SERVERS[name], args.ws, core=0) as (pid, port):
                    count, cpu = asyncio.run(load(port, pid, parallel, args.seconds))
                per = cpu / count * 1e6
                if name not in best or per < best[name][0]:
                    best[name] = (per, count / args.seconds)
        rows += [(name, parallel, *best[name]) for name in NAMES]
    lines = header(
        "Connect benchmark",
        f"uvicorn `--ws {args.ws}`; server pinned to core 0, picows client to core 1; each "
        "cycle opens a WebSocket, reads a greeting and closes; "
        f"best of {args.rounds} rounds of {args.seconds:g} s.",
    )
    lines += [
        "| server | parallel | connections/s | server CPU µs/conn | vs raw |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, parallel, per, rate in rows:
        base = next(r[2] for r in rows if r[0] == "raw" and r[1] == parallel)
        lines.append(f"| {name} | {parallel} | {rate:,.0f} | {per:.0f} | {per / base:.2f} |")
    publish(lines, args.out)


if __name__ == "__main__":
    main()
