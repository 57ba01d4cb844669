"""One WebSocket connection between its ASGI task on the event loop and the app's threads.

Every message a handler sends and receives crosses here, and this is the only module that
coordinates the event loop with other threads for a connection. The whole path of a
message is in this file (the incoming side's buffer is `_inbox.Inbox`):

* outgoing: `Channel.send` (any thread) puts the ASGI event in the connection's outbox
  through `Channel._queue` and, only if the writer task is idle, wakes it with one
  `call_soon_threadsafe`; `Channel._write` (a task on the loop) drains the outbox into the
  ASGI `send`. A coroutine on the loop (`Channel.asend`) sends directly while nothing is
  queued.
* incoming: `Channel._run_pump` (a task on the loop, for sync handlers) awaits the ASGI
  `receive` and puts each message in the `Inbox`; `Channel.recv` (the handler's thread)
  takes it from there. Async handlers await the ASGI `receive` directly (`Channel.arecv`).
* fan-out (the hub): `Channel.enqueue` puts one shared event in many outboxes from the
  calling thread without waiting, and `wake_writers` wakes the idle writers among them with
  one hop to the loop.
* with a server link (`cello._server_link`, cello's own uvicorn backend): the server
  hands the client's events to the connection as it parses them (`_take_into_inbox` for a
  sync handler, an `Arrivals` buffer for the others, where a greenlet handler's `recv`
  parks until one arrives), and a woken writer writes through the link while the server
  can send at once (`_write_now`, `_write_at_once`), falling back to the writer task.

The connection's state is one `State`, changed only by `Channel._enter` under the
connection's lock, in the same critical section that queues what the change sends (the
accept, the close frame, the denial). So a send either joins the outbox before the close
frame, and goes out, or sees the connection closed and raises `ConnectionClosed`: it never
returns and is then dropped.

Thread safety: `_lock` guards the state, the close code, the outbox and the writer's idle
flag; every thread that reads one to decide something holds it. Waiting happens outside it
(or in `_space.wait`, which releases it). Nothing relies on the GIL, so this stays correct
on free-threaded CPython. What must run on the loop (waking the writer, resolving futures)
is handed to it with `call_soon_threadsafe`, at most once per idle period of the writer.

Why this shape: a round trip to the loop per call (`run_coroutine_threadsafe(...).result()`)
costs two thread switches and a future per message; here a send costs a lock and an append,
and a wake-up only when the writer has gone idle. Both directions are bounded, so a slow
client or a slow handler applies back-pressure instead of growing memory: senders wait
(from a worker thread) when the outbox is full, and the pump stops reading (so the server
stops reading the socket) when the inbox is full.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final, Generic, Protocol, TypeVar

import anyio
from starlette.types import Message, Receive, Send

from ._events import ABNORMAL_CLOSURE, close_event, ends_connection, to_message, was_lost
from ._greenlets import PARK, HandlerGreenlet, await_, current_handler
from ._inbox import Arrivals, Inbox
from ._server_link import ServerLink
from .errors import ConnectionClosed
from .messages import ReceivedClose, WebSocketMessage

#: Outgoing messages queued per connection before senders wait.
OUTBOX_LIMIT: Final = 64

#: Seconds without a single event going out after which a closing connection stops
#: waiting for a client that no longer reads (see `Channel.flush`).
FLUSH_STALL_TIMEOUT: Final = 10.0

#: Seconds a connection nobody is reading waits, once a send has found the client gone,
#: for the server to hand over the client's close (see `Channel._peer_gone`).
PEER_CLOSE_WAIT: Final = 1.0

#: What the ASGI `send` raises when the client is gone: uvicorn's `ClientDisconnected`
#: (an OSError); RuntimeError when the server has already closed the WebSocket itself (a
#: protocol error from the client, its keepalive timing out) before cello heard of it;
#: anyio's closed/broken stream errors from in-process transports (httpx-ws).
_GONE: Final = (OSError, RuntimeError, anyio.ClosedResourceError, anyio.BrokenResourceError)

logger = logging.getLogger("cello")

T = TypeVar("T")


class State(enum.Enum):
    """Where a connection is in its life. Only `Channel._enter` changes it."""

    CONNECTING = "the handshake is not answered yet"
    OPEN = "accepted: messages flow both ways"
    CLOSING = "closed by the app: what it queued goes out, then its close frame"
    DENIED = "refused before acceptance: the denial response goes out"
    CLOSED = "the app's close frame (or denial) has gone out"
    CLOSED_BY_PEER = "the client's close frame arrived"
    LOST = "the client vanished, or could not be written to"

    # Members are singletons: hashing by identity is right, and costs a fifth of Enum's
    # name-based hash on the writer's path (`state in FINISHED`).
    __hash__ = object.__hash__


#: The transitions there are; any other is refused (`_enter` returns False).
_TRANSITIONS: Final[dict[State, frozenset[State]]] = {
    State.CONNECTING: frozenset(
        {State.OPEN, State.DENIED, State.CLOSING, State.CLOSED_BY_PEER, State.LOST}
    ),
    State.OPEN: frozenset({State.CLOSING, State.CLOSED_BY_PEER, State.LOST}),
    State.CLOSING: frozenset({State.CLOSED, State.CLOSED_BY_PEER, State.LOST}),
    State.DENIED: frozenset({State.CLOSED, State.LOST}),
    State.CLOSED: frozenset(),
    State.CLOSED_BY_PEER: frozenset(),
    State.LOST: frozenset(),
}

#: States in which nothing more will be sent: the outgoing side is finished.
FINISHED: Final = frozenset({State.CLOSED, State.CLOSED_BY_PEER, State.LOST})


class Queued(enum.Enum):
    """What `Channel._queue` did with an event."""

    WAKE = "queued; the writer is idle and must be woken"
    QUEUED = "queued; the writer is busy and will send it"
    BEHIND = "queued; the writer is busy and the connection is far behind (`enqueue` only)"
    DIRECT = "not queued: nothing is ahead of it, the caller on the loop sends it itself"
    TOO_SLOW = "not queued: the connection was too far behind and is now closing (1008)"
    CLOSED = "not queued: the connection is closed (or the transition is not allowed)"


# Module-level names for the members, read on every message: an enum member looked up on
# its class costs about ten times a global on CPython 3.11.
_CONNECTING, _OPEN, _CLOSING, _DENIED = State.CONNECTING, State.OPEN, State.CLOSING, State.DENIED
_CLOSED, _CLOSED_BY_PEER, _LOST = State.CLOSED, State.CLOSED_BY_PEER, State.LOST
_WAKE, _QUEUED, _DIRECT, _TOO_SLOW = Queued.WAKE, Queued.QUEUED, Queued.DIRECT, Queued.TOO_SLOW
_BEHIND, _REFUSED = Queued.BEHIND, Queued.CLOSED
#: The event types after which the writer may have to stop (see `ends_connection`).
_FINAL_TYPES: Final = frozenset({"websocket.close", "websocket.http.response.body"})


class Channel:
    """One WebSocket connection's state, outbox, writer and receive pump.

    Created on the event loop by the connection's ASGI task. `send`, `close` and `recv`
    may be called from any thread (`recv` blocks, so not from the loop's own thread); the
    `a`-prefixed methods are the event loop's versions.

    Args:
        loop: The loop the connection's ASGI task runs on.
        receive: The connection's ASGI `receive`.
        send: The connection's ASGI `send`.
        sync_reader: Whether a sync handler reads this connection (through the pump and
            an `Inbox`); an async handler awaits `receive` itself (`arecv`).
        send_timeout: How long a send waits for room by default (`None`: as long as it
            takes); see `send`.
        link: The server's side door for this connection, when it offers one (see
            `cello._server_link`): the client's events then arrive through it, with no
            pump task or ASGI queue, and the writer writes through it while the server
            can send at once.
    """

    # Slots, not a dict per connection: an idle connection should cost little memory.
    __slots__ = (
        "_arrivals",
        "_asgi_send",
        "_backlog_dropped",
        "_disconnect_taken",
        "_finished",
        "_inbox",
        "_link",
        "_lock",
        "_loop",
        "_loop_thread",
        "_outbox",
        "_parked",
        "_pump",
        "_pump_resumed",
        "_reader",
        "_reader_interrupted",
        "_receive",
        "_sending_directly",
        "_space",
        "_space_on_loop",
        "_space_waiters",
        "_writer",
        "_writer_idle",
        "_writer_wakeup",
        "accepted",
        "close_code",
        "close_reason",
        "messages_in",
        "messages_out",
        "send_timeout",
        "state",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        receive: Receive,
        send: Send,
        *,
        sync_reader: bool = True,
        send_timeout: float | None = None,
        link: ServerLink | None = None,
    ) -> None:
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self._receive = receive
        self._asgi_send = send
        self.send_timeout = send_timeout
        self._lock = threading.Lock()
        #: Senders waiting for room wait here (same lock); notified by the writer and by
        #: every state change. Made by the first thread that waits (under the lock): most
        #: connections never fill their outbox, and an idle one should cost little.
        self._space: threading.Condition | None = None
        self.state = _CONNECTING  # written by `_enter` only
        #: The close code and reason, set by the first close (either side); `None` while open.
        self.close_code: int | None = None
        self.close_reason = ""
        self._backlog_dropped = False  # set with the close when the backlog was dropped
        #: Resolved on the loop once the state is in `FINISHED`; made by the first to need
        #: it (see `finished`), so an idle connection holds no future.
        self._finished: asyncio.Future[None] | None = None

        # Outgoing side.
        #: Appended by `_queue`, popped by the writer. A list, not a deque: an empty deque
        #: costs 600 bytes, and the outbox holds a few events (at most the hub's limit).
        self._outbox: list[Message] = []
        self._writer_idle = (
            True  # set by the writer (and a direct send) when done; cleared by `_queue`
        )
        #: Started by a wake-up that cannot write at once; with a server link it ends
        #: when idle (see `_write`), else it waits for the next wake-up.
        self._writer: asyncio.Task[None] | None = None
        self._writer_wakeup: asyncio.Future[None] | None = None  # on the loop only
        self._sending_directly = False  # on the loop only: `_send_directly` is sending
        self._space_waiters = 0  # threads and coroutines waiting for room (under the lock)
        self._space_on_loop: asyncio.Event | None = None  # coroutines wait on it

        # Incoming side (sync handlers only; async handlers receive directly).
        self._inbox: Inbox | None = Inbox(self._resume_pump) if sync_reader else None
        self._pump_resumed: asyncio.Event | None = None  # on the loop only; see start_pump
        self._reader: asyncio.Task[Any] | None = None  # on the loop only: waiting in `arecv`
        self._reader_interrupted = False  # on the loop only: `_settle` cancelled that wait
        self._disconnect_taken = False  # on the loop only: `_peer_gone` read the disconnect
        self._pump: asyncio.Task[None] | None = None
        self._link = link
        #: With a link, for async and greenlet handlers: the client's events, as the
        #: server parsed them.
        self._arrivals: Arrivals | None = None
        #: A greenlet handler parked in `recv` until an event arrives (`_wake_parked`).
        self._parked: HandlerGreenlet | None = None
        if link is not None:
            if self._inbox is not None:
                link.attach(self._take_into_inbox)  # the pump's job, with no task
            else:
                arrivals = self._arrivals = Arrivals(loop, link.pause_reading, link.resume_reading)
                self._receive = arrivals.receive  # what `arecv` and `_peer_gone` await
                link.attach(arrivals.put)

        # Counts for `cello.metrics`, each written on the loop's thread only (the pump or
        # `arecv`, the writer or a direct send, the transition to OPEN under `_lock`), so
        # no lock is needed to add; a scrape from another thread may read one a message
        # behind, never a torn value (an attribute load is atomic with or without the GIL).
        self.messages_in = 0
        self.messages_out = 0
        self.accepted = False  # set by the transition to OPEN

    @property
    def open(self) -> bool:
        """Whether the connection is accepted and neither side has closed it."""
        return self.state is _OPEN

    @property
    def lost_before_handshake(self) -> bool:
        """Whether the client vanished before the app could accept or refuse it, so that
        nothing was sent for the handshake (the accept or denial found it gone)."""
        return self.state is _LOST and not self.accepted

    def queued(self) -> int:
        """Messages waiting now: for the client to take them, or for the handler to read
        (in a sync handler's inbox, or in the buffer a server link fills for the others)."""
        waiting = self._inbox if self._inbox is not None else self._arrivals
        return len(self._outbox) + (len(waiting) if waiting is not None else 0)

    def _closed_error(self) -> ConnectionClosed:
        return ConnectionClosed(self.close_code or ABNORMAL_CLOSURE, self.close_reason)

    def check_open(self) -> None:
        """Raise `ConnectionClosed` unless the connection is open."""
        if self.state is not _OPEN:
            raise self._closed_error()

    # ----------------------------------------------------------------- state

    def _enter(self, new: State, code: int | None = None, reason: str = "") -> bool:
        """The one transition function; the caller holds `_lock`. Whether it happened.

        The first transition that carries a close code sets `close_code`; a connection the
        client can no longer be written to drops what is queued for it.
        """
        if new not in _TRANSITIONS[self.state]:
            return False
        self.state = new
        if new is _OPEN:
            self.accepted = True
        if code is not None and self.close_code is None:
            self.close_code = code
            self.close_reason = reason
        if new is _CLOSED_BY_PEER or new is _LOST:
            self._outbox.clear()
        if self._space_waiters:
            self._notify_space()  # a waiting sender decides again
        return True

    def _transition(self, new: State, code: int | None = None, reason: str = "") -> State | None:
        """Change state without queueing anything (the client closed, or is gone); the
        state it left, or `None` if the transition was refused."""
        with self._lock:
            left = self.state
            if not self._enter(new, code, reason):
                return None
        self._after(new, wake=False)
        return left

    def _after(self, new: State, wake: bool) -> None:
        """What a transition to `new` sets off outside the lock, from any thread."""
        inbox = self._inbox
        if inbox is not None:
            if new is _CLOSING or new is _DENIED:
                inbox.end(discard=True)  # the app closed: `recv` returns None from now on
            elif new is _CLOSED_BY_PEER:
                inbox.end(ReceivedClose(self.close_code or 1005, self.close_reason))
            elif new is _LOST:
                inbox.end()
        self._on_loop(self._settle, wake)

    def _settle(self, wake: bool) -> None:
        """On the loop after a transition: wake the writer and every waiter."""
        # A waiting writer sees the new state; what is queued goes out (a writer that
        # ended idle, with a link, may have events queued by `enqueue` before its wake).
        if wake or self._writer is not None or self._outbox:
            self._wake_writer()
        if self._space_on_loop is not None:
            self._space_on_loop.set()
        reader = self._reader
        state = self.state
        if (
            reader is not None
            and state is not _OPEN
            # The client's close reaches that `receive` itself, unless `_peer_gone` took it.
            and (state is not _CLOSED_BY_PEER or self._disconnect_taken)
            and not self._reader_interrupted
        ):
            # Closed by the app (or lost): a waiting `arecv` returns None now.
            self._reader_interrupted = True
            reader.cancel()
        if state in FINISHED:
            finished = self.finished()
            if not finished.done():
                finished.set_result(None)
        if self._parked is not None and state is not _OPEN:
            # Closed by the app (or lost): the parked `recv` returns None. Resumed from a
            # callback: this may run inside another greenlet handler (its `close`).
            self._loop.call_soon(self._wake_parked)

    # ----------------------------------------------------------------- outgoing

    def _queue(
        self,
        events: Iterable[Message],
        *,
        to: State | None = None,
        code: int | None = None,
        reason: str = "",
        drop_backlog: bool = False,
        limit: int | None = None,
        direct: bool = False,
    ) -> tuple[Queued, int]:
        """The one place an event joins the outbox; with the outbox's length after.

        Without `to`, data for an open connection: refused unless the state is OPEN. With
        `to`, the events go with a transition (the accept to OPEN, the close frame to
        CLOSING, a denial to DENIED) in one critical section, so nothing can be queued
        between the state change and its events; `drop_backlog` drops what was queued
        before them. With `limit`, a connection already that far behind is closed with
        1008 instead, its backlog dropped. With `direct` (a coroutine on the loop), nothing
        is queued if nothing is ahead: the caller sends it itself while the writer is
        marked busy.

        The caller wakes the writer on `WAKE`; the effects of a transition are set off here.
        """
        wake = False
        with self._lock:
            outbox = self._outbox
            outcome = _QUEUED
            if to is None:
                if self.state is not _OPEN:
                    return _REFUSED, 0
                if limit is not None and len(outbox) >= limit:
                    to, code, reason, drop_backlog = _CLOSING, 1008, "client too slow", True
                    events = (close_event(code, reason),)
                    outcome = _TOO_SLOW
            if to is not None:
                if not self._enter(to, code, reason):
                    return _REFUSED, 0
                if drop_backlog:
                    self._backlog_dropped = True
                    outbox.clear()
            if direct and self._writer_idle and not outbox:
                self._writer_idle = False
                outcome = _DIRECT
            else:
                outbox.extend(events)
                wake = self._writer_idle
                self._writer_idle = False
            size = len(outbox)
        if to is not None:
            self._after(to, wake)  # wakes the writer itself
        elif wake:
            outcome = _WAKE
        return outcome, size

    def send(self, event: Message, timeout: float | None = None) -> None:
        """Queue an ASGI event for the client, from any thread; wait while the outbox is full.

        A worker thread waits until the writer has drained the outbox to half, at most
        `timeout` seconds (default: the channel's `send_timeout`); past it the client is
        taken to have stopped reading: what is queued is dropped and the connection closed
        with 1008. On the event loop's thread waiting would stop the writer itself, so
        there a client this far behind is disconnected with 1008 at once.

        Raises:
            ConnectionClosed: the connection is closed, or closes while waiting.
        """
        if (
            self._link is not None
            and threading.get_ident() == self._loop_thread
            and self._write_at_once(event)
        ):
            return
        outcome, size = self._queue((event,))
        if outcome is _WAKE:
            self._on_loop(self._wake_writer)
        elif outcome is _REFUSED:
            raise self._closed_error()
        if size > OUTBOX_LIMIT:
            self._wait_for_space(self.send_timeout if timeout is None else timeout)

    def _write_at_once(self, event: Message) -> bool:
        """On the loop, with a server link: write `event` now if nothing is ahead of it
        and the server can send without waiting; whether it did.

        Checked under the lock, written after it: a close or a send from another thread
        that comes in between is ordered after this event, as if it came after the write
        (what it queues is woken through the loop, so it goes out after this call).
        """
        link = self._link
        assert link is not None
        with self._lock:
            if not (self.state is _OPEN and self._writer_idle and not self._outbox):
                return False
        # Outside the lock: only the loop changes the server's state, so whether it can
        # send is the same here as it would be under the lock.
        if not link.send_if_ready(event):
            return False
        self.messages_out += 1
        return True

    def _notify_space(self) -> None:
        """Wake the threads waiting for room (the caller holds the lock)."""
        if self._space is not None:  # else the waiters are coroutines only
            self._space.notify_all()

    def _wait_for_space(self, timeout: float | None) -> None:
        if threading.get_ident() == self._loop_thread:
            if current_handler() is not None:
                # A greenlet handler sending to another connection: wait on the loop.
                await_(self._await_space(timeout))
                return
            self._too_slow("client too slow")
            raise ConnectionClosed(1008, "client too slow")
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            if self._space is None:
                self._space = threading.Condition(self._lock)
            space = self._space
        with space:
            self._space_waiters += 1
            try:
                while self.state is _OPEN and len(self._outbox) > OUTBOX_LIMIT:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        break
                    space.wait(remaining)
            finally:
                self._space_waiters -= 1
            timed_out = self.state is _OPEN and len(self._outbox) > OUTBOX_LIMIT
        if timed_out and self._too_slow("send timed out"):
            raise ConnectionClosed(1008, "send timed out")
        self._raise_if_unsent()

    def _raise_if_unsent(self) -> None:
        """After waiting for room: raise unless the waiting message is still to go out.

        Closed by the client, or by the app with the backlog dropped: it will not. Closed
        by the app otherwise: it goes out ahead of the close frame, so the send succeeded.
        """
        state = self.state
        if state is _CLOSED_BY_PEER or state is _LOST or self._backlog_dropped:
            raise self._closed_error()

    def _too_slow(self, reason: str) -> bool:
        """Drop what the client has not taken and close with 1008: it stopped reading.
        Whether it did (not if the connection was closed meanwhile)."""
        outcome, _ = self._queue(
            (close_event(1008, reason),),
            to=_CLOSING,
            code=1008,
            reason=reason,
            drop_backlog=True,
        )
        return outcome is not _REFUSED

    async def asend(self, event: Message, timeout: float | None = None) -> None:
        """`send` for coroutines on the event loop: waits for room without blocking it."""
        if self._link is not None and self._write_at_once(event):
            return
        if timeout is None:
            timeout = self.send_timeout
        outcome, size = self._queue((event,), direct=True)
        if outcome is _DIRECT:
            await self._send_directly(event, timeout)
            return
        if outcome is _WAKE:
            self._wake_writer()
        elif outcome is _REFUSED:
            raise self._closed_error()
        if size > OUTBOX_LIMIT:
            await self._await_space(timeout)

    async def _await_space(self, timeout: float | None) -> None:
        with self._lock:
            self._space_waiters += 1
        try:
            async with asyncio.timeout(timeout):
                while True:
                    with self._lock:
                        if self.state is not _OPEN or len(self._outbox) <= OUTBOX_LIMIT:
                            break
                    if self._space_on_loop is None:
                        self._space_on_loop = asyncio.Event()
                    # Set only on the loop, so it cannot be set between this check and clear.
                    self._space_on_loop.clear()
                    await self._space_on_loop.wait()
        except TimeoutError:
            if self._too_slow("send timed out"):
                raise ConnectionClosed(1008, "send timed out") from None
        finally:
            with self._lock:
                self._space_waiters -= 1
        self._raise_if_unsent()

    async def _send_directly(self, event: Message, timeout: float | None = None) -> None:
        """Send from a coroutine on the loop while nothing is queued: no hop via the writer.

        `_queue` marked the writer busy, so meanwhile others only queue (in order, after
        this event); the writer is woken afterwards if they did. The server's `send` waits
        while the client does not read: past `timeout` the client is taken to have
        stopped reading, as in `send`.
        """
        self._sending_directly = True
        try:
            if timeout is None:
                await self._asgi_send(event)
            else:
                async with asyncio.timeout(timeout):
                    await self._asgi_send(event)
            if event["type"] == "websocket.send":
                self.messages_out += 1
        except TimeoutError:
            if self._too_slow("send timed out"):
                raise ConnectionClosed(1008, "send timed out") from None
            raise self._closed_error() from None
        except _GONE:
            self._transition(_LOST, ABNORMAL_CLOSURE)
            raise ConnectionClosed(ABNORMAL_CLOSURE) from None
        finally:
            self._sending_directly = False
            with self._lock:
                wake = bool(self._outbox)
                if not wake:
                    self._writer_idle = True
            if wake:
                self._wake_writer()

    def enqueue(self, event: Message, limit: int) -> Queued:
        """Queue `event` from any thread without waiting, for fan-out to many connections.

        The caller wakes the writers it was told to, all at once (`wake_writers`), so a
        broadcast costs one hop to the loop however many members it reaches. A connection
        already `limit` events behind is not waited for: its backlog is dropped and it is
        closed with 1008, so one slow member never holds up the others.

        `BEHIND` is `QUEUED` for a connection more than `OUTBOX_LIMIT` events behind: a
        caller on the loop's thread should let the loop run (its writers cannot drain
        while it runs), or it drives members it is not waiting for past `limit` itself.
        """
        outcome, size = self._queue((event,), limit=limit)
        if outcome is _QUEUED and size > OUTBOX_LIMIT:
            return _BEHIND
        return outcome

    def _wake_writer(self) -> None:
        """On the loop: write what is queued through the server link if it can be sent at
        once; else start the writer, or wake it from its idle wait."""
        if self._sending_directly:
            return  # `_send_directly` wakes the writer when it is done
        if (
            self._link is not None
            # The writer task is not in the middle of a send (it waits to be woken, or
            # has not started): what is queued may go out here, in order.
            and (self._writer is None or self._writer_wakeup is not None)
            and self._write_now()
        ):
            return
        if self._writer is None:
            self._writer = self._loop.create_task(self._write())
            return
        wakeup = self._writer_wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)

    def _write_now(self) -> bool:
        """Write the outbox through the server link, on the loop, while the server can
        send each message at once; whether all went (the writer is idle again).

        Stops, leaving the rest to the writer task's ASGI `send`, at an event that is
        not a message (the accept, a close, a denial) or once the server would have to
        wait (its socket buffer full) or refuse (the connection closing or gone): the
        task then sends, waits or fails exactly as without the link.
        """
        link = self._link
        assert link is not None
        outbox = self._outbox
        while True:
            with self._lock:
                if outbox and (outbox[0]["type"] != "websocket.send" or not link.can_send()):
                    return False
                event = self._take_next()
                if event is None:
                    return self.state not in FINISHED  # else the task ends the writer
            # Outside the lock (a socket write): nothing on the loop runs in between, and
            # only the loop changes the server's state, so `can_send` still holds.
            try:
                link.send_now(event)
            except Exception:
                logger.exception("Sending %s failed", event["type"])
                self._transition(_LOST, ABNORMAL_CLOSURE)
                return False
            self.messages_out += 1

    def _take_next(self) -> Message | None:
        """The writer's next event (on the loop, holding the lock), or `None` when the
        outbox is empty: the writer is then idle, unless the outgoing side is finished.

        Once the outbox is down to half, the senders waiting for room go on.
        """
        outbox = self._outbox
        if not outbox:
            if self.state not in FINISHED:
                self._writer_idle = True
            return None
        event = outbox.pop(0)
        if self._space_waiters and len(outbox) <= OUTBOX_LIMIT // 2:
            self._notify_space()
            if self._space_on_loop is not None:
                self._space_on_loop.set()
        return event

    async def _write(self) -> None:
        """Drain the outbox into the ASGI `send` until the outgoing side is finished."""
        lock = self._lock
        asgi_send = self._asgi_send
        while True:
            with lock:
                event = self._take_next()
                if event is None and self.state in FINISHED:
                    return
            if event is None:
                if self._link is not None:
                    # Idle with a server link: end rather than wait. `_wake_writer` writes
                    # the next messages at once, and starts a writer again only for what
                    # must be awaited, so an idle connection keeps no task.
                    self._writer = None
                    return
                self._writer_wakeup = self._loop.create_future()
                await self._writer_wakeup
                self._writer_wakeup = None
                continue
            try:
                await asgi_send(event)
            except _GONE:
                await self._peer_gone()
                return
            except Exception:
                logger.exception("Sending %s failed", event["type"])
                self._transition(_LOST, ABNORMAL_CLOSURE)
                return
            kind = event["type"]
            if kind == "websocket.send":
                self.messages_out += 1
            elif kind in _FINAL_TYPES and ends_connection(event):
                self._transition(_CLOSED)
                return

    async def _peer_gone(self) -> None:
        """A send found the client gone. A sync handler's pump would have read why (the
        client's close frame and its code); when nothing reads this connection (a
        greenlet or async handler that only sends), read it here, so the handler's next
        send raises `ConnectionClosed` with the client's code, not 1006, on every runner.
        """
        if (
            self._inbox is None
            and self._reader is None
            and self._parked is None  # a parked `recv` takes the client's close itself
            and self.state is _OPEN
        ):
            try:
                async with asyncio.timeout(PEER_CLOSE_WAIT):
                    while (event := await self._receive())["type"] != "websocket.disconnect":
                        pass  # the handler will not read it: the connection is over
            except (TimeoutError, *_GONE):
                pass
            else:
                self._disconnect_taken = True  # a later `arecv` must not wait for it
                self._closed_by_peer(event)
                return
        self._transition(_LOST, ABNORMAL_CLOSURE)

    def finished(self) -> asyncio.Future[None]:
        """Resolved once the outgoing side is finished (on the loop's thread only)."""
        finished = self._finished
        if finished is None:
            finished = self._finished = self._loop.create_future()
        return finished

    async def flush(self) -> None:
        """Wait until the outgoing side is finished: the close frame sent, or the client gone.

        A client that has stopped reading would hold the connection's task (and this
        wait) for as long as it keeps the socket open: once no event has gone out for
        `FLUSH_STALL_TIMEOUT` seconds the rest is dropped and the connection ends here
        (the server then closes the socket once it can).
        """
        finished = self.finished()
        while not finished.done():
            # Closing, so nothing is added any more: progress is the outbox shrinking.
            left = len(self._outbox)
            await asyncio.wait((finished,), timeout=FLUSH_STALL_TIMEOUT)
            if not finished.done() and len(self._outbox) >= left:
                logger.info(
                    "Dropping what a client that stopped reading had not received "
                    "(nothing sent for %.0f s)",
                    FLUSH_STALL_TIMEOUT,
                )
                self._transition(_LOST, ABNORMAL_CLOSURE)
                await finished
        writer = self._writer
        if writer is not None and not writer.done():
            writer.cancel()  # idle, or stuck sending to a client that is gone
            await asyncio.gather(writer, return_exceptions=True)

    # ----------------------------------------------------------------- incoming

    def start_pump(self) -> None:
        """Start reading client messages into the inbox (for sync handlers); with a
        server link they arrive there already (`_take_into_inbox`)."""
        if self._link is None:
            self._pump_resumed = asyncio.Event()
            self._pump = self._loop.create_task(self._run_pump())

    def _take_into_inbox(self, event: Message) -> None:
        """An event from the server link, for a sync handler's inbox (on the loop): what
        the pump does with each event `receive` returns, without the task."""
        kind = event["type"]
        if kind == "websocket.receive":
            self.messages_in += 1
            size = len(event.get("text") or event.get("bytes") or "")
            inbox, link = self._inbox, self._link
            assert inbox is not None, "only a sync handler's connection takes events here"
            assert link is not None, "only a connection with a server link takes events here"
            if inbox.put(to_message(event), size):
                link.pause_reading()  # until `_resume_pump`
        elif kind == "websocket.disconnect":
            # Handled once the server is done with what caused it, as when the pump
            # reads it: the app's own close puts one while its close frame is sent.
            self._loop.call_soon(self._closed_by_peer, event)

    async def _run_pump(self) -> None:
        receive = self._receive
        inbox = self._inbox
        assert inbox is not None, "the pump feeds a sync handler's inbox"
        while True:
            event = await receive()
            kind = event["type"]
            if kind == "websocket.receive":
                self.messages_in += 1
                size = len(event.get("text") or event.get("bytes") or "")
                if inbox.put(to_message(event), size):
                    await self._pump_paused(inbox)
            elif kind == "websocket.disconnect":
                self._closed_by_peer(event)
                return

    async def _pump_paused(self, inbox: Inbox) -> None:
        """Wait until the handler has taken the inbox down to half (`_resume_pump`)."""
        resumed = self._pump_resumed
        assert resumed is not None, "made by start_pump"
        while inbox.paused:
            # Set only on the loop (by `_resume_pump`, scheduled after the inbox unpaused),
            # so it cannot be set between the check and this clear.
            resumed.clear()
            await resumed.wait()

    def _resume_pump(self) -> None:
        """The inbox has room again (called from the thread that took a message)."""
        if self._link is not None:
            self._on_loop(self._link.resume_reading)
        elif self._pump_resumed is not None:
            self._on_loop(self._pump_resumed.set)

    def recv(self, timeout: float | None = None) -> WebSocketMessage | None:
        """The next client message; a close message once, then `None`. Blocks (not on the loop).

        Raises:
            TimeoutError: no message arrived within `timeout` seconds.
            ConcurrencyError: another thread is already in `recv` on this connection.
        """
        inbox = self._inbox
        if inbox is None:
            handler = current_handler()
            if handler is not None and handler.channel is self:
                if timeout is None and self._arrivals is not None and not _behind.noted:
                    return self._recv_parking(handler, self._arrivals)
                return await_(self.arecv(timeout))
            raise RuntimeError(
                "recv() from a thread is not available on an async route (or a greenlet "
                "route): only its handler receives, with `await ws.recv()` (or `ws.recv()` "
                "in its greenlet); hand messages to threads yourself"
            )
        if threading.get_ident() == self._loop_thread:
            raise RuntimeError(
                "recv() blocks, so it cannot run on the event loop: "
                "use an async handler and `await ws.recv()`"
            )
        return inbox.get(timeout)

    def _recv_parking(
        self, handler: HandlerGreenlet, arrivals: Arrivals
    ) -> WebSocketMessage | None:
        """`recv` for the greenlet handler of a connection with a server link: take a
        waiting event, or park until one arrives (or the connection closes), resumed by
        `_wake_parked` with no task in between."""
        while True:
            if self.state is not _OPEN:
                return None
            event = arrivals.take_nowait()
            if event is not None:
                return self._received(event)
            self._parked = handler
            if arrivals.waiting():
                # Held back after a burst: the loop runs once, then this handler goes on.
                self._loop.call_soon(self._wake_parked)
            else:
                arrivals.wake = self._wake_parked
            try:
                handler.driver.switch(PARK)
            finally:
                self._parked = None  # resumed (by `_wake_parked`, or thrown out: cancelled)
                arrivals.wake = None

    def _wake_parked(self) -> None:
        """Resume the parked handler: an event arrived, or the connection closed.

        Only ever a callback of the loop (`call_soon`), so it runs in the loop's own
        greenlet, never inside another handler, and at a shallow stack: greenlet copies
        the C stack between the two switch points, and from deep in the server's
        `data_received` that copy cost more than the task step it saves.
        """
        handler = self._parked
        if handler is not None:  # else resumed already, or thrown out of its wait
            self._parked = None
            handler.runner.resume(handler.switch)

    async def arecv(self, timeout: float | None = None) -> WebSocketMessage | None:
        """`recv` for async and greenlet handlers: reads the ASGI `receive` directly, no pump.

        A close from the app's side (another thread, shutdown) interrupts the wait, which
        then returns `None` at once, as a thread's `recv` does, instead of waiting for the
        client to answer the close frame.

        If a broadcast from this thread found a member getting behind (`note_behind`),
        the loop runs once first: a handler relaying messages its client already sent
        never waits otherwise (the server's `receive` returns them at once), and the
        members' writers, on this same loop, could not catch up.
        """
        if self.state is not _OPEN:
            return None
        if _behind.noted:
            _behind.noted = False
            await asyncio.sleep(0)
        reader = asyncio.current_task()
        self._reader = reader
        try:
            if timeout is None:
                event = await self._receive()
            else:
                try:
                    async with asyncio.timeout(timeout):
                        event = await self._receive()
                except TimeoutError:
                    raise TimeoutError(f"no WebSocket message within {timeout} s") from None
        except asyncio.CancelledError:
            if self._reader_interrupted and reader is not None:
                self._reader_interrupted = False
                if reader.uncancel() == 0:
                    return None  # `_settle`'s cancel, and no other
            raise
        finally:
            self._reader = None
        return self._received(event)

    def _received(self, event: Message) -> WebSocketMessage | None:
        """What `recv` returns for an event of the ASGI `receive`."""
        if event["type"] == "websocket.receive":
            self.messages_in += 1
            return to_message(event)
        if event["type"] == "websocket.disconnect":
            return self._closed_by_peer(event)
        return None

    def _closed_by_peer(self, event: Message) -> WebSocketMessage | None:
        """The client closed (or vanished): what `recv` returns for it."""
        if was_lost(event):
            self._transition(_LOST, ABNORMAL_CLOSURE)
            return None
        code: int = event.get("code", 1005)
        reason: str = event.get("reason") or ""
        left = self._transition(_CLOSED_BY_PEER, code, reason)
        # Once the app has closed, `recv` returns None whatever the client does.
        if left is _OPEN or left is _CONNECTING:
            return ReceivedClose(code, reason)
        return None

    # ----------------------------------------------------------------- closing

    def accept(self, event: Message) -> None:
        """Queue the accept (from any thread): the connection is open from now on."""
        if self._queue((event,), to=_OPEN)[0] is _REFUSED:
            raise self._closed_error()

    async def aaccept(self, event: Message) -> None:
        """`accept` for coroutines on the loop: sent directly while nothing is queued."""
        outcome, _ = self._queue((event,), to=_OPEN, direct=True)
        if outcome is _DIRECT:
            await self._send_directly(event)
        elif outcome is _REFUSED:
            raise self._closed_error()

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Close from the app's side, from any thread: the close frame goes after what is
        already queued; later sends raise `ConnectionClosed`, `recv` returns `None`.
        Closing a connection that is already closing or closed does nothing."""
        self._queue((close_event(code, reason),), to=_CLOSING, code=code, reason=reason)

    def deny(self, events: list[Message]) -> None:
        """Refuse the connection before acceptance with the given ASGI events."""
        # All at once: a server may answer as soon as the response start arrives.
        self._queue(events, to=_DENIED, code=1008)

    def abort(self) -> None:
        """The connection's task is going away: fail every waiter and later call at once."""
        self._transition(_LOST, ABNORMAL_CLOSURE)

    async def finish(self) -> None:
        """End the connection's tasks: close if still open, flush, then stop the pump."""
        if self.state is _OPEN or self.state is _CONNECTING:
            self.close(1000)
        await self.flush()
        pump = self._pump
        if pump is not None:
            self._pump = None
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)
        if self._link is not None:
            self._link.detach()  # the server's last events (its disconnect) are nobody's

    def _on_loop(self, callback: Callable[..., Any], *args: Any) -> None:
        """Run `callback` on the loop: now if this is the loop's thread, else soon."""
        if threading.get_ident() == self._loop_thread:
            callback(*args)
            return
        try:
            self._loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:
            # The loop has closed (process exit): the connection is gone with it, and only
            # threads can still be waiting.
            with self._lock:
                self._enter(_LOST, ABNORMAL_CLOSURE)
            if self._inbox is not None:
                self._inbox.end()


