"""The bridge between a connection's ASGI task on the event loop and handler threads.

Every message a handler sends and receives crosses here, and this is the only module that
coordinates the event loop with other threads for a connection. The whole path of a message
is in this file:

* outgoing: `Channel.send` (any thread) appends the ASGI event to the connection's
  outbox and, only if the writer task is idle, wakes it with one `call_soon_threadsafe`;
  `Channel._write` (a task on the loop) drains the outbox into the ASGI `send`. A
  coroutine on the loop (`Channel.asend`) sends directly while nothing is queued.
* incoming: `Channel._run_pump` (a task on the loop) awaits the ASGI `receive` and puts each
  message on a `queue.SimpleQueue`; `Channel.recv` (the handler thread) takes it from there.
* fan-out (the hub): `Channel.enqueue` appends one shared event to many outboxes from the
  calling thread without waiting, and `wake_writers` wakes the idle writers among them with
  one hop to the loop; `Mailbox` hands items from threads to one task on the loop (the
  Redis relay's publisher) with the same one-wake-up-per-idle-period discipline.

Why this shape: a round trip to the loop per call (`run_coroutine_threadsafe(...).result()`)
costs two thread switches and a future per message; here a send costs an append, and a
wake-up only when the writer has gone idle. Both queues are bounded so a slow client or a
slow handler applies back-pressure instead of growing memory: senders block (from a worker
thread) when the outbox is full, and the pump stops reading (so the server stops reading
the socket) when the inbox is full.

Flags shared by the two sides are each written by one side and read by the other, in the
order "write mine, then read theirs", so that at least one side sees the other under the
GIL; a spurious wake-up is harmless, a missed one is not.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import queue
import threading
from collections import deque
from typing import Any, Final, Generic, TypeVar

from starlette.types import Message, Receive, Send

from .errors import ConnectionClosed
from .messages import WebSocketMessage

#: Outgoing messages queued per connection before senders wait.
OUTBOX_LIMIT: Final = 64
#: Incoming messages queued per connection before the pump stops reading the socket.
INBOX_LIMIT: Final = 64

#: Seconds without a single event going out after which a closing connection stops
#: waiting for a client that no longer reads (see `Channel.flush`).
FLUSH_STALL_TIMEOUT: Final = 10.0

#: The close code of a connection lost without a close frame.
ABNORMAL_CLOSURE: Final = 1006

_CLOSED = None  # the inbox sentinel: no more messages will come
#: ASGI events after which nothing more can be sent on the connection.
_FINAL_EVENTS: Final = frozenset({"websocket.close", "websocket.http.response.body"})

logger = logging.getLogger("cello")

T = TypeVar("T")


def was_lost(event: Message) -> bool:
    """Whether a `websocket.disconnect` means the connection was lost, not closed by a frame.

    1006 says so. uvicorn's sansio and wsproto backends report a lost connection as 1005
    with no `reason` key, while a received close frame (even one without a status, 1005)
    always carries a `reason`; that absence is what tells the two apart.
    """
    code = event.get("code", 1005)
    return code == ABNORMAL_CLOSURE or (code == 1005 and "reason" not in event)


def to_message(event: Message) -> WebSocketMessage:
    """An ASGI `websocket.receive` event as a `WebSocketMessage`."""
    text = event.get("text")
    if text is not None:
        return WebSocketMessage("text", text=text)
    return WebSocketMessage("binary", data=event.get("bytes") or b"")


class Enqueued(enum.Enum):
    """What `Channel.enqueue` did with an event."""

    WAKE = "queued; the writer is idle and must be woken"
    QUEUED = "queued; the writer is busy and will send it"
    TOO_SLOW = "not queued: the connection was too far behind and is now closed (1008)"
    CLOSED = "not queued: the connection is closed"


class Channel:
    """One WebSocket connection's queues, writer and receive pump.

    Created on the event loop by the connection's ASGI task. `send`, `close` and `recv`
    may be called from any thread (`recv` blocks, so not from the loop's own thread);
    the `a`-prefixed methods are the event loop's versions.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, receive: Receive, send: Send) -> None:
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self._receive = receive
        self._asgi_send = send
        #: Close code and reason once closed by either side; `None` while open.
        self.close_code: int | None = None
        self.close_reason = ""
        self._app_closed = False
        self._backlog_dropped = False  # queued messages were dropped (a too-slow member)

        # Outgoing side.
        self._outbox: deque[Message] = deque()
        self._writer_idle = True  # written by the writer task; cleared by senders
        self._writer_wakeup: asyncio.Future[None] | None = None
        self._space = threading.Condition(threading.Lock())
        self._space_waiters = 0
        self._space_on_loop: asyncio.Event | None = None
        self._writer: asyncio.Task[None] | None = None  # started on the first queued event
        self._sending_directly = False

        # Incoming side (used by sync handlers only; async handlers receive directly).
        self._inbox: queue.SimpleQueue[WebSocketMessage | None] = queue.SimpleQueue()
        self._received = 0  # written by the pump only
        self._taken = 0  # written by consumers only
        self._pump_waiting = False
        self._pump_resume = asyncio.Event()
        self._pump: asyncio.Task[None] | None = None

    # ----------------------------------------------------------------- outgoing

    def send(self, event: Message) -> None:
        """Queue an ASGI event for the client, from any thread; wait while the outbox is full.

        A worker thread blocks until the writer has drained the outbox to half. On the
        event loop's thread blocking would stop the writer itself, so there a client that
        is this far behind is disconnected with 1008 instead (`send` raises).

        Raises:
            ConnectionClosed: the connection is closed, or closes while waiting.
        """
        if self.close_code is not None:
            raise ConnectionClosed(self.close_code, self.close_reason)
        outbox = self._outbox
        outbox.append(event)
        if self._writer_idle:
            self._start_writer()
        if len(outbox) > OUTBOX_LIMIT:
            self._wait_for_space()

    def _start_writer(self) -> None:
        """Wake the idle writer, from whichever thread queued something."""
        self._writer_idle = False
        if threading.get_ident() == self._loop_thread:
            self._wake_writer()
        else:
            self._call_soon_threadsafe(self._wake_writer)

    async def asend(self, event: Message) -> None:
        """`send` for coroutines on the event loop: waits for space without blocking it."""
        if self.close_code is not None:
            raise ConnectionClosed(self.close_code, self.close_reason)
        if self._writer_idle and not self._outbox:
            await self._send_directly(event)
            return
        self._outbox.append(event)
        if self._writer_idle:
            self._start_writer()
        while len(self._outbox) > OUTBOX_LIMIT and self.close_code is None:
            if self._space_on_loop is None:
                self._space_on_loop = asyncio.Event()
            self._space_on_loop.clear()
            await self._space_on_loop.wait()

    async def _send_directly(self, event: Message) -> None:
        """Send from a coroutine on the loop while nothing is queued: no hop via the writer.

        The writer is marked busy meanwhile, so threads only queue (in order, after this
        event); it is woken afterwards if they did.
        """
        self._writer_idle = False
        self._sending_directly = True
        try:
            await self._asgi_send(event)
        except (OSError, RuntimeError):  # gone, or closed by the server (see `_write`)
            self._lost()
            raise ConnectionClosed(ABNORMAL_CLOSURE) from None
        finally:
            self._sending_directly = False
            self._writer_idle = True
            if self._outbox:
                self._start_writer()

    def enqueue(self, event: Message, limit: int) -> Enqueued:
        """Queue `event` from any thread without waiting, for fan-out to many connections.

        The caller wakes the writers it was told to, all at once (`wake_writers`), so a
        broadcast costs one hop to the loop however many members it reaches. A connection
        already `limit` events behind is not waited for: its backlog is dropped and it is
        closed with 1008, so one slow member never holds up the others.
        """
        if self.close_code is not None:
            return Enqueued.CLOSED
        outbox = self._outbox
        if len(outbox) >= limit:
            self._backlog_dropped = True
            outbox.clear()
            self.close(1008, "client too slow")
            return Enqueued.TOO_SLOW
        outbox.append(event)
        if self._writer_idle:
            self._writer_idle = False
            return Enqueued.WAKE
        return Enqueued.QUEUED

    def check_open(self) -> None:
        """Raise `ConnectionClosed` if the connection is closed."""
        if self.close_code is not None:
            raise ConnectionClosed(self.close_code, self.close_reason)

    def _wait_for_space(self) -> None:
        if threading.get_ident() == self._loop_thread:
            self.close(1008, "client too slow")
            raise ConnectionClosed(1008, "client too slow")
        with self._space:
            self._space_waiters += 1
            try:
                while len(self._outbox) > OUTBOX_LIMIT and self.close_code is None:
                    self._space.wait()
            finally:
                self._space_waiters -= 1
        if self.close_code is not None and (not self._app_closed or self._backlog_dropped):
            # Closed by the client, or by the app with this message dropped with the rest
            # of the backlog. (Closed by the app otherwise: the message still goes out,
            # ahead of the close frame, so the send has succeeded.)
            raise ConnectionClosed(self.close_code, self.close_reason)

    def _wake_writer(self) -> None:
        if self._sending_directly:
            return  # `_send_directly` wakes the writer when it is done
        if self._writer is None:
            self._writer = self._loop.create_task(self._write())
            return
        wakeup = self._writer_wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)

    async def _write(self) -> None:
        """Drain the outbox into the ASGI `send` until an event that ends the connection."""
        outbox = self._outbox
        asgi_send = self._asgi_send
        low_water = OUTBOX_LIMIT // 2
        while True:
            while outbox:
                event = outbox.popleft()
                try:
                    await asgi_send(event)
                except (OSError, RuntimeError):
                    # uvicorn's ClientDisconnected: the client is gone; RuntimeError: the
                    # server has already closed the WebSocket itself (a protocol error from
                    # the client, its keepalive timing out) before cello heard of it.
                    self._lost()
                    return
                except Exception:
                    logger.exception("Sending %s failed", event["type"])
                    self._lost()
                    return
                if self._space_waiters and len(outbox) <= low_water:
                    self._notify_space()
                if event["type"] in _FINAL_EVENTS and not event.get("more_body"):
                    self._notify_space()
                    return
            if self.close_code is not None and not outbox:
                return
            self._writer_idle = True
            if outbox:
                self._writer_idle = False
                continue
            self._writer_wakeup = self._loop.create_future()
            await self._writer_wakeup
            self._writer_wakeup = None

    def _notify_space(self) -> None:
        if self._space_on_loop is not None:
            self._space_on_loop.set()
        with self._space:
            self._space.notify_all()

    async def flush(self) -> None:
        """Wait until the writer has sent everything queued up to the close.

        A client that has stopped reading would hold the connection's task (and this
        wait) for as long as it keeps the socket open: once no event has gone out for
        `FLUSH_STALL_TIMEOUT` seconds the rest is dropped and the connection ends here
        (the server then closes the socket once it can).
        """
        if self._writer is None and not self._outbox:
            return  # nothing was ever queued
        self._wake_writer()
        writer = self._writer
        assert writer is not None
        while not writer.done():
            # Closed, so nothing is added any more: progress is the outbox shrinking.
            left = len(self._outbox)
            await asyncio.wait((writer,), timeout=FLUSH_STALL_TIMEOUT)
            if not writer.done() and len(self._outbox) == left:
                logger.info(
                    "Dropping what a client that stopped reading had not received "
                    "(nothing sent for %.0f s)",
                    FLUSH_STALL_TIMEOUT,
                )
                writer.cancel()
                await asyncio.gather(writer, return_exceptions=True)
                self._lost()
                return

    # ----------------------------------------------------------------- incoming

    def start_pump(self) -> None:
        """Start reading client messages into the inbox (for sync handlers)."""
        self._pump = self._loop.create_task(self._run_pump())

    async def _run_pump(self) -> None:
        receive = self._receive
        inbox = self._inbox
        while True:
            event = await receive()
            kind = event["type"]
            if kind == "websocket.receive":
                inbox.put(to_message(event))
                self._received += 1
                if self._received - self._taken >= INBOX_LIMIT:
                    await self._wait_for_consumer()
            elif kind == "websocket.disconnect":
                self._closed_by_peer(event, was_lost(event))
                return

    async def _wait_for_consumer(self) -> None:
        self._pump_waiting = True
        while self._received - self._taken >= INBOX_LIMIT // 2:
            self._pump_resume.clear()
            if self._received - self._taken < INBOX_LIMIT // 2:
                break
            await self._pump_resume.wait()
        self._pump_waiting = False

    def recv(self, timeout: float | None = None) -> WebSocketMessage | None:
        """The next client message; a close message once, then `None`. Blocks (not on the loop).

        Raises:
            TimeoutError: no message arrived within `timeout` seconds.
        """
        if self._app_closed:
            return None
        if threading.get_ident() == self._loop_thread:
            raise RuntimeError(
                "recv() blocks, so it cannot run on the event loop: "
                "use an async handler and `await ws.recv()`"
            )
        try:
            message = self._inbox.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no WebSocket message within {timeout} s") from None
        if message is _CLOSED:
            self._inbox.put(_CLOSED)  # every later call, in any thread, sees it too
            return None
        if message.msg_type != "close":
            self._taken += 1
            if self._pump_waiting and self._received - self._taken < INBOX_LIMIT // 2:
                self._call_soon_threadsafe(self._pump_resume.set)
        return message

    async def arecv(self, timeout: float | None = None) -> WebSocketMessage | None:
        """`recv` for async handlers: reads the ASGI `receive` directly, no pump."""
        if self.close_code is not None:
            return None
        if timeout is None:
            event = await self._receive()
        else:
            try:
                async with asyncio.timeout(timeout):
                    event = await self._receive()
            except TimeoutError:
                raise TimeoutError(f"no WebSocket message within {timeout} s") from None
        if event["type"] == "websocket.receive":
            return to_message(event)
        if event["type"] == "websocket.disconnect":
            return self._closed_by_peer(event, was_lost(event))
        return None

    # ----------------------------------------------------------------- closing

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Close from the app's side, from any thread: queue the close frame after what is
        already queued; later sends raise `ConnectionClosed`, `recv` returns `None`."""
        if self.close_code is not None:
            return
        self._outbox.append({"type": "websocket.close", "code": code, "reason": reason})
        self._app_closed = True
        self.close_code = code
        self.close_reason = reason
        self._inbox.put(_CLOSED)
        if threading.get_ident() == self._loop_thread:
            self._after_close()
        else:
            self._call_soon_threadsafe(self._after_close)

    def _after_close(self) -> None:
        self._wake_writer()
        self._notify_space()

    def deny(self, events: list[Message]) -> None:
        """Refuse the connection before acceptance with the given ASGI events."""
        # All at once: a server may answer as soon as the response start arrives.
        self._outbox.extend(events)
        self._app_closed = True
        self.close_code = 1008
        self._inbox.put(_CLOSED)
        self._start_writer()

    def _closed_by_peer(self, event: Message, lost: bool) -> WebSocketMessage | None:
        """The client closed (or vanished): wake every waiter; what `recv` should return."""
        if self.close_code is not None:
            return None
        code: int = ABNORMAL_CLOSURE if lost else event.get("code", 1005)
        reason: str = event.get("reason") or ""
        self.close_code = code
        self.close_reason = reason
        self._outbox.clear()  # nothing more can reach this client
        self._wake_writer()
        self._notify_space()
        message = None if lost else WebSocketMessage.close(code, reason)
        if message is not None:
            self._inbox.put(message)
        self._inbox.put(_CLOSED)
        return message

    def abort(self) -> None:
        """The connection's task is going away: fail every waiter and later call at once."""
        self._lost()

    def _lost(self) -> None:
        """The ASGI send failed: the client is gone whatever the app had decided."""
        if self.close_code is None:
            self._closed_by_peer({"code": ABNORMAL_CLOSURE}, lost=True)
        else:
            self._outbox.clear()
            self._notify_space()

    async def finish(self) -> None:
        """End the connection's tasks: flush what the app queued, then stop the pump."""
        if self.close_code is None:
            self.close(1000)
        await self.flush()
        pump = self._pump
        if pump is not None:
            self._pump = None
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)

    def _call_soon_threadsafe(self, callback: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(callback)
        except RuntimeError:
            # The loop has closed (process exit): the connection is gone with it.
            self._lost()


def wake_writers(channels: list[Channel]) -> None:
    """Wake the writers `Channel.enqueue` asked for (all served on one loop), with one hop
    to the loop for all of them."""
    if not channels:
        return
    first = channels[0]
    if threading.get_ident() == first._loop_thread:
        _wake_all(channels)
        return
    try:
        first._loop.call_soon_threadsafe(_wake_all, channels)
    except RuntimeError:  # the loop has closed (process exit): the connections are gone
        for channel in channels:
            channel.abort()


def _wake_all(channels: list[Channel]) -> None:
    for channel in channels:
        channel._wake_writer()


class Mailbox(Generic[T]):
    """Items handed from any thread to one consumer task on the loop.

    The same wake-up discipline as a channel's outbox: `put` appends, and wakes the
    consumer with one `call_soon_threadsafe` only if it has gone idle, so a burst of puts
    costs one hop. Unbounded between drains; the consumer bounds what it keeps.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self._items: deque[T] = deque()
        self._idle = False  # written by the consumer; cleared by producers
        self._wakeup: asyncio.Future[None] | None = None

    def put(self, item: T) -> None:
        """Hand `item` to the consumer, from any thread."""
        self._items.append(item)
        if self._idle:
            self._idle = False
            if threading.get_ident() == self._loop_thread:
                self._wake()
            else:
                self._loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        wakeup = self._wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)

    async def take_all(self) -> list[T]:
        """Wait until something was put, then take everything put so far (on the loop)."""
        items = self._items
        while not items:
            self._idle = True
            if items:  # put after our check but before it saw the flag
                break
            self._wakeup = self._loop.create_future()
            try:
                await self._wakeup
            finally:
                self._wakeup = None
        self._idle = False
        return self.take_nowait()

    def take_nowait(self) -> list[T]:
        """Take everything put so far, without waiting (on the loop)."""
        items = self._items
        taken = list(items)
        for _ in range(len(taken)):
            items.popleft()
        return taken
