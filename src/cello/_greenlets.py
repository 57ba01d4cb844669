"""Plain `def` handlers on the event loop's thread: the greenlet runner's switching.

A greenlet route's handler runs in a `HandlerGreenlet` whose parent is its connection's
ASGI task (more exactly, the greenlet running the event loop, inside that task's step).
Where a thread handler would block (`ws.recv()`, a send waiting for room, `cello.sleep`,
`cello.blocking`), a greenlet handler hands the awaitable to its task with `await_` and
switches to it; the task awaits it on the loop and switches back with the result, or
throws the exception in. So the handler reads as plain blocking code, holds no thread,
and each wait costs one greenlet switch each way instead of a hop between threads.

Waiting for the connection's next message skips even that: the handler *parks*
(switches to its driver with `PARK`), its task keeps waiting for a request that has not
come, and the connection resumes the handler itself (`GreenletRun.resume`) from the
server's callback that delivers the message. A message then costs one switch in and one
out, with no task step, future or coroutine in between. Whoever resumes a handler, its
task or its connection, gets its next request back, so both go through `resume`, which
hands an awaitable to the task and finishes on the handler's return or failure.

This is SQLAlchemy's asyncio pattern (`greenlet_spawn` / `await_only`). Nothing is
monkey-patched: code that blocks for real (`time.sleep`, a blocking socket, a C library)
blocks the loop and every connection on it while it runs. `StallWatch` reports such a
handler, and `cello.blocking` is the way out for one call.

Thread safety: a handler greenlet only ever runs on its loop's thread (greenlets cannot
switch across threads), inside its task. `HandlerGreenlets` is shared by every loop
serving the app: its counts are guarded by its lock.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar, cast

import anyio
from greenlet import getcurrent, greenlet

from ._stall_watch import LoopStretches, StallWatch

T = TypeVar("T")

#: What a handler switches to its driver with to wait until its connection resumes it
#: (`GreenletRun.resume`), instead of an awaitable for its task.
PARK: Final = object()


class HandlerGreenlet(greenlet):  # type: ignore[misc]  # greenlet ships no type for subclassing
    """A greenlet running one connection's handler; its parent is the connection's task."""

    def __init__(
        self,
        run: Callable[[], None],
        driver: greenlet,
        channel: object,
        limiter: anyio.CapacityLimiter | None,
        runner: GreenletRun,
    ) -> None:
        super().__init__(run, driver)
        #: The greenlet the connection's task runs in: `await_` switches to it.
        self.driver = driver
        #: The connection this handler owns (its `Channel`): only it reads from there.
        self.channel = channel
        #: The threads `cello.blocking` may use (`None`: anyio's default limiter).
        self.limiter = limiter
        #: What drives it: how a parked handler is resumed.
        self.runner = runner
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


class GreenletRun:
    """One handler greenlet and what drives it: its connection's task, which awaits what
    the handler hands over, and whoever resumes it after it parked.

    Each stretch the handler runs without waiting is timed against the stall threshold
    (`watch`). An exception the handler raises propagates from `run`; one raised while
    the task awaits for the handler (cancellation included) is thrown into the handler,
    so its `finally` blocks run where it waits.

    On the loop's thread only, and `resume` only from the loop's own greenlet (a task or a
    callback), never from inside a handler: the handler switches back to that greenlet.
    """

    __slots__ = (
        "_ended",
        "_error",
        "_made",
        "_request",
        "_route",
        "_stretches",
        "_watch",
        "greenlet",
    )

    # Set by `run`, on the connection's task (whose context variables the handler sees):
    # a run may be made before its loop runs.
    #: Resolved with the next awaitable the handler hands over, or when it has ended.
    _request: asyncio.Future[Any]
    greenlet: HandlerGreenlet
    #: The watch's record of the loop's thread (`None`: not watched).
    _stretches: LoopStretches | None

    def __init__(
        self,
        handler: Callable[[], None],
        channel: object,
        *,
        route: str,
        watch: StallWatch | None = None,
        limiter: anyio.CapacityLimiter | None = None,
    ) -> None:
        self._made = (handler, channel, limiter)
        self._route = route
        self._watch = watch
        self._ended = False
        self._error: BaseException | None = None

    def resume(self, method: Callable[..., Any], *args: Any) -> None:
        """Run the handler (`greenlet.switch`, or `greenlet.throw` with an exception) until
        it next waits, and see to what it waits for: a parked handler is resumed by its
        connection (`Channel._wake_parked`), an awaitable is handed to the task."""
        stretches = self._stretches
        try:
            if stretches is None:
                request = method(*args)
            else:
                stretch = stretches.enter(self.greenlet, self._route)
                try:
                    request = method(*args)
                finally:
                    stretches.leave(stretch)
        except BaseException as exc:  # noqa: BLE001 - the handler's end: `run` raises it
            self._end(exc)
            return
        if self.greenlet.dead:
            self._end(None)
        elif request is not PARK:
            self._request.set_result(request)

    def _end(self, error: BaseException | None) -> None:
        self._ended, self._error = True, error
        if not self._request.done():
            self._request.set_result(None)

    async def run(self) -> None:
        """Start the handler and serve its requests until it ends (on its connection's task)."""
        loop = asyncio.get_running_loop()
        self._request = loop.create_future()
        self._stretches = None if self._watch is None else self._watch.on_this_thread()
        handler, channel, limiter = self._made
        greenlet = self.greenlet = HandlerGreenlet(handler, getcurrent(), channel, limiter, self)
        self.resume(greenlet.switch)
        while True:
            request = self._request
            try:
                awaitable = await request
            except asyncio.CancelledError as exc:
                if self._ended:
                    raise
                # Cancelled while the handler parked (the cancel took `request` with it)
                # or before this task took its request: unwind the handler where it waits.
                if request.done() and not request.cancelled():
                    awaitable = request.result()
                    if inspect.iscoroutine(awaitable):
                        awaitable.close()  # never awaited: no warning
                self._request = loop.create_future()
                self.resume(greenlet.throw, exc)
                continue
            if self._ended:
                break
            self._request = loop.create_future()
            try:
                result = await awaitable
            except BaseException as exc:  # noqa: BLE001 - thrown into the handler, where it waits
                self.resume(greenlet.throw, exc)
            else:
                self.resume(greenlet.switch, result)
        if self._error is not None:
            raise self._error


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
