"""The Markdown result files the benchmarks write: one header shape, printed and saved."""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path


def revision() -> str:
    """The commit measured, and whether `src/` had changes not yet committed."""
    root = Path(__file__).resolve().parent.parent
    git = ["git", "-C", str(root)]
    try:
        commit = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run([*git, "diff", "--quiet", "HEAD", "--", "src"]).returncode != 0
    except (OSError, subprocess.CalledProcessError):
        return "an unknown revision"
    return f"commit {commit}" + (" with uncommitted changes in src/" if dirty else "")


def header(title: str, setup: str) -> list[str]:
    """The title, the command that produced the run, the code measured, machine and setup."""
    return [
        f"# {title} ({time.strftime('%Y-%m-%d')})",
        "",
        f"Command: `python {' '.join(shlex.quote(a) for a in sys.argv)}`",
        "",
        f"cello at {revision()}.",
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
