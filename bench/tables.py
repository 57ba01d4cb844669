"""The suite's Markdown: one table per workload, a summary of ratios, the targets.

Every ratio divides a server's figure by `raw`'s from the same run (throughput and latency
show theirs in parentheses; CPU per operation, the figure that matters, has a column of
its own). Within a workload the best of the rounds is shown; `spread` is how much worse
the worst round was than the best, and `others on core 0` how much of the server's core
other processes of the machine took in that window: both measure the noise in the figure.
`kernel` is the share of the server's CPU spent in the kernel, and `switches` its
threads' context switches per operation: where handing work between threads costs, these
show it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from targets import evaluate
from workload import SATURATED, Measurement

if TYPE_CHECKING:
    from suite import Results, Workload


def best(workload: Workload, runs: list[Measurement]) -> Measurement:
    return min(runs, key=workload.score)


def spread(workload: Workload, runs: list[Measurement]) -> str:
    scores = [workload.score(m) for m in runs]
    return f"{max(scores) / min(scores) - 1:.0%}" if len(scores) > 1 else "-"


def client(m: Measurement) -> str:
    warning = " ⚠ load generator saturated" if m.client_cpu > SATURATED else ""
    return f"{m.client_cpu:.0%}{warning}"


def ratios(servers: list[str], workloads: list[Workload], results: Results) -> dict[str, float]:
    """`server/workload` → the server's figure over raw's (memory or CPU per operation)."""
    out: dict[str, float] = {}
    for w in workloads:
        if ("raw", w.name) not in results:
            continue
        base = w.score(best(w, results["raw", w.name]))
        for name in servers:
            if (name, w.name) in results:
                out[f"{name}/{w.name}"] = w.score(best(w, results[name, w.name])) / base
    return out


def with_ratio(value: float, base: float | None, digits: int = 0) -> str:
    """`value`, and in parentheses its ratio to raw's `base` when there is one."""
    shown = f"{value:,.{digits}f}"
    return f"{shown} ({value / base:.2f})" if base else shown


def timed_table(w: Workload, servers: list[str], results: Results) -> list[str]:
    raw = best(w, results["raw", w.name]) if ("raw", w.name) in results else None
    lines = [
        f"| server | {w.unit}/s (vs raw) | p50 µs (vs raw) | p99 µs (vs raw) "
        f"| server CPU µs/{w.unit} | vs raw | kernel | switches/{w.unit} | spread "
        "| others on core 0 | client CPU |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name in servers:
        runs = results.get((name, w.name))
        if not runs:
            continue
        m = best(w, runs)
        rate = with_ratio(m.rate, raw.rate if raw else None)
        p50 = with_ratio(m.percentile_us(0.5), raw.percentile_us(0.5) if raw else None)
        p99 = with_ratio(m.percentile_us(0.99), raw.percentile_us(0.99) if raw else None)
        ratio = f"{m.cpu_us / raw.cpu_us:.2f}" if raw else "-"
        lines.append(
            f"| {name} | {rate} | {p50} | {p99} | {m.cpu_us:.1f} | {ratio} "
            f"| {m.facts['kernel_share']:.0%} | {m.switches_per_op:.2f} | {spread(w, runs)} "
            f"| {m.others:.0%} | {client(m)} |"
        )
    return lines


def idle_table(w: Workload, servers: list[str], results: Results) -> list[str]:
    raw = best(w, results["raw", w.name]) if ("raw", w.name) in results else None
    lines = [
        "| server | answered | RSS KiB/conn | vs raw | threads | open all s | round trips s "
        "| p99 µs | CPU µs/conn | vs raw | others on core 0 | client CPU |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name in servers:
        runs = results.get((name, w.name))
        if not runs:
            continue
        m = best(w, runs)
        facts = m.facts
        memory = f"{facts['kib_per_conn'] / raw.facts['kib_per_conn']:.2f}" if raw else "-"
        cpu = f"{m.cpu_us / raw.cpu_us:.2f}" if raw else "-"
        lines.append(
            f"| {name} | {m.ops:,} of {facts['connections']:,.0f} | {facts['kib_per_conn']:.1f} "
            f"| {memory} | {facts['threads']:,.0f} | {facts['open_s']:.1f} "
            f"| {facts['trips_s']:.2f} "
            f"| {m.percentile_us(0.99):,.0f} | {m.cpu_us:.0f} | {cpu} | {m.others:.0%} "
            f"| {client(m)} |"
        )
    return lines


def summary(servers: list[str], workloads: list[Workload], table: dict[str, float]) -> list[str]:
    names = [w.name + (" (memory)" if w.memory else "") for w in workloads]
    lines = [
        "## Summary: server CPU per operation (memory per connection) vs raw",
        "",
        "| server | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(workloads),
    ]
    for name in servers:
        cells = [table.get(f"{name}/{w.name}") for w in workloads]
        if any(c is not None for c in cells):
            shown = [f"{c:.2f}" if c is not None else "-" for c in cells]
            lines.append(f"| {name} | " + " | ".join(shown) + " |")
    return lines


def render(servers: list[str], workloads: list[Workload], results: Results) -> list[str]:
    table = ratios(servers, workloads, results)
    lines = summary(servers, workloads, table)
    lines += ["", "## Targets", "", "| target | figure | met |", "|---|---|---|"]
    for target, figure, met in evaluate(table, results):
        lines.append(f"| {target} | {figure} | {'yes' if met else '**no**'} |")
    for w in workloads:
        lines += ["", f"## {w.name}", ""]
        lines += (idle_table if w.memory else timed_table)(w, servers, results)
    return lines
