"""Server shutdown with open WebSockets: clients get a close frame, handlers return, the
process exits. Served by real uvicorn processes, stopped with real signals."""

from __future__ import annotations

import contextlib
import signal
import time

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from servers import subprocess_server

pytestmark = pytest.mark.usefixtures("websocket_runner")

OPEN = 20


@pytest.mark.parametrize(
    ("how", "expected_code"),
    [
        pytest.param({"use_run": True}, 1001, id="app.run"),
        pytest.param({"extra": ("--ws", "websockets-sansio")}, 1012, id="uvicorn-sansio"),
        pytest.param({"extra": ("--ws", "wsproto")}, 1012, id="uvicorn-wsproto"),
    ],
)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_shutdown_closes_sockets_and_exits(
    how: dict[str, object], expected_code: int, sig: signal.Signals
) -> None:
    with subprocess_server("tests.apps.blocking:app", **how) as (proc, port):  # type: ignore[arg-type]
        with contextlib.ExitStack() as stack:
            clients = [
                stack.enter_context(connect(f"ws://127.0.0.1:{port}/ws")) for _ in range(OPEN)
            ]
            for client in clients:
                assert client.recv(10) == "ready"
            started = time.monotonic()
            proc.send_signal(sig)
            codes = []
            for client in clients:
                with pytest.raises(ConnectionClosed) as closed:
                    client.recv(10)
                assert closed.value.rcvd is not None
                codes.append(closed.value.rcvd.code)
            assert codes == [expected_code] * OPEN
        # uvicorn re-raises the signal once it has shut down gracefully.
        assert proc.wait(15) in (0, -sig)
        assert time.monotonic() - started < 10
        assert proc.stdout is not None
        output = proc.stdout.read()
    assert output.count("handler returned:") == OPEN, output


def test_shutdown_ends_live_sse_streams() -> None:
    """uvicorn alone would wait for an open event stream forever; `app.run()` ends it."""
    import httpx

    with subprocess_server("examples.dashboard:app", use_run=True) as (proc, port):
        with (
            httpx.Client(timeout=10) as http,
            http.stream("GET", f"http://127.0.0.1:{port}/events") as response,
        ):
            lines = response.iter_lines()
            assert next(line for line in lines if line.startswith("event:")) == "event: metrics"
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            for _ in lines:  # ends when the server ends the response
                assert time.monotonic() - started < 5, "the event stream outlived shutdown"
        assert proc.wait(10) in (0, -signal.SIGTERM)
