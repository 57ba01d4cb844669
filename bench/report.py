"""The Markdown result files the benchmarks write: one header shape, printed and saved."""

from __future__ import annotations

import os
import platform
import shlex
import sys
import time
from pathlib import Path


def header(title: str, setup: str) -> list[str]:
    """The title, the command that produced the run, and the machine and setup."""
    return [
        f"# {title} ({time.strftime('%Y-%m-%d')})",
        "",
        f"Command: `python {' '.join(shlex.quote(a) for a in sys.argv)}`",
        "",
        f"Python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} cores; "
        + setup,
        "",
    ]


def publish(lines: list[str], out: Path | None) -> None:
    """Print the report, and save it to `out` when given."""
    report = "\n".join(lines) + "\n"
    print(report)
    if out is not None:
        out.write_text(report)
