"""Developer sessions: `nox -s tests lint types docs bench conformance stress`."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "types"]
nox.options.reuse_existing_virtualenvs = True

PYTHON = ["3.11", "3.12", "3.13"]


@nox.session(python=PYTHON[0])
def tests(session: nox.Session) -> None:
    """The test suite with its coverage gate (the same command the README gives)."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session(python=PYTHON[0])
def lint(session: nox.Session) -> None:
    """ruff: lint and formatting."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", "src", "tests", "examples", "bench", "noxfile.py")
    session.run("ruff", "format", "--check", "src", "tests", "examples", "bench", "noxfile.py")


@nox.session(python=PYTHON[0])
def types(session: nox.Session) -> None:
    """mypy --strict over src/."""
    session.install("-e", ".", "mypy>=1.11")
    session.run("mypy")


@nox.session(python=PYTHON[0])
def docs(session: nox.Session) -> None:
    """Build the documentation site, failing on any warning."""
    session.install("-e", ".", "mkdocs>=1.6", "mkdocs-material>=9.5", "mkdocstrings[python]>=0.26")
    session.run("mkdocs", "build", "--strict", "-d", "site")


@nox.session(python=PYTHON[0])
def bench(session: nox.Session) -> None:
    """The benchmark suite: cello, a raw ASGI app and the peers, every workload (~17 min)."""
    session.install("-e", ".[bench]")
    session.run("python", "bench/suite.py", "--out", "bench/results/suite.md", *session.posargs)


@nox.session(python=PYTHON[0])
def conformance(session: nox.Session) -> None:
    """Autobahn|Testsuite fuzzingclient against app.run, each uvicorn backend (~2 min)."""
    session.install("-e", ".[test]")
    session.run(
        "python", "-m", "pytest", "tests/test_conformance.py", "-s", "--no-cov", *session.posargs,
        env={"CELLO_CONFORMANCE": "1"},
    )  # fmt: skip


@nox.session(python=PYTHON[0])
def stress(session: nox.Session) -> None:
    """Churn, shutdown and soak at full size: 10,000 cycles, 500 sockets, 100 x 1,000 (~3 min)."""
    session.install("-e", ".[test]")
    session.run(
        "python", "-m", "pytest", "tests/test_soak.py", "-s", "--no-cov", *session.posargs,
        env={"CELLO_STRESS": "1"},
    )  # fmt: skip
