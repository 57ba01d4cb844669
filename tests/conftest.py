from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cello.runners import RUNNER_VARIABLE, RUNNERS
from redis_server import RedisServer
from servers import WS_BACKENDS


@pytest.fixture(params=WS_BACKENDS)
def ws_backend(request: pytest.FixtureRequest) -> str:
    """Each uvicorn WebSocket backend in turn."""
    backend: str = request.param
    return backend


@pytest.fixture(params=RUNNERS)
def websocket_runner(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each runner for sync WebSocket handlers in turn, as the apps' default.

    A module runs its WebSocket tests on both with
    `pytestmark = pytest.mark.usefixtures("websocket_runner")`: the one suite, not a copy.
    Apps read `CELLO_WEBSOCKET_RUNNER` per connection, so servers in this process and
    servers started by the test both see it.
    """
    runner: str = request.param
    monkeypatch.setenv(RUNNER_VARIABLE, runner)
    return runner


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of its own on a free port, stopped after the test."""
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()
