"""`Inbox`: the messages a client sent that a sync handler's `recv()` has not taken yet.

The connection's receive pump (a task on the event loop) puts each message here and the
handler's thread takes them. The inbox is bounded by count *and* bytes, so a client that
sends faster than its handler reads costs at most `max_bytes` plus one message (a message
may be as large as the server's `ws_max_size`): when `put` says the inbox is full the pump
stops reading, so the server stops reading the socket and TCP pushes back on the client.
`get` calls `resume` once the handler has taken it down to half, and the pump reads again.

Thread safety, and cost: the messages travel in a `queue.SimpleQueue` (C, internally
locked, so correct with or without the GIL), which is what a waiting handler thread blocks
on: a message costs one put and one get, as a plain queue would, with no Python-level
condition variable on the path. The bounds are counted under `_lock`, held for a few
operations at a time. Two threads reading one connection at the same time is refused with
`ConcurrencyError` (`_reading`, set under `_lock`): which of them would get which
message is arbitrary, so it is a bug in the app, better reported than hidden.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import Any, Final

from starlette.types import Message

from .errors import ConcurrencyError
from .messages import WebSocketMessage

#: Messages a connection may have waiting for its handler before the pump pauses.
MAX_MESSAGES: Final = 64
#: Bytes (characters for text) of waiting messages before the pump pauses.
MAX_BYTES: Final = 1024 * 1024
#: Waiting messages a handler on the loop (async, greenlet) takes in a row before the
#: loop runs once: a backlog must not hold every other connection of the loop meanwhile.
BURST: Final = 16


_END: Final = object()  # in the queue after the last message: nothing more will come


class Inbox:
    """Client messages waiting for a sync handler; then the close message (once), then `None`.

    Args:
        resume: Called (from the thread that took a message) when the pump, paused by a
            full inbox, may read again. Called once per pause.
        max_messages: How many messages may wait before `put` asks the pump to pause.
        max_bytes: How many bytes may wait before `put` asks the pump to pause.
    """

    __slots__ = (
        "_bytes",
        "_count",
        "_discarded",
        "_ended",
        "_lock",
        "_paused",
        "_queue",
        "_reading",
        "_resume",
        "max_bytes",
        "max_messages",
    )

    def __init__(
        self,
        resume: Callable[[], None],
        *,
        max_messages: int = MAX_MESSAGES,
        max_bytes: int = MAX_BYTES,
    ) -> None:
        self._resume = resume
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        #: (message, size) pairs, then `_END`; put by the pump (and `end`), taken by `get`.
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()  # guards the fields below
        self._reading = False  # set by the thread inside `get`
        self._count = 0  # messages put and not yet taken
        self._bytes = 0  # their sizes, added up
        self._paused = False  # set by put when full; cleared by get (which then resumes)
        self._ended = False  # set by end: nothing more will be put
        self._discarded = False  # set by end(discard=True): get returns None from now on

    @property
    def paused(self) -> bool:
        """Whether the pump must wait for `resume` before reading the next message."""
        with self._lock:
            return self._paused

    def __len__(self) -> int:
        with self._lock:
            return 0 if self._discarded else self._count

    def put(self, message: WebSocketMessage, size: int) -> bool:
        """Add a received message (the pump, on the loop); whether the pump must now pause.

        After `end`, messages are dropped: the app has closed the connection.
        """
        with self._lock:
            if self._ended:
                return False
            self._count += 1
            self._bytes += size
            if self._count >= self.max_messages or self._bytes >= self.max_bytes:
                self._paused = True
            paused = self._paused
        self._queue.put((message, size))
        return paused

    def end(self, final: WebSocketMessage | None = None, *, discard: bool = False) -> None:
        """Nothing more will arrive: `get` returns what waits, then `final` if any, then `None`.

        With `discard` (the app closed the connection) what waits is dropped, and a paused
        pump is resumed so it can see the client's disconnect. Ending twice does nothing.
        """
        with self._lock:
            if self._ended:
                return
            self._ended = True
            self._discarded = discard
            resume = self._paused and discard
            if resume:
                self._paused = False
        if final is not None and not discard:
            self._queue.put((final, 0))
        self._queue.put(_END)  # wakes a waiting `get`
        if resume:
            self._resume()

    def get(self, timeout: float | None = None) -> WebSocketMessage | None:
        """The next message, blocking; `None` once ended and empty.

        Raises:
            TimeoutError: nothing arrived within `timeout` seconds.
            ConcurrencyError: another thread is already waiting in `get`.
        """
        with self._lock:
            if self._reading:
                raise ConcurrencyError(
                    "two threads are reading this WebSocket at once: recv() must be called "
                    "from one thread at a time (usually the connection's handler)"
                )
            self._reading = True
        try:
            if self._discarded:
                return None
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                raise TimeoutError(f"no WebSocket message within {timeout} s") from None
            if item is _END:
                self._queue.put(_END)  # every later call sees it too
                return None
            if self._discarded:
                return None
            message: WebSocketMessage = item[0]
            size: int = item[1]
            with self._lock:
                self._count -= 1
                self._bytes -= size
                resume = (
                    self._paused
                    and self._count <= self.max_messages // 2
                    and self._bytes <= self.max_bytes // 2
                )
                if resume:
                    self._paused = False
        finally:
            # Without the lock: only this thread writes it while it is set, and another
            # reader only reads it (a plain attribute store, atomic with or without the GIL).
            self._reading = False
        if resume:
            self._resume()
        return message


class Arrivals:
    """The client's events waiting for an async or greenlet handler's `receive`, when the
    server hands them over as they are parsed (a `cello._server_link.ServerLink`).

    Loop-side only: `put` runs in the server's protocol callbacks and `receive` in the
    handler's task, both on the event loop's thread, so nothing here needs a lock. Bounded
    as the `Inbox` is: past `max_messages` or `max_bytes` waiting, `pause` stops the
    server reading the socket, and `resume` reads again once the handler has taken them
    down to half.

    Args:
        loop: The loop both sides run on.
        pause: Stop reading the socket.
        resume: Read the socket again.
    """

    __slots__ = (
        "_burst",
        "_bytes",
        "_events",
        "_loop",
        "_pause",
        "_paused",
        "_resume",
        "_waiters",
        "max_bytes",
        "max_messages",
        "wake",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        pause: Callable[[], None],
        resume: Callable[[], None],
        *,
        max_messages: int = MAX_MESSAGES,
        max_bytes: int = MAX_BYTES,
    ) -> None:
        self._loop = loop
        self._pause = pause
        self._resume = resume
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        #: A list, not a deque: an idle connection's empty deque would cost 600 bytes,
        #: and at most `max_messages` wait here.
        self._events: list[Message] = []
        self._bytes = 0  # sizes of the waiting messages, added up
        self._burst = 0  # events taken in a row without waiting (see `BURST`)
        self._paused = False
        #: Futures of waiting `receive` calls, first come first served (the handler's
        #: own, and the writer's when it reads why a send failed).
        self._waiters: list[asyncio.Future[None]] = []  # rarely more than one
        #: Called (once, then cleared) when the next event arrives: how a greenlet
        #: handler parked on this connection is resumed without a task step.
        self.wake: Callable[[], None] | None = None

    def put(self, event: Message) -> None:
        """An event from the server: keep it, and wake a waiting `receive`."""
        events = self._events
        events.append(event)
        if event["type"] == "websocket.receive":
            self._bytes += len(event.get("text") or event.get("bytes") or "")
            if not self._paused and (
                len(events) >= self.max_messages or self._bytes >= self.max_bytes
            ):
                self._paused = True
                self._pause()
        if self._waiters:
            self._wake_next()
        wake = self.wake
        if wake is not None:
            self.wake = None
            # Later, not here: the server is still handling this event (and for a
            # disconnect, the socket's loss or the client's close frame).
            self._loop.call_soon(wake)

    def take_nowait(self) -> Message | None:
        """The next event if one is waiting, else `None`; also `None` once every `BURST`
        events taken in a row, so that the caller lets the loop run (events still wait:
        see `waiting`)."""
        if not self._events or self._burst >= BURST:
            self._burst = 0
            return None
        self._burst += 1
        return self._take()

    def waiting(self) -> bool:
        """Whether an event waits (`take_nowait` may have held it back for a turn)."""
        return bool(self._events)

    def __len__(self) -> int:
        """Events waiting (for the connection's `queued`)."""
        return len(self._events)

    async def receive(self) -> Message:
        """The next event, waiting for it: the connection's ASGI `receive`, served here."""
        events = self._events
        if events and self._burst >= BURST:
            await asyncio.sleep(0)  # let the loop run once: see `BURST`
            self._burst = 0
        while not events:
            self._burst = 0
            waiter = self._loop.create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled() and events:
                    self._wake_next()  # woken, then cancelled: the event is the next one's
                raise
            finally:
                if not waiter.done():
                    self._waiters.remove(waiter)
        self._burst += 1
        return self._take()

    def _wake_next(self) -> None:
        waiters = self._waiters
        while waiters:
            waiter = waiters.pop(0)
            if not waiter.done():
                waiter.set_result(None)
                return

    def _take(self) -> Message:
        events = self._events
        event = events.pop(0)
        if event["type"] == "websocket.receive":
            self._bytes -= len(event.get("text") or event.get("bytes") or "")
            if (
                self._paused
                and len(events) <= self.max_messages // 2
                and self._bytes <= self.max_bytes // 2
            ):
                self._paused = False
                self._resume()
        return event
