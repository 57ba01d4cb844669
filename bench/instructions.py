"""Instructions per echo (or per delivery): the servers' user-space work counted by valgrind.

The suite's CPU-time ratios move by 10-40 % between runs on these shared machines, which
hides any change smaller than that. Here each server runs under `valgrind --tool=callgrind`,
which counts the instructions the server executes: for the same code and the same
messages the count repeats whatever else the machine is doing. Per server: connect,
warm up, zero the counters (`callgrind_control -z`), send a fixed number of sequential
echoes, dump (`callgrind_control -d`), and divide; the loop's own ticks while the
echoes run are measured in a quiet window of the same length and subtracted. With
`--workload fanout` the operation is one delivery in the chat room at `/fanout` (one
member sends; every member, the sender too, receives), the cost of one broadcast send.

What it does not see: the kernel (system calls, and the context switches a thread hand-off
costs, which the suite's `switches/msg` column counts), and cache misses. So it measures
the Python and C work each design does per message; the suite measures the whole cost.

    python bench/instructions.py --servers raw,cello-greenlet,cello-async,cello-sync \\
        --at HEAD --out bench/results/instructions.md
    python bench/instructions.py --workload fanout --servers raw,cello-greenlet,cello-sync \\
        --at HEAD --out bench/results/instructions-fanout.md
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
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


class Member(WSListener):
    """A member of the fanout room: counts the messages it receives."""

    def __init__(self) -> None:
        self.received = 0
        self.target = 0
        self.reached: asyncio.Future[None] | None = None

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def expect(self, total: int) -> asyncio.Future[None]:
        """Resolved once `total` messages have arrived in all (the greeting included)."""
        self.target = total
        self.reached = asyncio.get_running_loop().create_future()
        if self.received >= total:
            self.reached.set_result(None)
        return self.reached

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type != WSMsgType.TEXT:
            return
        self.received += 1
        reached = self.reached
        if reached is not None and self.received >= self.target and not reached.done():
            reached.set_result(None)


async def counted(
    pid: int, directory: Path, run: Callable[[], Awaitable[None]], operations: int
) -> float:
    """Instructions per operation of `run()` (which performs `operations`), less the
    loop's own ticks over as long a quiet window."""

    async def window(busy: bool, seconds: float) -> tuple[int, float]:
        seen = set(directory.glob("cg.*"))  # noqa: ASYNC240 - a directory of a few files
        callgrind(pid, "-z")
        started = time.monotonic()
        if busy:
            await run()
        else:
            await asyncio.sleep(seconds)
        seconds = time.monotonic() - started
        callgrind(pid, "-d")
        return dumped_total(directory, seen), seconds

    busy, busy_seconds = await window(True, 0)
    quiet, quiet_seconds = await window(False, busy_seconds)
    return (busy - quiet / quiet_seconds * busy_seconds) / operations


async def count(port: int, pid: int, directory: Path, connections: int, messages: int) -> float:
    """Instructions per echo with `connections` connections of `messages` echoes each."""
    clients = [
        (await ws_connect(Counter, f"ws://127.0.0.1:{port}/"))[1] for _ in range(connections)
    ]
    await asyncio.gather(*(c.run(20) for c in clients))  # warm up: first-call costs out

    async def run() -> None:
        await asyncio.gather(*(c.run(messages) for c in clients))

    result = await counted(pid, directory, run, connections * messages)
    for client in clients:
        client.transport.send_close()
        client.transport.disconnect()
    return result


async def count_fanout(port: int, pid: int, directory: Path, members: int, messages: int) -> float:
    """Instructions per delivery in the chat room at `/fanout` of `members` connections:
    the first sends `messages` messages, each once every member has the one before."""
    room: list[Member] = []
    for _ in range(members):
        member = (await ws_connect(Member, f"ws://127.0.0.1:{port}/fanout"))[1]
        await member.expect(1)  # greeted: it has joined the room
        room.append(member)

    async def rounds(n: int) -> None:
        for _ in range(n):
            arrived = [m.expect(m.received + 1) for m in room]
            room[0].transport.send(WSMsgType.TEXT, PAYLOAD)
            await asyncio.gather(*arrived)

    await rounds(20)  # warm up
    result = await counted(pid, directory, lambda: rounds(messages), members * messages)
    for member in room:
        member.transport.send_close()
        member.transport.disconnect()
    return result


def measure(
    name: str,
    env: dict[str, str],
    connections: int,
    messages: int,
    keep: Path | None,
    ws: str,
    workload: str = "echo",
) -> float:
    port = free_port()
    argv = peers.command(name, port, ws, threads=connections + 10)
    assert argv is not None
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) if keep is None else keep / f"{name}-{workload}-{connections}"
        directory.mkdir(parents=True, exist_ok=True)
        valgrind = [
            "valgrind", "--tool=callgrind", "--quiet", "--dump-instr=no",
            f"--callgrind-out-file={directory}/cg.%p",
        ]  # fmt: skip
        server_env = {**env, **peers.UVICORN_ENV.get(name, {})}
        with serve([*valgrind, *argv], port, core=0, timeout=180, env=server_env) as pid:
            counter = count_fanout if workload == "fanout" else count
            return asyncio.run(counter(port, pid, directory, connections, messages))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", default="raw,cello-greenlet,cello-async,cello-sync")
    parser.add_argument("--at", action="append", help="a commit (repeat); default the work tree")
    parser.add_argument(
        "--workload", choices=("echo", "fanout"), default="echo", help="echo, or the chat room"
    )
    parser.add_argument(
        "--connections", help="comma-separated (default 1,50 for echo; the room size, 21)"
    )
    parser.add_argument(
        "--messages", type=int, help="echoes in all, per run (2,000); messages sent (200)"
    )
    parser.add_argument("--ws", default=peers.CELLO_WS, help="uvicorn's WebSocket backend")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--keep", type=Path, help="keep the dumps here (for callgrind_annotate)")
    args = parser.parse_args()
    exit_on_sigterm()
    servers = args.servers.split(",")
    fanout = args.workload == "fanout"
    sizes = [int(n) for n in (args.connections or ("21" if fanout else "1,50")).split(",")]
    messages = args.messages or (200 if fanout else 2_000)
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
                (name, n): measure(
                    name,
                    env,
                    n,
                    messages if fanout else max(1, messages // n),
                    args.keep,
                    args.ws,
                    args.workload,
                )
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
    done = (
        "a chat room at `/fanout`: one member sends, each message once every member has the "
        "one before; per delivery (one message arriving on one member)"
        if fanout
        else "sequential echoes"
    )
    lines = header(
        "Instructions per " + ("delivery" if fanout else "echo") + " (callgrind)",
        f"uvicorn `--ws {args.ws}`; each server under `valgrind --tool=callgrind`, one at a time; "
        f"{done}, 32-byte text messages; the idle loop's instructions over the "
        "same time subtracted. Ratios to raw in the same commit's run.",
        commits[-1],
    )
    unit = "Ir/delivery" if fanout else "Ir/msg"
    columns = " | ".join(f"{args.workload}_{n} {unit} (vs raw)" for n in sizes)
    lines += [
        f"| commit | server | {columns} |",
        "|---|---|" + "---:|" * len(sizes),
        *rows,
    ]
    publish(lines, args.out)


if __name__ == "__main__":
    main()
