"""Where a server's CPU goes: yappi's per-function CPU time of one server under one workload.

Starts the server as the suite does (pinned to core 0, same uvicorn flags) with yappi
inside it (`yappi_serve.py`), runs the workload from this process on core 1, profiles
the measurement window on every thread, and writes the shares of the server's profiled
CPU time: by package of the function (self time), by function (self time), and by cello
function including what it calls. A deterministic profiler slows every call, so the CPU
per operation under it is far higher than in the suite and small functions are
overcharged; the shares are what to read. (A sampling profiler such as py-spy misreads
a server of thousands of threads blocked in native waits as busy, so it is not used.)

    python bench/profile.py --server cello-sync --workload echo_50 --out profile.md
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers
from processes import exit_on_sigterm, free_port, serve, settle
from report import export_source, header, publish
from suite import WORKLOADS
from workload import Measurement

#: Seconds into the workload when profiling starts: its connections are open and warm.
START_AFTER = 1.0


def package(module: str) -> str:
    """`cello`, `uvicorn`, `asyncio`... for a module's file path as yappi reports it."""
    parts = Path(module).parts
    for anchor in ("site-packages", "src", "bench"):
        if anchor in parts:
            return parts[parts.index(anchor) + 1].removesuffix(".py")
    if module.endswith(".py"):
        return f"stdlib {Path(module).stem}"
    return "builtins"


def summarize(path: Path, ops: float) -> list[str]:
    """The profile's tables; `ops`: operations completed in the profiled window."""
    by_package: Counter[str] = Counter()
    by_function: Counter[str] = Counter()
    in_cello: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        module, name, _, tsub, ttot = line.split("\t")
        where = package(module)
        by_package[where] += float(tsub)
        by_function[f"{name} ({where})"] += float(tsub)
        if where == "cello":
            in_cello[f"{name} ({Path(module).name})"] += float(ttot)
    total = sum(by_package.values()) or 1.0

    def table(title: str, what: str, counter: Counter[str], top: int) -> list[str]:
        lines = ["", f"## {title}", "", f"| {what} | share | µs/op |", "|---|---:|---:|"]
        for name, t in counter.most_common(top):
            lines.append(f"| `{name}` | {t / total:.1%} | {t / ops * 1e6:.2f} |")
        return lines

    lines = [
        f"{total:.2f} s of profiled CPU time on all threads, {ops:,.0f} operations: "
        f"{total / ops * 1e6:.1f} µs per operation under the profiler."
    ]
    lines += table("Self time by package", "package", by_package, 12)
    lines += table("Self time by function", "function", by_function, 30)
    lines += table("cello functions, including what they call", "function", in_cello, 25)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--server", default="cello-sync", choices=sorted(peers.UVICORN_APPS))
    parser.add_argument("--workload", default="echo_50", choices=sorted(WORKLOADS))
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--ws", default=peers.CELLO_WS)
    parser.add_argument("--at", help="profile cello as of this commit (default: the work tree)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    exit_on_sigterm()
    os.sched_setaffinity(0, {1})
    with tempfile.TemporaryDirectory() as tmp:
        env = export_source(args.at, Path(tmp)) if args.at else None
        if args.server in peers.UVICORN_ENV:  # cello-greenlet: the same app, another runner
            env = {**(env or os.environ), **peers.UVICORN_ENV[args.server]}
        stats = Path(tmp) / "stats.tsv"
        port = free_port()
        script = str(Path(__file__).with_name("yappi_serve.py"))
        argv = [sys.executable, script, peers.UVICORN_APPS[args.server], str(port), args.ws]
        with serve([*argv, str(stats)], port, core=0, env=env) as pid:
            settle(pid)
            start = threading.Timer(START_AFTER, os.kill, (pid, signal.SIGUSR1))
            stop = threading.Timer(START_AFTER + args.seconds, os.kill, (pid, signal.SIGUSR2))
            start.start()
            stop.start()
            measured = uvloop.run(workload_run(args, port, pid))
            start.join()
            stop.join()
            settle(pid)  # the stats are written once the server handles SIGUSR2
        lines = header(
            f"Profile: {args.server} under {args.workload}",
            f"uvicorn `--ws {args.ws}`; yappi (CPU clock, all threads) over {args.seconds:g} s "
            f"of the workload; {measured.ops:,} operations at {measured.cpu_us:.0f} µs of "
            "server CPU each under the profiler.",
            at=args.at,
        )
        publish(lines + summarize(stats, measured.rate * args.seconds), args.out)


async def workload_run(args: argparse.Namespace, port: int, pid: int) -> Measurement:
    return await WORKLOADS[args.workload].run(port, pid, args.seconds + START_AFTER + 0.5)


if __name__ == "__main__":
    main()
