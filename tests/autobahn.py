"""The Autobahn|Testsuite `fuzzingclient`, installed at run time and pointed at a server.

The suite is Python 2 software (PyPI `autobahntestsuite`). It is installed into a Python 2.7
virtualenv under `tests/artifacts/autobahn/` (ignored by git), made with `virtualenv<20.22`,
the last release that still creates Python 2 environments. Python 2.7 is looked for on
`PATH` and in pyenv's versions folder.
"""

from __future__ import annotations

import collections
import glob
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from servers import ROOT

WORKDIR = ROOT / "tests" / "artifacts" / "autobahn"
SUITE_VERSION = "25.10.1"
#: Compression (permessage-deflate) cases: uvicorn's backends do not negotiate it here.
EXCLUDED = ["12.*", "13.*"]
PASSING = frozenset({"OK", "NON-STRICT", "INFORMATIONAL"})


def find_python27() -> str | None:
    """A Python 2.7 interpreter that runs, or `None`."""
    candidates = [shutil.which("python2.7")]
    pyenv_root = os.environ.get("PYENV_ROOT") or str(Path.home() / ".pyenv")
    candidates += sorted(glob.glob(f"{pyenv_root}/versions/2.7*/bin/python2.7"))
    for candidate in candidates:
        if candidate is None:
            continue
        probe = subprocess.run([candidate, "-c", "import sys; print(sys.version_info[:2])"],
                               capture_output=True, text=True)  # fmt: skip
        if probe.returncode == 0 and probe.stdout.strip() == "(2, 7)":
            return candidate
    return None


def install_wstest(python27: str) -> Path:
    """The `wstest` command of a Python 2.7 virtualenv with the suite; made once, then reused."""
    wstest = WORKDIR / "py27" / "bin" / "wstest"
    if wstest.exists():
        return wstest
    WORKDIR.mkdir(parents=True, exist_ok=True)
    tool = WORKDIR / "virtualenv-tool"

    def run(*cmd: str | Path) -> None:
        subprocess.run([str(c) for c in cmd], check=True, stdout=subprocess.DEVNULL)

    run(sys.executable, "-m", "venv", tool)
    run(tool / "bin" / "pip", "install", "-q", "virtualenv<20.22")
    run(tool / "bin" / "virtualenv", "-q", "-p", python27, WORKDIR / "py27")
    run(WORKDIR / "py27" / "bin" / "pip", "install", "-q", f"autobahntestsuite=={SUITE_VERSION}")
    return wstest


@dataclass
class Report:
    """One agent's results: case id to the suite's verdicts."""

    agent: str
    behavior: dict[str, str] = field(default_factory=dict)
    behavior_close: dict[str, str] = field(default_factory=dict)

    @property
    def failed(self) -> set[str]:
        """Cases whose behaviour, or closing behaviour, is neither OK, NON-STRICT nor
        INFORMATIONAL."""
        return {
            case
            for case in self.behavior
            if self.behavior[case] not in PASSING or self.behavior_close[case] not in PASSING
        }

    def counts(self) -> dict[str, int]:
        counted = collections.Counter(
            "FAILED" if case in self.failed else verdict for case, verdict in self.behavior.items()
        )
        return {kind: counted[kind] for kind in ("OK", "NON-STRICT", "INFORMATIONAL", "FAILED")}

    def summary(self) -> str:
        counts = ", ".join(f"{kind} {n}" for kind, n in self.counts().items())
        failed = ", ".join(sorted(self.failed, key=case_key)) or "none"
        return f"{self.agent}: {len(self.behavior)} cases: {counts}; failed: {failed}"


def case_key(case: str) -> tuple[int, ...]:
    return tuple(int(part) for part in case.split("."))


def fuzz(wstest: Path, agent: str, url: str, timeout: float = 600) -> Report:
    """Run every case but the excluded ones against `url` (a loopback address only)."""
    assert url.startswith("ws://127.0.0.1:"), "the suite only ever targets this machine"
    outdir = WORKDIR / "reports" / agent
    shutil.rmtree(outdir, ignore_errors=True)
    outdir.mkdir(parents=True)
    spec = {
        "outdir": str(outdir),
        "servers": [{"agent": agent, "url": url}],
        "cases": ["*"],
        "exclude-cases": EXCLUDED,
        "exclude-agent-cases": {},
    }
    spec_file = outdir / "fuzzingclient.json"
    spec_file.write_text(json.dumps(spec, indent=2))
    subprocess.run(
        [str(wstest), "-m", "fuzzingclient", "-s", str(spec_file)],
        cwd=outdir,
        check=True,
        timeout=timeout,
        stdout=subprocess.DEVNULL,
    )
    index = json.loads((outdir / "index.json").read_text())[agent]
    report = Report(agent)
    for case, result in index.items():
        report.behavior[case] = result["behavior"]
        report.behavior_close[case] = result["behaviorClose"]
    return report
