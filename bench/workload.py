"""What every workload measures, and the measurement window they share.

A workload drives a running server from this process (the load generator) and returns a
`Measurement`: how many operations completed in the window, the server's CPU time over
it (its whole process tree), this process's own CPU as a share of one core (near 100 %
means the load generator, not the server, set the pace), and sampled latencies.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from processes import context_switches, core_busy_seconds, cpu_times, switches_between

PAYLOAD = b"x" * 32
#: The core the servers run on.
SERVER_CORE = 0
#: A load generator busier than this share of its core limits what it measures.
SATURATED = 0.9


@dataclass
class Tally:
    """Operations completed and sampled latencies (seconds), updated by the listeners."""

    count: int = 0
    latencies: list[float] = field(default_factory=list)


@dataclass
class Measurement:
    ops: int
    seconds: float
    server_cpu: float
    client_cpu: float
    latencies: list[float]
    #: Share of the server's core that other processes took in the window: noise.
    others: float
    #: Workload-specific figures (memory per connection, connections answered...).
    facts: dict[str, float] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.ops / self.seconds if self.seconds else 0.0

    @property
    def cpu_us(self) -> float:
        """Server CPU per operation, in microseconds."""
        return self.server_cpu / self.ops * 1e6 if self.ops else float("inf")

    @property
    def switches_per_op(self) -> float:
        """The server's context switches per operation (see `processes.context_switches`)."""
        return self.facts["switches"] / self.ops if self.ops else float("inf")

    def percentile_us(self, q: float) -> float:
        ordered = sorted(self.latencies)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e6


async def measure_window(pid: int, seconds: float, tally: Tally) -> Measurement:
    """Let the load run for `seconds` after a warm-up; what happened in that window."""
    await asyncio.sleep(min(0.5, seconds / 4))  # warm-up: caches, thread pools
    base = tally.count
    tally.latencies.clear()
    window = Window(pid)
    await asyncio.sleep(seconds)
    return window.close(tally.count - base, list(tally.latencies))


class Window:
    """Server CPU, own CPU and the server core's busy time, from creation to `close`."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.switches = context_switches(pid)
        self.start = self.sample()

    def sample(self) -> tuple[float, float, float, float, float]:
        user, system = cpu_times(self.pid)
        return (
            user,
            system,
            time.process_time(),
            core_busy_seconds(SERVER_CORE),
            time.perf_counter(),
        )

    def close(self, ops: int, latencies: list[float], **facts: float) -> Measurement:
        deltas = (b - a for a, b in zip(self.start, self.sample(), strict=True))
        user, system, own, core, wall = deltas
        switches = switches_between(self.switches, context_switches(self.pid))
        server = user + system
        return Measurement(
            ops=ops,
            seconds=wall,
            server_cpu=server,
            client_cpu=own / wall,
            latencies=latencies,
            others=max(0.0, core - server) / wall,
            facts={"kernel_share": system / server if server else 0.0, "switches": switches}
            | facts,
        )
