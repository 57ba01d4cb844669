"""A hub member that is not a WebSocket: the queue behind `Hub.stream` (Server-Sent Events).

The hub queues events for its members from any thread (`enqueue`) and wakes the idle ones
with one hop to the loop (`wake_writers`); a `StreamMember` takes part in that as a
connection's `Channel` does, but its reader is an async generator on the loop instead of a
writer task. Bounded like a connection's outbox: a stream `limit` events behind is ended
(the hub logs it as too slow), and its reader sees the end.

Thread safety: `_lock` guards the queue and the flags; the reader's wake-up
(`asyncio.Event`) is only touched on the loop (`_wake_writer` runs there).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from starlette.types import Message

from ._bridge import OUTBOX_LIMIT, Queued
from .errors import ConnectionClosed


class StreamMember:
    """The hub's queue for one stream, read by its generator on the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self._lock = threading.Lock()
        self._events: deque[Message] = deque()
        self._idle = True  # the reader waits (or is about to): the next event wakes it
        self._ready = asyncio.Event()
        self.closed = False
        self.too_slow = False

    def check_open(self) -> None:
        """Raise `ConnectionClosed` once the stream has ended."""
        if self.closed:
            raise ConnectionClosed(1008 if self.too_slow else 1000)

    def enqueue(self, event: Message, limit: int) -> Queued:
        """Queue `event` from any thread (see `Channel.enqueue`)."""
        with self._lock:
            if self.closed:
                return Queued.CLOSED
            events = self._events
            if len(events) >= limit:
                self.closed = self.too_slow = True
                events.clear()
                wake = True
            else:
                events.append(event)
                wake = self._idle
                self._idle = False
                if not wake:
                    return Queued.BEHIND if len(events) > OUTBOX_LIMIT else Queued.QUEUED
        if self.too_slow:
            self._on_loop(self._wake_writer)  # the hub wakes only those it queued for
            return Queued.TOO_SLOW
        return Queued.WAKE

    def _wake_writer(self) -> None:
        """On the loop: wake the reader."""
        self._ready.set()

    def _on_loop(self, callback: Callable[..., Any], *args: Any) -> None:
        if threading.get_ident() == self._loop_thread:
            callback(*args)
            return
        with contextlib.suppress(RuntimeError):  # a closed loop: its reader is gone too
            self._loop.call_soon_threadsafe(callback, *args)

    async def take(self) -> list[Message]:
        """Wait for events, and take all that are queued; `[]` once the stream has ended."""
        while True:
            with self._lock:
                if self.closed:
                    return []
                if self._events:
                    events = list(self._events)
                    self._events.clear()
                    return events
                self._idle = True
                # Cleared under the lock, before an `enqueue` can see `_idle` and wake it.
                self._ready.clear()
            await self._ready.wait()

    def close(self) -> None:
        """End the stream (its reader is leaving)."""
        with self._lock:
            self.closed = True
            self._events.clear()