class Recipient(Protocol):
    """What the hub queues broadcasts for: a connection's `Channel`, or the queue of a
    stream (`_hub_stream.StreamMember`), both served on one loop."""

    _loop: asyncio.AbstractEventLoop
    _loop_thread: int

    def enqueue(self, event: Message, limit: int) -> Queued: ...
    def check_open(self) -> None: ...
    def _wake_writer(self) -> None: ...
    def _on_loop(self, callback: Callable[..., Any], *args: Any) -> None: ...


class _Behind(threading.local):
    """Per thread: whether a broadcast from it found a member getting behind since the
    thread's last `arecv` (only event loop threads ever read it)."""

    noted = False


_behind = _Behind()


def note_behind() -> None:
    """A broadcast from this thread left some member more than `OUTBOX_LIMIT` behind: on
    an event loop's thread, its next `arecv` lets the loop run first.

    Not here: yielding inside the broadcast of a greenlet handler could park it while it
    holds one of the app's locks, and deadlock every other handler of the loop that takes
    that lock; `recv` is a wait already.
    """
    _behind.noted = True


def wake_writers(channels: Sequence[Recipient]) -> None:
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
            channel._on_loop(channel._wake_writer)


def _wake_all(channels: Sequence[Recipient]) -> None:
    for channel in channels:
        channel._wake_writer()


