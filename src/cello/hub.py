"""The broadcast hub: named groups of WebSocket connections, and one call to reach them all.

`app.hub.join(group, ws)` adds a connection to a group, `app.hub.broadcast(group, message)`
sends to every member. Members in this process are reached directly: the calling thread
appends the message to each member's outbox (one shared ASGI event, not a copy each) and
wakes the writers that went idle with one hop to the event loop for all of them, so a
broadcast costs one thread switch however many members it reaches, and messages one thread
sends, broadcast or direct, arrive in the order sent.

With a Redis URL (`App(hub="redis://...")` or `CELLO_HUB_URL`) every broadcast is also
relayed to the other processes sharing that Redis (`_redis_relay.py`), which deliver it to
their own members. Local delivery never waits for Redis, so an outage only cuts the other
processes off, never this one's members.

Slow members: each connection's outbox is bounded. A member `max_queue` messages behind is
disconnected with close code 1008 ("client too slow") and the others go on; that is logged.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final

from starlette.types import Message

from ._bridge import Channel, Queued, wake_writers
from ._events import broadcast_event
from .websocket import AsyncWebSocket, WebSocket

if TYPE_CHECKING:
    from ._redis_relay import RedisRelay

__all__ = ["HUB_URL_VARIABLE", "Hub"]

#: The environment variable `App()` reads the hub's backend from when `hub` is not given.
HUB_URL_VARIABLE: Final = "CELLO_HUB_URL"

#: Messages a member may have queued before the hub disconnects it (1008).
DEFAULT_MAX_QUEUE: Final = 1024

logger = logging.getLogger("cello.hub")

_WAKE, _TOO_SLOW = Queued.WAKE, Queued.TOO_SLOW  # globals: read once per member reached

Member = WebSocket | AsyncWebSocket


def _channel_of(ws: Member) -> Channel:
    if not isinstance(ws, WebSocket | AsyncWebSocket):
        raise TypeError(f"expected a WebSocket, not {type(ws).__name__}")
    return ws._channel


class Hub:
    """Groups of WebSocket connections and broadcasts to them; `app.hub` of every `App`.

    Every method may be called from any thread: a sync handler's, an `async def`
    handler's (on the event loop: `broadcast` never blocks, `abroadcast` is its awaitable
    twin), or a thread the app started.

    Args:
        url: `None` for the in-memory hub (this process only), or a Redis URL
            (`redis://host:port/db`) shared by every process that should see the
            broadcasts. Needs the `redis` extra: `pip install cello[redis]`.
        max_queue: Messages a member may have waiting before it is disconnected with 1008.
        channel_prefix: Prefix of the Redis pub/sub channels (one per group), so several
            apps can share one Redis.
        connect_timeout: How long startup waits for the Redis subscription. An
            unreachable Redis does not stop the app: that is logged, and the hub keeps
            trying in the background.
        max_pending: Broadcasts held for the other processes while Redis is slow or
            unreachable; past it the oldest are dropped, counted and logged.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        max_queue: int = DEFAULT_MAX_QUEUE,
        channel_prefix: str = "cello:hub:",
        connect_timeout: float = 5.0,
        max_pending: int = 100_000,
    ) -> None:
        if max_queue < 1:
            raise ValueError("max_queue must be at least 1")
        self.url = url
        self.max_queue = max_queue
        self.connect_timeout = connect_timeout
        self._lock = threading.Lock()
        #: group -> its members, replaced (never mutated) on join/leave so a broadcast can
        #: read a group without the lock.
        self._groups: dict[str, tuple[Channel, ...]] = {}
        self._memberships: dict[Channel, set[str]] = {}
        self._relay: RedisRelay | None = None
        if url is not None:
            from ._redis_relay import RedisRelay

            self._relay = RedisRelay(
                url, channel_prefix, self._deliver_relayed, max_pending=max_pending
            )

    @classmethod
    def from_setting(cls, hub: str | Hub | None) -> Hub:
        """The hub `App(hub=...)` asks for: a `Hub`, a URL, or `None` for `CELLO_HUB_URL`
        (in memory when that is unset or empty)."""
        if isinstance(hub, Hub):
            return hub
        if hub is None:
            hub = os.environ.get(HUB_URL_VARIABLE) or None
        return cls(hub)

    @property
    def backend(self) -> str:
        """`"memory"` or `"redis"`."""
        return "memory" if self._relay is None else "redis"

    # ----------------------------------------------------------------- membership

    def join(self, group: str, ws: Member) -> None:
        """Add `ws` to `group` (joining twice does nothing). It leaves when it closes.

        Raises:
            ConnectionClosed: the connection is already closed.
        """
        _check_group(group)
        channel = _channel_of(ws)
        with self._lock:
            channel.check_open()
            groups = self._memberships.setdefault(channel, set())
            if group in groups:
                return
            groups.add(group)
            self._groups[group] = (*self._groups.get(group, ()), channel)

    def leave(self, group: str, ws: Member) -> None:
        """Remove `ws` from `group`; leaving a group one is not in does nothing."""
        _check_group(group)
        channel = _channel_of(ws)
        with self._lock:
            groups = self._memberships.get(channel)
            if groups is None or group not in groups:
                return
            groups.discard(group)
            if not groups:
                del self._memberships[channel]
            self._remove(group, channel)

    def forget(self, channel: Channel) -> None:
        """Remove a closed connection from all its groups (its connection task does this)."""
        with self._lock:
            for group in self._memberships.pop(channel, ()):
                self._remove(group, channel)

    def _remove(self, group: str, channel: Channel) -> None:
        members = tuple(m for m in self._groups.get(group, ()) if m is not channel)
        if members:
            self._groups[group] = members
        else:
            self._groups.pop(group, None)

    def count(self, group: str) -> int:
        """How many connections of this process are in `group`."""
        return len(self._groups.get(group, ()))

    def groups(self) -> list[str]:
        """The groups with at least one member in this process."""
        return list(self._groups)

    # ----------------------------------------------------------------- broadcasting

    def broadcast(
        self,
        group: str,
        message: str | bytes | dict[str, Any] | list[Any],
        exclude: Member | Iterable[Member] | None = None,
    ) -> None:
        """Send `message` to every member of `group`, in every process sharing the hub.

        `str` goes as a text frame, `bytes` as binary, a `dict` or `list` as JSON text.
        `exclude` (a connection or several, typically the sender) is skipped in this
        process. Returns once the message is queued for this process's members and handed
        to the relay; it never waits for a member, so it is safe on the event loop too.
        Messages one thread broadcasts reach each member in the order broadcast.

        Raises:
            ValueError: `message` is text that is not valid Unicode (a lone surrogate, as
                `json.loads` gives for `"\\ud800"`): it reaches no member, and none of them
                is affected.
            TypeError: `message` is of another type.
        """
        _check_group(group)
        event = broadcast_event(message)
        excluded = _excluded(exclude)
        self._deliver(group, event, excluded)
        if self._relay is not None:
            self._relay.publish(group, event)

    async def abroadcast(
        self,
        group: str,
        message: str | bytes | dict[str, Any] | list[Any],
        exclude: Member | Iterable[Member] | None = None,
    ) -> None:
        """`broadcast` for `async def` handlers (it never blocks, so this only calls it)."""
        self.broadcast(group, message, exclude)

    def _deliver(self, group: str, event: Message, excluded: frozenset[Channel]) -> None:
        """Queue `event` for this process's members of `group`, waking writers in one hop."""
        members = self._groups.get(group)
        if not members:
            return
        limit = self.max_queue
        to_wake: list[Channel] = []
        for channel in members:
            if channel in excluded:
                continue
            outcome = channel.enqueue(event, limit)
            if outcome is _WAKE:
                to_wake.append(channel)
            elif outcome is _TOO_SLOW:
                logger.warning(
                    "Disconnected a member of group %r with 1008: %d messages behind",
                    group,
                    limit,
                )
                self.forget(channel)
        wake_writers(to_wake)

    def _deliver_relayed(self, group: str, event: Message) -> None:
        """A broadcast from another process, on the event loop."""
        self._deliver(group, event, frozenset())

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Connect the relay, if any (the app's lifespan does this)."""
        if self._relay is not None:
            await self._relay.start(self.connect_timeout)

    async def stop(self) -> None:
        """Stop the relay: send what is pending, end its tasks, close its connections."""
        if self._relay is not None:
            await self._relay.stop()

    @property
    def connected(self) -> bool:
        """Whether broadcasts from other processes reach this one now (the Redis
        subscription is up); always true for the in-memory hub. Fit for a health check."""
        return self._relay is None or self._relay.subscribed

    @property
    def running(self) -> bool:
        """Whether the relay (if any) is running; always true for the in-memory hub."""
        return self._relay is None or self._relay.running


def _check_group(group: str) -> None:
    if not isinstance(group, str) or not group:
        raise TypeError("a group name is a non-empty str")


def _excluded(exclude: Member | Iterable[Member] | None) -> frozenset[Channel]:
    if exclude is None:
        return frozenset()
    if isinstance(exclude, WebSocket | AsyncWebSocket):
        return frozenset((exclude._channel,))
    return frozenset(_channel_of(ws) for ws in exclude)
