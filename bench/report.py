"""The Markdown result files the benchmarks write: one header shape, printed and saved."""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GIT = ["git", "-C", str(ROOT)]


def revision(at: str | None = None) -> str:
    """The commit measured: `at`, or the work tree's, noting changes in `src/` not committed."""
    try:
        commit = subprocess.run(
            [*GIT, "rev-parse", "--short", at or "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "an unknown revision"
    if at is not None:
        return f"commit {commit}"
    dirty = subprocess.run([*GIT, "diff", "--quiet", "HEAD", "--", "src"]).returncode != 0
    return f"commit {commit}" + (" with uncommitted changes in src/" if dirty else "")


def export_source(at: str, into: Path) -> dict[str, str]:
    """Extract `src/` as of commit `at` into `into`; the environment that imports it.

    Servers started with this environment import cello from that commit, not from the
    work tree, so a run measures committed code (or compares two commits).
    """
    archive = subprocess.run([*GIT, "archive", at, "src"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return {**os.environ, "PYTHONPATH": str(into / "src")}


def header(title: str, setup: str, at: str | None = None) -> list[str]:
    """The title, the command that produced the run, the code measured, machine and setup."""
    return [
        f"# {title} ({time.strftime('%Y-%m-%d')})",
        "",
        f"Command: `python {' '.join(shlex.quote(a) for a in sys.argv)}`",
        "",
        f"cello at {revision(at)}.",
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