class Mailbox(Generic[T]):
    """Items handed from any thread to one consumer task on the loop.

    The same wake-up discipline as a channel's outbox: `put` appends, and wakes the
    consumer with one `call_soon_threadsafe` only if it has gone idle, so a burst of puts
    costs one hop. Unbounded between drains; the consumer bounds what it keeps. `_lock`
    guards the items and the idle flag (no reliance on the GIL).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self._lock = threading.Lock()
        self._items: deque[T] = deque()
        self._idle = False  # set by the consumer when it waits; cleared by the put that wakes it
        self._wakeup: asyncio.Future[None] | None = None  # on the loop only

    def put(self, item: T) -> None:
        """Hand `item` to the consumer, from any thread."""
        with self._lock:
            self._items.append(item)
            wake = self._idle
            self._idle = False
        if wake:
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
        while True:
            with self._lock:
                if self._items:
                    self._idle = False
                    break
                self._idle = True
            # A put from now on sees the flag and schedules `_wake`, which runs on the loop
            # only after this future exists.
            self._wakeup = self._loop.create_future()
            try:
                await self._wakeup
            finally:
                self._wakeup = None
        return self.take_nowait()

    def take_nowait(self) -> list[T]:
        """Take everything put so far, without waiting (on the loop)."""
        with self._lock:
            taken = list(self._items)
            self._items.clear()
        return taken
