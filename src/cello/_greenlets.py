"""Plain `def` handlers on the event loop's thread: the greenlet runner's switching.

A greenlet route's handler runs in a `HandlerGreenlet` whose parent is its connection's
ASGI task (more exactly, the greenlet running the event loop, inside that task's step).
Where a thread handler would block (`ws.recv()`, a send waiting for room, `cello.sleep`,
`cello.blocking`), a greenlet handler hands the awaitable to its task with `await_` and
switches to it; the task awaits it on the loop and switches back with the result, or
throws the exception in. So the handler reads as plain blocking code, holds no thread,
and each wait costs one greenlet switch each way instead of a hop between threads.

This is SQLAlchemy's asyncio pattern (`greenlet_spawn` / `await_only`). Nothing is
monkey-patched: code that blocks for real (`time.sleep`, a blocking socket, a C library)
blocks the loop and every connection on it while it runs. `StallWatch` reports such a
handler, and `cello.blocking` is the way out for one call.

Thread safety: a handler greenlet only ever runs on its loop's thread (greenlets cannot
switch across threads), inside its task. `HandlerGreenlets` is shared by every loop
serving the app: its counts are guarded by its lock.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

import anyio
from greenlet import getcurrent, greenlet

from ._stall_watch import StallWatch

T = TypeVar("T")


class HandlerGreenlet(greenlet):  # type: ignore[misc]  # greenlet ships no type for subclassing
    """A greenlet running one connection's handler; its parent is the connection's task."""

    def __init__(
        self,
        run: Callable[[], None],
        driver: greenlet,
        channel: object,
        limiter: anyio.CapacityLimiter | None = None,
    ) -> None:
        super().__init__(run, driver)
        #: The greenlet the connection's task runs in: `await_` switches to it.
        self.driver = driver
        #: The connection this handler owns (its `Channel`): only it reads from there.
        self.channel = channel
        #: The threads `cello.blocking` may use (`None`: anyio's default limiter).
        self.limiter = limiter
        # The handler sees the task's context variables, as code in the task would.
        self.gr_context = driver.gr_context


def current_handler() -> HandlerGreenlet | None:
    """The handler greenlet running now, or `None` outside one (a thread, plain loop code)."""
    current = getcurrent()
    return current if isinstance(current, HandlerGreenlet) else None


def await_(awaitable: Awaitable[T]) -> T:
    """Wait for `awaitable` from a greenlet handler: its task awaits it on the loop.

    Raises:
        RuntimeError: not called from a greenlet handler (a thread would have to block,
            the loop itself cannot).
    """
    current = getcurrent()
    if not isinstance(current, HandlerGreenlet):
        close = getattr(awaitable, "close", None)
        if close is not None:
            close()  # never awaited: do not leave a "was never awaited" warning behind
        raise RuntimeError("await_() only works inside a handler on the greenlet runner")
    return cast(T, current.driver.switch(awaitable))


async def run_in_greenlet(
    handler: Callable[[], None],
    channel: object,
    *,
    route: str,
    watch: StallWatch | None = None,
    limiter: anyio.CapacityLimiter | None = None,
) -> None:
    """Run `handler` in a new greenlet on this task, awaiting what it hands over.

    Each stretch the handler runs without waiting is timed against the stall threshold
    (`watch`). An exception the handler raises propagates here; one raised while the
    task awaits for the handler (cancellation included) is thrown into the handler, so
    its `finally` blocks run where it waits.
    """
    handler_greenlet = HandlerGreenlet(handler, getcurrent(), channel, limiter)
    step = _untimed if watch is None else watch.timing(handler_greenlet, route)
    switch, throw = handler_greenlet.switch, handler_greenlet.throw
    awaitable = step(switch)
    while not handler_greenlet.dead:
        try:
            result = await awaitable
        except BaseException as exc:  # noqa: BLE001 - thrown into the handler, where it waits
            awaitable = step(throw, exc)
        else:
            awaitable = step(switch, result)


class HandlerGreenlets:
    """The greenlet runner's budget of concurrent handlers, and its stall watch.

    The twin of `HandlerThreads` for greenlet routes: past `limit` handlers at once a new
    connection is refused with 1013. A greenlet costs a few kilobytes, not a thread's
    stack, so the limit is about the app's own resources, not the machine's threads.
    """

    def __init__(self, limit: int, stall_threshold: float | None) -> None:
        if limit < 1:
            raise ValueError("the greenlet limit must be at least 1")
        if stall_threshold is not None and stall_threshold <= 0:
            raise ValueError("the stall threshold must be positive (or None: not watched)")
        self.limit = limit
        self._lock = threading.Lock()
        self._busy = 0  # handlers running now (under `_lock`)
        #: Reports handlers that hold the loop too long; `None` when not watched.
        self.watch = StallWatch(stall_threshold) if stall_threshold is not None else None

    @property
    def busy(self) -> int:
        """How many greenlet handlers are running now."""
        return self._busy

    def reserve(self) -> bool:
        """Count one more handler; `False` when the budget is spent (refuse with 1013)."""
        with self._lock:
            if self._busy >= self.limit:
                return False
            self._busy += 1
        if self.watch is not None:
            self.watch.start()
        return True

    def release(self) -> None:
        """A handler has ended."""
        with self._lock:
            self._busy -= 1
            idle = self._busy == 0
        if idle and self.watch is not None:
            self.watch.idle()

    def shutdown(self) -> None:
        """Stop the stall watch's thread (the handlers end with their connections)."""
        if self.watch is not None:
            self.watch.stop()


def _untimed(step: Callable[..., T], *args: Any) -> T:
    return step(*args)
