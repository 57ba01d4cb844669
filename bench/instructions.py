"""Instructions per echo: the servers' user-space work counted by valgrind, not timed.

The suite's CPU-time ratios move by 10-40 % between runs on these shared machines, which
hides any change smaller than that. Here each server runs under `valgrind --tool=callgrind`,
which counts the instructions the server executes: for the same code and the same
messages the count repeats whatever else the machine is doing. Per server: connect,
warm up, zero the counters (`callgrind_control -z`), send a fixed number of sequential
echoes, dump (`callgrind_control -d`), and divide; the loop's own ticks while the
echoes run are measured in a quiet window of the same length and subtracted.

What it does not see: the kernel (system calls, and the context switches a thread hand-off
costs, which the suite's `switches/msg` column counts), and cache misses. So it measures
the Python and C work each design does per message; the suite measures the whole cost.

    python bench/instructions.py --servers raw,cello-greenlet,cello-async,cello-sync \\
        --at HEAD --out bench/results/instructions.md
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers
from processes import exit_on_sigterm, free_port, serve
from report import export_source, header, publish
from workload import PAYLOAD


class Counter(WSListener):
    """Sends `left` messages one after another, each once the previous echo is back."""

    def __init__(self) -> None:
        self.left = 0
        self.done: asyncio.Future[None] | None = None

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def run(self, messages: int) -> asyncio.Future[None]:
        self.left = messages
        self.done = asyncio.get_running_loop().create_future()
        self.transport.send(WSMsgType.TEXT, PAYLOAD)
        return self.done

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type != WSMsgType.TEXT:
            return
        self.left -= 1
        if self.left > 0:
            transport.send(WSMsgType.TEXT, PAYLOAD)
        elif self.done is not None and not self.done.done():
            self.done.set_result(None)


def callgrind(pid: int, command: str) -> None:
    subprocess.run(["callgrind_control", command, str(pid)], check=True, capture_output=True)


def dumped_total(directory: Path, before: set[Path]) -> int:
    """The instruction total of the dump `callgrind_control -d` just wrote."""
    deadline = time.monotonic() + 60
    while True:
        new = [p for p in directory.glob("cg.*") if p not in before and p.stat().st_size]
        for path in new:
            for line in path.read_text().splitlines():
                if line.startswith(("summary:", "totals:")):
                    return int(line.split()[1])
        if time.monotonic() > deadline:
            raise RuntimeError("callgrind wrote no dump")
        time.sleep(0.2)


async def count(port: int, pid: int, directory: Path, connections: int, messages: int) -> float:
    """Instructions per echo with `connections` connections of `messages` echoes each."""
    clients = [
        (await ws_connect(Counter, f"ws://127.0.0.1:{port}/"))[1] for _ in range(connections)
    ]
    await asyncio.gather(*(c.run(20) for c in clients))  # warm up: first-call costs out

    async def window(run: bool) -> tuple[int, float]:
        seen = set(directory.glob("cg.*"))  # noqa: ASYNC240 - a directory of a few files
        callgrind(pid, "-z")
        started = time.monotonic()
        if run:
            await asyncio.gather(*(c.run(messages) for c in clients))
        else:
            await asyncio.sleep(busy_seconds)
        seconds = time.monotonic() - started
        callgrind(pid, "-d")
        return dumped_total(directory, seen), seconds

    busy, busy_seconds = await window(True)
    quiet, quiet_seconds = await window(False)
    for client in clients:
        client.transport.send_close()
        client.transport.disconnect()
    idle_per_second = quiet / quiet_seconds
    return (busy - idle_per_second * busy_seconds) / (connections * messages)


def measure(
    name: str, env: dict[str, str], connections: int, messages: int, keep: Path | None, ws: str
) -> float:
    port = free_port()
    argv = peers.command(name, port, ws, threads=connections + 10)
    assert argv is not None
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) if keep is None else keep / f"{name}-{connections}"
        directory.mkdir(parents=True, exist_ok=True)
        valgrind = [
            "valgrind", "--tool=callgrind", "--quiet", "--dump-instr=no",
            f"--callgrind-out-file={directory}/cg.%p",
        ]  # fmt: skip
        server_env = {**env, **peers.UVICORN_ENV.get(name, {})}
        with serve([*valgrind, *argv], port, core=0, timeout=180, env=server_env) as pid:
            return asyncio.run(count(port, pid, directory, connections, messages))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", default="raw,cello-greenlet,cello-async,cello-sync")
    parser.add_argument("--at", action="append", help="a commit (repeat); default the work tree")
    parser.add_argument("--connections", default="1,50", help="comma-separated")
    parser.add_argument("--messages", type=int, default=2_000, help="echoes in all, per run")
    parser.add_argument("--ws", default=peers.CELLO_WS, help="uvicorn's WebSocket backend")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--keep", type=Path, help="keep the dumps here (for callgrind_annotate)")
    args = parser.parse_args()
    exit_on_sigterm()
    servers = args.servers.split(",")
    sizes = [int(n) for n in args.connections.split(",")]
    commits = args.at or [None]
    rows: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for at in commits:
            if at is None:
                env = dict(os.environ)
            else:
                (Path(tmp) / at).mkdir()
                env = export_source(at, Path(tmp) / at)
            figures = {
                (name, n): measure(name, env, n, max(1, args.messages // n), args.keep, args.ws)
                for name in servers
                for n in sizes
            }
            for name in servers:
                cells = []
                for n in sizes:
                    ir, raw = figures[(name, n)], figures.get(("raw", n))
                    ratio = f" ({ir / raw:.2f})" if raw else ""
                    cells.append(f"{ir:,.0f}{ratio}")
                rows.append(f"| {at or 'work tree'} | {name} | " + " | ".join(cells) + " |")
    lines = header(
        "Instructions per echo (callgrind)",
        f"uvicorn `--ws {args.ws}`; each server under `valgrind --tool=callgrind`, one at a time; "
        "sequential echoes of 32-byte text messages; the idle loop's instructions over the "
        "same time subtracted. Ratios to raw in the same commit's run.",
        commits[-1],
    )
    columns = " | ".join(f"echo_{n} Ir/msg (vs raw)" for n in sizes)
    lines += [
        f"| commit | server | {columns} |",
        "|---|---|" + "---:|" * len(sizes),
        *rows,
    ]
    publish(lines, args.out)


if __name__ == "__main__":
    main()
