"""The benchmark suite: every server against every workload, ratios to `raw` from one run.

Each server runs as its own process pinned to core 0 and this load generator runs pinned
to core 1. A round starts each server once and runs the workloads on it in turn
(`idle_mem` first, so its memory baseline is a fresh process); rounds interleave the
servers, and each figure is the best of the rounds (the least disturbed window), because
these machines are shared and absolute figures drift. `capacity` runs last, once per
sync server, each in a fresh process.

    python bench/suite.py --out bench/results/suite.md
    python bench/suite.py --servers raw,cello-sync --workloads echo_1,fanout --seconds 1
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers
from connect import connect
from echo import echo
from fanout import fanout
from idle import idle
from processes import exit_on_sigterm, free_port, serve, settle
from report import export_source, header, publish
from tables import render
from workload import Measurement

Run = Callable[[int, int, float], Coroutine[Any, Any, Measurement]]


@dataclass(frozen=True)
class Workload:
    name: str
    unit: str  # what one operation is
    run: Run
    #: Whether the figure that matters is memory per connection (else CPU per operation).
    memory: bool = False
    #: The servers that can run it, when not all can.
    only: tuple[str, ...] | None = None

    def score(self, m: Measurement) -> float:
        """Lower is better: the key best-of-N keeps."""
        return m.facts["kib_per_conn"] if self.memory else m.cpu_us


WORKLOADS = {
    w.name: w
    for w in (
        Workload("idle_mem", "conn", lambda port, pid, s: idle(port, pid, 1_000), memory=True),
        Workload("echo_1", "msg", lambda port, pid, s: echo(port, pid, 1, s)),
        Workload("echo_50", "msg", lambda port, pid, s: echo(port, pid, 50, s)),
        Workload("connect_1", "conn", lambda port, pid, s: connect(port, pid, 1, s)),
        Workload("connect_20", "conn", lambda port, pid, s: connect(port, pid, 20, s)),
        Workload(
            "fanout", "delivery", lambda port, pid, s: fanout(port, pid, s), only=peers.FANOUT
        ),
        Workload(
            "fanout_hub",
            "delivery",
            lambda port, pid, s: fanout(port, pid, s, path="/hub"),
            only=("raw", "cello-sync", "cello-greenlet", "cello-async"),
        ),
    )
}
CAPACITY = Workload("capacity", "conn", lambda port, pid, s: idle(port, pid, 10_000), memory=True)
#: The Rust Cello's thread pool: one thread per sync connection of the largest workload.
THREADS = {"round": 1_100, "capacity": 10_100}

Results = dict[tuple[str, str], list[Measurement]]


def environment(name: str, args: argparse.Namespace) -> dict[str, str] | None:
    """`--at`'s environment for the servers that import this cello, never the Rust Cello's;
    plus what the server itself sets (`peers.UVICORN_ENV`)."""
    if name not in peers.UVICORN_APPS:
        return None
    own = peers.UVICORN_ENV.get(name)
    if own is None:
        return args.env
    return {**(args.env or os.environ), **own}


def run_rounds(servers: list[str], workloads: list[Workload], args: argparse.Namespace) -> Results:
    results: Results = {}
    for round_ in range(args.rounds):
        for name in servers:
            port = free_port()
            argv = peers.command(name, port, args.ws, THREADS["round"])
            if argv is None:
                continue
            print(f"round {round_ + 1}: {name}", file=sys.stderr)
            with serve(argv, port, core=0, env=environment(name, args)) as pid:
                for workload in workloads:
                    if workload.only is not None and name not in workload.only:
                        continue
                    settle(pid)
                    measured = uvloop.run(workload.run(port, pid, args.seconds))
                    results.setdefault((name, workload.name), []).append(measured)
    return results


def run_capacity(servers: list[str], args: argparse.Namespace) -> Results:
    results: Results = {}
    for name in (s for s in peers.SYNC if s in servers):
        port = free_port()
        argv = peers.command(name, port, args.ws, THREADS["capacity"])
        if argv is None:
            continue
        print(f"capacity: {name}", file=sys.stderr)
        with serve(argv, port, core=0, env=environment(name, args)) as pid:
            results[(name, CAPACITY.name)] = [uvloop.run(CAPACITY.run(port, pid, 0))]
    return results


def versions() -> str:
    from importlib.metadata import version

    from peer_venv import PACKAGE

    ours = ("uvicorn", "websockets", "starlette", "flask-sock", "gunicorn", "picows")
    return ", ".join([*(f"{name} {version(name)}" for name in ours), PACKAGE.replace("==", " ")])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--servers", default=",".join(peers.ALL))
    parser.add_argument("--workloads", default=",".join([*WORKLOADS, CAPACITY.name]))
    parser.add_argument("--seconds", type=float, default=1.5, help="measurement window")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds, best kept")
    parser.add_argument("--ws", default=peers.CELLO_WS, help="uvicorn --ws backend")
    parser.add_argument("--at", help="measure cello as of this commit (default: the work tree)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    exit_on_sigterm()
    with tempfile.TemporaryDirectory() as tmp:
        args.env = export_source(args.at, Path(tmp)) if args.at else None
        run(args)


def run(args: argparse.Namespace) -> None:
    servers = args.servers.split(",")
    chosen = args.workloads.split(",")
    os.sched_setaffinity(0, {1})
    workloads = [WORKLOADS[name] for name in chosen if name in WORKLOADS]
    results = run_rounds(servers, workloads, args) if workloads else {}
    if CAPACITY.name in chosen:
        results |= run_capacity(servers, args)
        workloads.append(CAPACITY)
    lines = header(
        "Benchmark suite",
        f"uvicorn `--ws {args.ws}` for every uvicorn server; servers pinned to core 0, the "
        f"picows load generator to core 1; best of {args.rounds} interleaved rounds of "
        f"{args.seconds:g} s; 32-byte text messages; {versions()}.",
        at=args.at,
    )
    publish(lines + render(servers, workloads, results), args.out)


if __name__ == "__main__":
    main()
