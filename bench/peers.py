"""The servers the benchmarks compare, and the command line that starts each one.

Every ASGI app is served by the same uvicorn command with the same flags and the
WebSocket backend cello's own `run` picks (`cello.serving.DEFAULTS`), so the apps differ
in nothing but their code. Flask-Sock runs under gunicorn's thread worker, the way
Flask-Sock documents for many connections, and the Rust Cello under its own server.
"""

from __future__ import annotations

import sys

from peer_venv import rust_cello_python

from cello.runners import RUNNER_VARIABLE
from cello.serving import DEFAULTS

#: uvicorn's WebSocket backend for every uvicorn server: the one `app.run()` uses.
CELLO_WS: str = DEFAULTS["ws"]

#: ASGI apps served by uvicorn, by name.
UVICORN_APPS = {
    "raw": "bench.apps:raw",
    "raw-thread": "bench.apps:raw_thread",
    "raw-greenlet": "bench.apps:raw_greenlet",
    "starlette": "bench.starlette_app:app",
    "cello-sync": "bench.apps:cello_sync",
    "cello-greenlet": "bench.apps:cello_sync",
    "cello-async": "bench.apps:cello_async",
}
#: What a server's process gets in its environment besides the machine's: `cello-greenlet`
#: is `cello-sync`'s very app with its sync handlers on the greenlet runner.
UVICORN_ENV = {"cello-greenlet": {RUNNER_VARIABLE: "greenlet"}}
#: Every server, in the order result tables list them.
ALL = (
    "raw", "raw-thread", "raw-greenlet", "starlette", "flask-sock", "cello-sync",
    "cello-greenlet", "cello-async", "rust-cello",
)  # fmt: skip
#: Servers with a chat room at `/fanout` (`raw-thread` and `raw-greenlet` echo only).
FANOUT = tuple(name for name in ALL if name not in ("raw-thread", "raw-greenlet"))
#: Servers whose handlers are plain functions (the `capacity` workload), and the limit.
SYNC = ("raw", "cello-sync", "cello-greenlet", "rust-cello")


def uvicorn(target: str, port: int, ws: str) -> list[str]:
    return [
        sys.executable, "-m", "uvicorn", target, "--host", "127.0.0.1", "--port", str(port),
        "--ws", ws, "--log-level", "warning", "--no-access-log", "--lifespan", "auto",
    ]  # fmt: skip


def flask_sock(port: int) -> list[str]:
    # 2,000 connections per worker: gunicorn's default of 1,000 would leave no room
    # beside 1,000 idle WebSockets; the 1,000 threads are the configuration. The
    # worker's heartbeat timeout is raised from 30 s: with 2,000 threads contending for
    # the GIL after the idle workload, the worker can miss it and be killed mid-run.
    return [
        sys.executable, "-m", "gunicorn", "bench.flask_app:app", "--bind", f"127.0.0.1:{port}",
        "--workers", "1", "-k", "gthread", "--threads", "1000", "--worker-connections", "2000",
        "--graceful-timeout", "5", "--timeout", "120", "--log-level", "warning",
    ]  # fmt: skip


def command(name: str, port: int, ws: str, threads: int) -> list[str] | None:
    """How to start server `name` on `port`; `None` when this machine cannot run it.

    `threads` sizes the Rust Cello's blocking pool, which holds one thread per sync
    WebSocket connection and has only 64 unless told otherwise.
    """
    if name in UVICORN_APPS:
        return uvicorn(UVICORN_APPS[name], port, ws)
    if name == "flask-sock":
        return flask_sock(port)
    if name == "rust-cello":
        python = rust_cello_python()
        if python is None:
            return None
        script = "bench/rust_cello_app.py"
        return [str(python), script, "--port", str(port), "--threads", str(threads)]
    raise ValueError(f"unknown server {name!r}; known: {', '.join(ALL)}")
