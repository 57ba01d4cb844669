"""The connection core's own cost per sync echo, in-process, comparing two commits.

No server and no socket: a scripted ASGI `receive`/`send` feeds one connection's receive
pump, a handler thread does `for msg in ws: ws.send_text(msg.text)`, and the writer hands
each echo back to the script. What is left is cello's path from an ASGI event to
`ws.recv()` and from `ws.send_text()` to the ASGI `send` (plus the thread hand-offs), so
two commits can be told apart where the whole-server suite's noise would hide them. Runs
alternate between the commits, each in a fresh process; the minimum and the mean of the
process CPU per echo are reported.

    python bench/core_echo.py --at dccde27 --at HEAD --runs 8
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import export_source, header


async def echo_cpu_us(messages: int) -> float:
    """Process CPU per echo through one connection (run with the cello to measure)."""
    from cello._bridge import Channel
    from cello.request import Request
    from cello.websocket import WebSocket

    loop = asyncio.get_running_loop()
    incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    echoed: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def receive() -> dict[str, Any]:
        return await incoming.get()

    async def send(event: dict[str, Any]) -> None:
        if event["type"] == "websocket.send":
            echoed.put_nowait(event)

    channel = Channel(loop, receive, send)
    channel.start_pump()
    accept = {"type": "websocket.accept", "subprotocol": None}
    getattr(channel, "accept", channel.send)(accept)  # before the state machine: a send
    ws = WebSocket(channel, Request({"type": "websocket", "path": "/", "headers": []}), None)

    def handler() -> None:
        for msg in ws:
            ws.send_text(msg.text or "")

    thread = threading.Thread(target=handler)
    thread.start()
    started = time.process_time()
    for _ in range(messages):
        incoming.put_nowait({"type": "websocket.receive", "text": "hello"})
        await echoed.get()
    cpu = time.process_time() - started
    incoming.put_nowait({"type": "websocket.disconnect", "code": 1000, "reason": ""})
    await asyncio.to_thread(thread.join)
    await channel.finish()
    return cpu / messages * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--at", action="append", required=True, help="a commit (repeat)")
    parser.add_argument("--runs", type=int, default=8, help="processes per commit")
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(asyncio.run(echo_cpu_us(args.messages)))
        return
    figures: dict[str, list[float]] = {at: [] for at in args.at}
    with tempfile.TemporaryDirectory() as tmp:
        envs = {}
        for at in args.at:
            folder = Path(tmp) / at.replace("/", "_")
            folder.mkdir()
            envs[at] = export_source(at, folder)
        for _ in range(args.runs):
            for at in args.at:
                command = [sys.executable, __file__, "--child", "--at", at]
                command += ["--messages", str(args.messages)]
                out = subprocess.run(
                    command, env=envs[at], capture_output=True, text=True, check=True
                )
                figures[at].append(float(out.stdout))
    base = min(figures[args.at[0]])
    lines = header(
        "The core's cost per sync echo, in-process",
        f"{args.runs} alternating processes per commit, {args.messages:,} echoes each; "
        "process CPU (both threads) per echo.",
    )
    lines += ["| commit | min µs/echo | mean µs/echo | min vs the first |", "|---|---:|---:|---:|"]
    for at, values in figures.items():
        low, mean = min(values), statistics.fmean(values)
        lines.append(f"| `{at}` | {low:.1f} | {mean:.1f} | {low / base:.2f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
