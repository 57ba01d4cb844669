"""The Rust Cello peer's own virtualenv: Python 3.12 with `cello-framework`, kept apart.

That package installs a top-level `cello` module, so it must never share a virtualenv or
`sys.path` with this project: it gets one of its own under `bench/.peers/` (ignored by
git), made with whatever Python 3.12 this machine has, found when the benchmark runs.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

PACKAGE = "cello-framework==1.4.1"
VENV = Path(__file__).resolve().parent / ".peers" / "rust-cello"


def runs_python_312(python: str) -> bool:
    try:
        out = subprocess.run(
            [python, "-c", "import sys; print(sys.version_info[:2] == (3, 12))"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.strip() == "True"


def find_python_312() -> str | None:
    """A Python 3.12 interpreter: `python3.12` on PATH, else one that pyenv has installed."""
    candidates = [shutil.which("python3.12")]
    if shutil.which("pyenv"):
        versions = subprocess.run(
            ["pyenv", "versions", "--bare"], capture_output=True, text=True
        ).stdout.split()
        for version in (v for v in versions if v.startswith("3.12")):
            prefix = subprocess.run(["pyenv", "prefix", version], capture_output=True, text=True)
            candidates.append(str(Path(prefix.stdout.strip()) / "bin" / "python3.12"))
    return next((c for c in candidates if c and runs_python_312(c)), None)


def installed(python: Path) -> bool:
    check = "import importlib.metadata as m; print(m.version('cello-framework'))"
    result = subprocess.run([python, "-c", check], capture_output=True, text=True)
    return result.stdout.strip() == PACKAGE.split("==")[1]


def rust_cello_python() -> Path | None:
    """The peer virtualenv's interpreter, made on first use; `None` without a Python 3.12."""
    python = VENV / "bin" / "python"
    if python.exists() and installed(python):
        return python
    base = find_python_312()
    if base is None:
        print("note: no Python 3.12 on this machine; skipping the Rust Cello peer", file=sys.stderr)
        return None
    subprocess.run([base, "-m", "venv", "--clear", VENV], check=True)
    subprocess.run([python, "-m", "pip", "install", "-q", PACKAGE], check=True)
    return python
