"""`RequestLog`: one log line per HTTP request and per WebSocket, for `app.enable_logging()`.

uvicorn's access log says that a request came and what status it got; this line adds how
long the app took, and for a WebSocket, how it ended (the close code, or the refusal's
status) and how long it stayed open, which is what a real-time app's operator looks for:

    GET /api/users -> 200 (2.3 ms)
    WS /ws/rooms/lobby -> 101, closed 1000 (12.4 s)
    WS /admin -> 403 (0.6 ms)

Lines go to the `cello.requests` logger at INFO. `enable_logging()` gives that logger a
handler printing to stderr when the application has configured no logging of its own (the
root logger has no handler); otherwise the lines follow the application's configuration.
"""

from __future__ import annotations

import logging
import sys
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["RequestLog", "show_request_log"]

logger = logging.getLogger("cello.requests")


def show_request_log() -> None:
    """Make the request log visible when nothing else would show it (see the module)."""
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("[%(asctime)s] %(message)s", "%Y-%m-%d %H:%M:%S"))
        logger.addHandler(handler)


class RequestLog:
    """ASGI middleware logging each HTTP request and WebSocket when it ends."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket") or not logger.isEnabledFor(logging.INFO):
            await self.app(scope, receive, send)
            return
        outcome = _Outcome()

        async def watched_send(message: Message) -> None:
            outcome.saw(message)
            await send(message)

        async def watched_receive() -> Message:
            message = await receive()
            if (
                message["type"] == "websocket.disconnect"
                and outcome.status == 101  # a refused handshake has no close code
                and outcome.close_code is None
            ):
                outcome.close_code = message.get("code", 1005)
            return message

        started = time.perf_counter()
        try:
            await self.app(scope, watched_receive if kind == "websocket" else receive, watched_send)
        except BaseException:
            outcome.failed = True
            raise
        finally:
            elapsed = time.perf_counter() - started
            method = scope.get("method", "GET") if kind == "http" else "WS"
            logger.info("%s %s -> %s (%s)", method, scope["path"], outcome, _duration(elapsed))


class _Outcome:
    """What the app answered, read off the events it sent."""

    __slots__ = ("close_code", "failed", "status")

    def __init__(self) -> None:
        self.status: int | None = None
        self.close_code: int | None = None
        self.failed = False

    def saw(self, message: Message) -> None:
        kind = message["type"]
        if kind in ("http.response.start", "websocket.http.response.start"):
            self.status = message["status"]
        elif kind == "websocket.accept":
            self.status = 101
        elif kind == "websocket.close":
            if self.status is None:  # a close before the accept refuses with 403
                self.status = 403
            elif self.close_code is None:  # the first close, the app's or the client's
                self.close_code = message.get("code", 1000)

    def __str__(self) -> str:
        if self.status is None:
            return "failed" if self.failed else "no response"
        if self.close_code is not None:
            return f"{self.status}, closed {self.close_code}"
        return str(self.status)


def _duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.1f} ms"
    return f"{seconds:.1f} s"
