"""How plain `def` WebSocket handlers run: on a thread, or in a greenlet on the event loop.

* `"thread"` (the default): each connection's handler holds a worker thread for its whole
  life. Any blocking library works unchanged; each message crosses between the handler's
  thread and the loop.
* `"greenlet"`: the handler runs in a greenlet on the event loop's thread. `ws.recv()`,
  sends that wait for room, `sleep` and `blocking` switch to the loop while they wait, so
  a message costs about what an `async def` handler's does and an idle connection holds
  no thread. Code that blocks for real (`time.sleep`, a blocking database driver) stalls
  every connection on the loop: call it through `blocking`, or keep the route on threads.

Choose per app (`App(websocket_runner="greenlet")`, or the `CELLO_WEBSOCKET_RUNNER`
environment variable) or per route (`@app.websocket(path, runner="thread")`).

`blocking` and `sleep` work the same on both runners, so a handler can move between them.
"""

from __future__ import annotations

import asyncio
import functools
import os
import time
from collections.abc import Callable
from typing import Any, Final, Literal, TypeVar, cast

import anyio.to_thread

from ._greenlets import await_, current_handler

__all__ = ["RUNNERS", "Runner", "blocking", "default_runner", "sleep"]

T = TypeVar("T")

#: The ways a plain `def` WebSocket handler can run.
Runner = Literal["thread", "greenlet"]
RUNNERS: Final[tuple[Runner, ...]] = ("thread", "greenlet")

#: The environment variable that chooses the runner of apps that do not say.
RUNNER_VARIABLE: Final = "CELLO_WEBSOCKET_RUNNER"


def check_runner(runner: str | None, variable: str = "runner") -> Runner | None:
    """`runner` if it names a runner (or is `None`); a `ValueError` that lists them if not."""
    if runner is None or runner in RUNNERS:
        return runner
    raise ValueError(f"{variable} must be one of {', '.join(map(repr, RUNNERS))}, not {runner!r}")


def default_runner() -> Runner:
    """The runner for apps that do not choose one: `CELLO_WEBSOCKET_RUNNER`, else thread."""
    chosen = os.environ.get(RUNNER_VARIABLE) or "thread"
    return cast(Runner, check_runner(chosen, RUNNER_VARIABLE))


def blocking(func: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """Call `func(*args, **kwargs)` where it may block, and return what it returns.

    In a handler on the greenlet runner the call runs in a worker thread while only this
    handler waits (the loop serves every other connection meanwhile); it sees the
    handler's context variables, and what it raises is raised here. On a thread (a
    thread-runner handler, any plain thread) it is simply called.

        @app.websocket("/ws/report", runner="greenlet")
        def report(ws):
            rows = cello.blocking(database.fetch_all, "select ...")
            ws.send_json(rows)

    Raises:
        RuntimeError: called on the event loop outside a greenlet handler (an `async def`
            handler): await `asyncio.to_thread` there instead.
    """
    handler = current_handler()
    if handler is None:
        _refuse_on_loop("cello.blocking()", "asyncio.to_thread(func, ...)")
        return func(*args, **kwargs)
    call = functools.partial(func, *args, **kwargs)
    return await_(anyio.to_thread.run_sync(call, limiter=handler.limiter))


def sleep(seconds: float) -> None:
    """Wait `seconds` without holding the loop (greenlet runner) or as `time.sleep` does.

    Raises:
        RuntimeError: called on the event loop outside a greenlet handler: await
            `asyncio.sleep` there instead.
    """
    if current_handler() is None:
        _refuse_on_loop("cello.sleep()", "asyncio.sleep(seconds)")
        time.sleep(seconds)
        return
    await_(asyncio.sleep(seconds))


def _refuse_on_loop(what: str, instead: str) -> None:
    """Raise if this thread runs an event loop: blocking it would stall every connection."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return  # a plain thread, which may block
    raise RuntimeError(
        f"{what} would block the event loop: this is async code (or a handler greenlet of "
        f"another app's loop); await {instead} instead"
    )
