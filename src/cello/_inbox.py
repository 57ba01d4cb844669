"""`Inbox`: the messages a client sent that a sync handler's `recv()` has not taken yet.

The connection's receive pump (a task on the event loop) puts each message here and the
handler's thread takes them. The inbox is bounded by count *and* bytes, so a client that
sends faster than its handler reads costs at most `max_bytes` plus one message (a message
may be as large as the server's `ws_max_size`): when `put` says the inbox is full the pump
stops reading, so the server stops reading the socket and TCP pushes back on the client.
`get` calls `resume` once the handler has taken it down to half, and the pump reads again.

Thread safety: every field is read and written under `_lock` (the condition's lock), so
the pump's thread and any handler thread may call in at once; nothing here relies on the
GIL. Two threads reading one connection at the same time is refused with
`ConcurrencyError`: which of them would get which message is arbitrary, so it is a bug in
the app, better reported than hidden.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Final

from .errors import ConcurrencyError
from .messages import WebSocketMessage

#: Messages a connection may have waiting for its handler before the pump pauses.
MAX_MESSAGES: Final = 64
#: Bytes (characters for text) of waiting messages before the pump pauses.
MAX_BYTES: Final = 1024 * 1024


class Inbox:
    """Client messages waiting for a sync handler; then the close message (once), then `None`.

    Args:
        resume: Called (from the thread that took a message) when the pump, paused by a
            full inbox, may read again. Called once per pause.
        max_messages: How many messages may wait before `put` asks the pump to pause.
        max_bytes: How many bytes may wait before `put` asks the pump to pause.
    """

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
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)  # notified by put and end
        self._messages: deque[tuple[WebSocketMessage, int]] = deque()  # (message, size)
        self._bytes = 0  # the sizes of `_messages`, added up
        self._paused = False  # set by put when full; cleared by get (which then resumes)
        self._ended = False  # set by end: nothing more will be put
        self._reading = False  # a thread is inside get

    @property
    def paused(self) -> bool:
        """Whether the pump must wait for `resume` before reading the next message."""
        with self._lock:
            return self._paused

    def __len__(self) -> int:
        with self._lock:
            return len(self._messages)

    def put(self, message: WebSocketMessage, size: int) -> bool:
        """Add a received message (the pump, on the loop); whether the pump must now pause.

        After `end`, messages are dropped: the app has closed the connection.
        """
        with self._lock:
            if self._ended:
                return False
            self._messages.append((message, size))
            self._bytes += size
            self._arrived.notify()
            if len(self._messages) >= self.max_messages or self._bytes >= self.max_bytes:
                self._paused = True
            return self._paused

    def end(self, final: WebSocketMessage | None = None, *, discard: bool = False) -> None:
        """Nothing more will arrive: `get` returns what waits, then `final` if any, then `None`.

        With `discard` (the app closed the connection) what waits is dropped, and a paused
        pump is resumed so it can see the client's disconnect. Ending twice does nothing.
        """
        with self._lock:
            if self._ended:
                return
            self._ended = True
            if discard:
                self._messages.clear()
                self._bytes = 0
            if final is not None:
                self._messages.append((final, 0))
            resume = self._paused and discard
            if resume:
                self._paused = False
            self._arrived.notify_all()
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
                if not self._messages and not self._ended:
                    self._wait(timeout)
                if not self._messages:
                    return None
                message, size = self._messages.popleft()
                self._bytes -= size
                resume = (
                    self._paused
                    and len(self._messages) <= self.max_messages // 2
                    and self._bytes <= self.max_bytes // 2
                )
                if resume:
                    self._paused = False
            finally:
                self._reading = False
        if resume:
            self._resume()
        return message

    def _wait(self, timeout: float | None) -> None:
        """Wait (lock held) until a message arrives or the inbox ends; TimeoutError past
        `timeout`."""
        if timeout is None:
            while not self._messages and not self._ended:
                self._arrived.wait()
            return
        deadline = time.monotonic() + timeout
        while not self._messages and not self._ended:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no WebSocket message within {timeout} s")
            self._arrived.wait(remaining)
