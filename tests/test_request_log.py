"""`cello.request_log.RequestLog` read off scripted ASGI events (the served app is in
test_cello_pages.py)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from starlette.types import Message, Receive, Scope, Send

from cello.request_log import RequestLog

SCOPE: dict[str, Any] = {"type": "websocket", "path": "/guarded", "headers": []}


def logged(app: Any, events: list[Message], caplog: pytest.LogCaptureFixture) -> str:
    """The line `RequestLog` writes for `app` served with `events` to receive."""
    incoming = list(events)

    async def receive() -> Message:
        return incoming.pop(0)

    async def send(message: Message) -> None:
        pass

    caplog.set_level(logging.INFO, logger="cello.requests")
    asyncio.run(RequestLog(app)(SCOPE, receive, send))
    (line,) = [r.message for r in caplog.records if r.name == "cello.requests"]
    return line


def test_a_refused_websocket_logs_its_status_and_no_close_code(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """After a denial the server queues a disconnect (1006) for `receive`; an app that
    reads it (a sync route's receive pump) must not turn the 403 into "closed 1006"."""

    async def refusing(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()  # websocket.connect
        await send({"type": "websocket.http.response.start", "status": 403, "headers": []})
        await send({"type": "websocket.http.response.body", "body": b""})
        await receive()  # the disconnect the server queues after a denial

    line = logged(
        refusing,
        [{"type": "websocket.connect"}, {"type": "websocket.disconnect", "code": 1006}],
        caplog,
    )
    assert line.startswith("WS /guarded -> 403 ("), line


def test_an_accepted_websocket_logs_the_first_close(caplog: pytest.LogCaptureFixture) -> None:
    async def echo_once(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await receive()  # the client's close

    line = logged(
        echo_once,
        [{"type": "websocket.connect"}, {"type": "websocket.disconnect", "code": 1001}],
        caplog,
    )
    assert line.startswith("WS /guarded -> 101, closed 1001 ("), line
