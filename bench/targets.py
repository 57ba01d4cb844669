"""The performance issue's targets, checked against one run's ratios.

Each target compares ratios to `raw` (server CPU per operation, or memory per connection
for the idle workloads) measured in the same run; a target whose figures the run lacks
(a server or workload left out) is not listed. These are benchmark targets, read by
people, not test assertions.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from suite import Results

Row = tuple[str, str, bool]

#: The facade's cost over raw: (server, workloads, the largest ratio allowed). The sync
#: runners' figures are the runners issue's: the thread runner pays a hand-off per message
#: that the greenlet runner does not.
LIMITS = [
    ("cello-sync", ("echo_1",), 1.4),
    ("cello-sync", ("echo_50",), 1.8),
    ("cello-sync", ("idle_mem",), 1.8),
    ("cello-greenlet", ("echo_1", "echo_50"), 1.1),
    ("cello-greenlet", ("connect_1", "connect_20"), 1.2),
    ("cello-greenlet", ("idle_mem",), 1.4),
    ("cello-greenlet", ("fanout",), 1.0),
    ("cello-async", ("echo_1", "echo_50"), 1.05),
    ("cello-sync", ("connect_1", "connect_20"), 1.2),
    ("cello-async", ("connect_1", "connect_20"), 1.2),
    ("cello-sync", ("fanout", "fanout_hub"), 1.0),
    ("cello-async", ("fanout", "fanout_hub"), 1.0),
]
#: Where a sync runner must beat the Rust Cello, and by how much: its ratio at most
#: `factor` times the Rust Cello's.
VERSUS_RUST = [("echo_50", 1.0), ("fanout", 1.0), ("idle_mem", 1.0)]
VERSUS_RUST_WITHIN = [("connect_1", 2.0), ("connect_20", 2.0)]
EVERY_WORKLOAD = ("echo_1", "echo_50", "connect_1", "connect_20", "fanout", "idle_mem")
SYNC_RUNNERS = ("cello-sync", "cello-greenlet")


def limits(table: dict[str, float]) -> Iterator[Row]:
    for server, workloads, limit in LIMITS:
        for workload in workloads:
            ratio = table.get(f"{server}/{workload}")
            if ratio is not None:
                yield f"{server} {workload} ≤ {limit:.2f}x raw", f"{ratio:.2f}x", ratio <= limit


def versus(
    table: dict[str, float], server: str, peer: str, rows: list[tuple[str, float]]
) -> Iterator[Row]:
    """`server`'s ratio against `peer`'s: below it (`factor` 1), or within `factor` of it."""
    for workload, factor in rows:
        ours, theirs = table.get(f"{server}/{workload}"), table.get(f"{peer}/{workload}")
        if ours is None or theirs is None:
            continue
        if factor == 1.0:
            target, met = f"{server} below {peer} on {workload}", ours < theirs
        else:
            target = f"{server} within {factor:g}x of {peer} on {workload}"
            met = ours <= theirs * factor
        yield target, f"{ours:.2f}x vs {theirs:.2f}x", met


def capacity(results: Results) -> Iterator[Row]:
    """Every idle connection answered, and the greenlet runner's memory below the threads'."""
    kib: dict[str, float] = {}
    for server in SYNC_RUNNERS:
        runs = results.get((server, "capacity"))
        if runs:
            m = runs[0]
            n = int(m.facts["connections"])
            kib[server] = m.facts["kib_per_conn"]
            yield f"{server} answers all {n:,} idle connections", f"{m.ops:,} of {n:,}", m.ops == n
    if len(kib) == len(SYNC_RUNNERS):
        threads, greenlets = kib["cello-sync"], kib["cello-greenlet"]
        yield (
            "cello-greenlet's capacity memory below cello-sync's",
            f"{greenlets:.1f} vs {threads:.1f} KiB/conn",
            greenlets < threads,
        )


def evaluate(table: dict[str, float], results: Results) -> list[Row]:
    rows = list(limits(table))
    rows += capacity(results)
    for server in SYNC_RUNNERS:
        rows += versus(table, server, "rust-cello", VERSUS_RUST)
        rows += versus(table, server, "rust-cello", VERSUS_RUST_WITHIN)
    rows += versus(table, "cello-sync", "flask-sock", [(w, 1.0) for w in EVERY_WORKLOAD])
    return rows
