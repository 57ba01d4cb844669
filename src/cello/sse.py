"""Server-Sent Events: Cello's `SseEvent` and `SseStream`, and live event streams.

`Response.sse(source)` answers with `text/event-stream`. `source` is an `SseStream` (sent
whole), or a live source that produces events as they happen: a sync iterator or
generator (each `next()` runs in a worker thread, so it may block) or an async one. Items
may be `SseEvent`s, `str` (the data), or `dict`/`list` (JSON data). Events are sent as
produced; an idle stream gets a comment line every `keepalive` seconds so proxies and
browsers keep it open; when the client goes away the source is closed (its `finally`
runs), at once for an async generator and as soon as the current `next()` returns for a
sync one (a blocked call cannot be interrupted).

Text from anywhere (a chat message echoed back) is safe in an event's data: every line
break the SSE spec knows (CRLF, CR, LF) starts a new `data:` line, so no text can add a
field. `event` and `id` refuse line breaks, and `id` NUL, however they are set.

Each `App` keeps the streams it is sending in its `LiveStreams`, so that its shutdown ends
them, and only them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from typing import Any, overload

import anyio
import anyio.to_thread
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

__all__ = ["LiveStreams", "SseEvent", "SseResponse", "SseStream", "sse_response"]

logger = logging.getLogger("cello")

KEEPALIVE = b": keepalive\n\n"
_END: Any = object()  # the source is exhausted

#: Threads for sync sources, per event loop: never anyio's shared 40-token limiter.
_limiters: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, anyio.CapacityLimiter] = (
    weakref.WeakKeyDictionary()
)
SOURCE_THREADS = 1000

#: Where the SSE spec ends a line (and only there: not at \v, \f, U+2028 and the like).
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


class _DataField:
    """`SseEvent.data` is both the factory and the attribute, as in Cello.

    On the class it returns the factory (`SseEvent.data("hi")`); on an event, its data.
    """

    @overload
    def __get__(self, instance: None, owner: type[SseEvent]) -> Callable[[str], SseEvent]: ...
    @overload
    def __get__(self, instance: SseEvent, owner: type[SseEvent]) -> str: ...
    def __get__(
        self, instance: SseEvent | None, owner: type[SseEvent]
    ) -> Callable[[str], SseEvent] | str:
        if instance is None:
            return owner.from_data
        return instance._data

    def __set__(self, instance: SseEvent, value: str) -> None:
        instance._data = value


class SseEvent:
    """One Server-Sent Event.

    Args:
        data: The payload; several lines become several `data:` fields.
        event: The event name (`addEventListener(name, ...)` in the browser).
        id: The event id; the browser sends the last one back as `Last-Event-ID` when it
            reconnects.
        retry: How long the browser waits before reconnecting, in milliseconds.
    """

    __slots__ = ("_data", "_event", "_id", "_retry")

    data = _DataField()

    def __init__(
        self, data: str, event: str | None = None, id: str | None = None, retry: int | None = None
    ) -> None:
        self._data = data
        self.event = event
        self.id = id
        self.retry = retry

    @property
    def event(self) -> str | None:
        """The event's name; it cannot contain a line break (`ValueError`)."""
        return self._event

    @event.setter
    def event(self, value: str | None) -> None:
        self._event = _field("event", value)

    @property
    def id(self) -> str | None:
        """The event's id; it cannot contain a line break or NUL (`ValueError`)."""
        return self._id

    @id.setter
    def id(self, value: str | None) -> None:
        if value is not None and "\0" in value:
            raise ValueError(f"an SSE id cannot contain NUL (browsers ignore it): {value!r}")
        self._id = _field("id", value)

    @property
    def retry(self) -> int | None:
        """The reconnection delay in milliseconds: an int, 0 or more."""
        return self._retry

    @retry.setter
    def retry(self, value: int | None) -> None:
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"an SSE retry is an int of milliseconds, not {value!r}")
            if value < 0:
                raise ValueError(f"an SSE retry cannot be negative: {value!r}")
        self._retry = value

    @classmethod
    def from_data(cls, data: str) -> SseEvent:
        """An unnamed event (also reachable as `SseEvent.data(...)`)."""
        return cls(data)

    @classmethod
    def with_event(cls, name: str, data: str) -> SseEvent:
        """A named event."""
        return cls(data, event=name)

    def to_sse_string(self) -> str:
        """The event in the wire format, ending with the blank line that dispatches it."""
        lines = []
        if self.event is not None:
            lines.append(f"event: {self.event}")
        if self.id is not None:
            lines.append(f"id: {self.id}")
        if self.retry is not None:
            lines.append(f"retry: {self.retry}")
        lines.extend(f"data: {line}" for line in _LINE_BREAK.split(self._data))
        return "\n".join(lines) + "\n\n"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SseEvent):
            return NotImplemented
        return (self._data, self._event, self._id, self._retry) == (
            other._data,
            other._event,
            other._id,
            other._retry,
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"SseEvent({self._data!r}, event={self.event!r}, id={self.id!r})"


def _field(name: str, value: str | None) -> str | None:
    """`value`, checked to be fit for the one line of an `event` or `id` field."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"an SSE {name} is a str, not {type(value).__name__}")
    if _LINE_BREAK.search(value):
        raise ValueError(f"an SSE {name} cannot contain a line break: {value!r}")
    return value


class SseStream:
    """A finite list of events, sent whole by `Response.sse(stream)`."""

    def __init__(self, events: Iterable[SseEvent] = ()) -> None:
        self._events = list(events)

    def add(self, event: SseEvent) -> None:
        self._events.append(event)

    def add_data(self, data: str) -> None:
        self._events.append(SseEvent(data))

    def add_event(self, name: str, data: str) -> None:
        self._events.append(SseEvent.with_event(name, data))

    def len(self) -> int:
        """The number of events (Cello's spelling of `len(stream)`)."""
        return len(self._events)

    def is_empty(self) -> bool:
        return not self._events

    def __len__(self) -> int:
        return len(self._events)

    def __iter__(self) -> Iterator[SseEvent]:
        return iter(self._events)


def encode(item: Any) -> bytes:
    """A source's item in the wire format."""
    if isinstance(item, SseEvent):
        return item.to_sse_string().encode()
    if isinstance(item, str):
        return SseEvent(item).to_sse_string().encode()
    if isinstance(item, dict | list):
        return SseEvent(json.dumps(item)).to_sse_string().encode()
    raise TypeError(f"an SSE source yielded {type(item).__name__}; yield SseEvent, str or dict")


class LiveStreams:
    """The SSE responses one `App` is sending now, so that its shutdown can end them.

    A response is in it from the moment it starts until it ends, however it ends (the
    source is exhausted or fails, the client leaves, the task is cancelled).
    """

    def __init__(self) -> None:
        # One entry per response being sent: setting the event ends that response.
        self._ending: set[asyncio.Event] = set()

    def add(self, ending: asyncio.Event) -> None:
        self._ending.add(ending)

    def discard(self, ending: asyncio.Event) -> None:
        self._ending.discard(ending)

    def end_all(self) -> None:
        """End every response in the registry (their sources are closed): server shutdown.

        uvicorn waits for open responses before it shuts down and gives streaming ones no
        signal, so without this a browser following a stream would hold the server up.
        """
        for ending in list(self._ending):
            ending.set()

    def __len__(self) -> int:
        return len(self._ending)


class SseResponse(Response):
    """A `text/event-stream` response fed by an `SseStream` or a live source.

    `live_streams` is the registry of the `App` sending it (cello's HTTP serving sets it);
    one sent outside a cello `App` is not registered anywhere.
    """

    def __init__(
        self,
        source: SseStream | Iterable[Any] | AsyncIterator[Any],
        *,
        keepalive: float = 15.0,
        headers: Mapping[str, str] | None = None,
        status: int = 200,
    ) -> None:
        super().__init__(status_code=status, headers=headers)
        self.source = source
        self.keepalive = keepalive
        self.live_streams: LiveStreams | None = None
        for name, value in (
            ("content-type", "text/event-stream"),
            ("cache-control", "no-cache"),
            ("x-accel-buffering", "no"),
        ):
            self.headers[name] = value
        del self.headers["content-length"]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        registry = self.live_streams
        ended = asyncio.Event()  # one per send: a response may be sent more than once
        if registry is not None:
            registry.add(ended)
        try:
            await self._send(ended, receive, send)
        finally:
            if registry is not None:
                registry.discard(ended)

    async def _send(self, ended: asyncio.Event, receive: Receive, send: Send) -> None:
        """Send the response until the source is exhausted, the client leaves or `ended`."""
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=1)  # the source waits for the client
        producer = asyncio.ensure_future(self._produce(queue))
        gone = asyncio.ensure_future(_disconnected(receive))
        ending = asyncio.ensure_future(ended.wait())
        getter: asyncio.Future[Any] | None = None
        finished = False
        try:
            while True:
                if getter is None:
                    getter = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait(
                    {getter, gone, ending},
                    timeout=self.keepalive,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if gone in done:
                    break
                if ending in done:  # the server is shutting down: end the response cleanly
                    finished = True
                    break
                if getter in done:
                    item, getter = getter.result(), None
                    if item is _END:
                        finished = True
                        break
                    chunk = item
                else:
                    chunk = KEEPALIVE
                try:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                except OSError:  # the client went away mid-send
                    break
        finally:
            for task in (producer, gone, getter, ending):
                if task is not None:
                    task.cancel()
            await asyncio.gather(
                producer, gone, ending, *([getter] if getter else []), return_exceptions=True
            )
        if finished:
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _produce(self, queue: asyncio.Queue[Any]) -> None:
        """Feed encoded events into `queue`, then `_END`; close the source however it ends."""
        source = self.source
        try:
            if isinstance(source, SseStream) or not hasattr(source, "__aiter__"):
                await self._produce_sync(iter(source), queue)
            else:
                await self._produce_async(source.__aiter__(), queue)
        except Exception:
            logger.exception("SSE source %r failed", source)
        await queue.put(_END)

    @staticmethod
    async def _produce_async(events: AsyncIterator[Any], queue: asyncio.Queue[Any]) -> None:
        try:
            async for item in events:
                await queue.put(encode(item))
        finally:
            close = getattr(events, "aclose", None)
            if close is not None:
                await asyncio.shield(close())

    @staticmethod
    async def _produce_sync(events: Iterator[Any], queue: asyncio.Queue[Any]) -> None:
        limiter = _limiter()
        step: asyncio.Future[Any] | None = None
        try:
            while True:
                step = asyncio.ensure_future(
                    anyio.to_thread.run_sync(next, events, _END, limiter=limiter)
                )
                item = await asyncio.shield(step)  # a cancel must not abandon the thread
                step = None
                if item is _END:
                    return
                await queue.put(encode(item))
        finally:
            if step is not None:  # cancelled mid-`next()`: let it return, then close
                await asyncio.gather(step, return_exceptions=True)
            close = getattr(events, "close", None)
            if close is not None:
                await asyncio.shield(
                    asyncio.ensure_future(anyio.to_thread.run_sync(close, limiter=limiter))
                )


def sse_response(
    source: SseStream | Iterable[Any] | AsyncIterator[Any],
    *,
    keepalive: float = 15.0,
    headers: Mapping[str, str] | None = None,
    status: int = 200,
) -> SseResponse:
    """A Server-Sent Events response (what `Response.sse(...)` returns).

    Args:
        source: An `SseStream`, or a sync or async iterable of `SseEvent`/`str`/`dict`.
        keepalive: Seconds of silence after which a comment line keeps the stream open.
        headers: Extra response headers.
        status: The HTTP status.
    """
    return SseResponse(source, keepalive=keepalive, headers=headers, status=status)


async def _disconnected(receive: Receive) -> None:
    """Return once the client has gone (`http.disconnect`)."""
    while (await receive())["type"] != "http.disconnect":
        pass


def _limiter() -> anyio.CapacityLimiter:
    loop = asyncio.get_running_loop()
    limiter = _limiters.get(loop)
    if limiter is None:
        limiter = _limiters[loop] = anyio.CapacityLimiter(SOURCE_THREADS)
    return limiter
