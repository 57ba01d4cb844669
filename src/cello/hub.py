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

Presence ("who is online"): `join(group, ws, member=...)` gives the connection a value
(a nickname, a small dict: any JSON, at most `max_member_size` bytes) that
`members(group)` lists and `count(group)` counts. The hub keeps a roster of every
member it knows of; on Redis that is every process's (`_presence.py` keeps it in step),
so both answer for the whole deployment, from memory: no round trip, never blocking, the
same call on a thread, in a greenlet or in a coroutine. A connection that joins with
`presence=True` is sent the group's member list, then each change, as JSON text
(`{"presence": "members", "group": ..., "members": [...]}`, then
`{"presence": "join" | "leave", "group": ..., "member": ...}`), queued like broadcasts, so
they arrive in order with what the same thread sends. The list is read, and every change
made and told, under one lock: the list plus the changes after it are always the group as
it is, which a list the handler reads and sends itself cannot promise (a change may slip
in between).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator, Generator, Iterable
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from starlette.types import Message

from ._bridge import Queued, Recipient, note_behind, wake_writers
from ._events import broadcast_event, notice_event
from ._greenlets import await_, current_handler
from ._history import Entry, History, envelope_text, marker_text
from ._hub_stream import StreamMember
from ._presence import Record, member_json, owner_of
from .sse import SseEvent
from .websocket import AsyncWebSocket, WebSocket

if TYPE_CHECKING:
    from ._hub_history import SharedHistory
    from ._presence import RedisPresence
    from ._redis_relay import RedisRelay

__all__ = ["HUB_URL_VARIABLE", "Hub"]

#: The environment variable `App()` reads the hub's backend from when `hub` is not given.
HUB_URL_VARIABLE: Final = "CELLO_HUB_URL"

#: Messages a member may have queued before the hub disconnects it (1008).
DEFAULT_MAX_QUEUE: Final = 1024
#: The largest member value `join` accepts, in bytes of JSON.
DEFAULT_MAX_MEMBER_SIZE: Final = 1024
#: Seconds a group's history outlives its last broadcast.
DEFAULT_HISTORY_TTL: Final = 600.0

logger = logging.getLogger("cello.hub")

# Globals: read once per member reached.
_WAKE, _BEHIND, _TOO_SLOW = Queued.WAKE, Queued.BEHIND, Queued.TOO_SLOW

Connection = WebSocket | AsyncWebSocket

_NONE: frozenset[Recipient] = frozenset()  # no member excluded


class _Seat(NamedTuple):
    """A connection's place in one group: its member id, whether it watches the group, and
    whether it receives broadcasts with ids (it may resume)."""

    id: str
    watching: bool
    resumable: bool = False
    listed: bool = True  # in the roster (`members`, `count`); a stream is not


class _Told:
    """What queueing one event for many members left to do once the lock is released:
    the writers to wake (all in one hop), the members found too far behind, and whether
    some member is getting behind (then a caller on the loop lets it run)."""

    __slots__ = ("behind", "too_slow", "wake")

    def __init__(self) -> None:
        self.wake: list[Recipient] = []
        self.too_slow: list[tuple[str, Recipient]] = []
        self.behind = False


def _channel_of(ws: Connection) -> Recipient:
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
        max_member_size: The largest member value `join` accepts, in bytes of JSON (every
            process holds every member, so this bounds what one client can make them keep).
        presence_interval: On Redis, seconds between this process's heartbeats, and
            between its sweeps for members of processes that stopped beating.
        presence_ttl: On Redis, seconds a heartbeat lasts. The members of a process that
            dies without a clean shutdown (killed, its host lost) are removed within
            `presence_ttl + presence_interval` seconds. At least twice the interval, so
            one late heartbeat does not remove a live process's members.
        history: How many of each group's last broadcasts to keep, with ids, for members
            that resume (`join(..., resumable=True, since=...)`, `stream`); 0 (the
            default) keeps none. At most half of `max_queue` (raise that for more).
            Memory: at most `history` messages per group.
        history_ttl: Seconds a group's history is kept after its last broadcast.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        max_queue: int = DEFAULT_MAX_QUEUE,
        channel_prefix: str = "cello:hub:",
        connect_timeout: float = 5.0,
        max_pending: int = 100_000,
        max_member_size: int = DEFAULT_MAX_MEMBER_SIZE,
        presence_interval: float = 5.0,
        presence_ttl: float = 15.0,
        history: int = 0,
        history_ttl: float = DEFAULT_HISTORY_TTL,
    ) -> None:
        if max_queue < 1:
            raise ValueError("max_queue must be at least 1")
        if max_member_size < 4:
            raise ValueError("max_member_size must be at least 4 (the size of `null`)")
        if not presence_interval > 0:
            raise ValueError("presence_interval must be positive")
        if not presence_ttl >= 2 * presence_interval:
            raise ValueError("presence_ttl must be at least twice presence_interval")
        if not 0 <= history <= max_queue // 2:
            raise ValueError(
                "history must be between 0 and half of max_queue (a resuming member is sent "
                "up to `history` messages at once, and needs room for the live ones after)"
            )
        self.url = url
        self.max_queue = max_queue
        #: In memory, the kept broadcasts (`history > 0`), or `None`; on Redis, the
        #: numbered deliveries from the shared history, or `None`. Under the lock only.
        self._history = History(history, history_ttl) if history and url is None else None
        self._shared: SharedHistory | None = None
        self._resumers: dict[str, tuple[Recipient, ...]] = {}
        #: This process's broadcasts on the shared history that excluded members, by
        #: token, until they come back from Redis (in order: older tokens are dropped).
        self._exclusions: dict[int, frozenset[Recipient]] = {}
        self._tokens = itertools.count(1)
        self._warned_unnumbered = False
        self.connect_timeout = connect_timeout
        self.max_member_size = max_member_size
        self.presence_interval = presence_interval
        self.presence_ttl = presence_ttl
        self._lock = threading.Lock()
        #: group -> its members here, replaced (never mutated) on join/leave so a broadcast
        #: can read a group without the lock. Likewise the members watching each group.
        self._groups: dict[str, tuple[Recipient, ...]] = {}
        self._watchers: dict[str, tuple[Recipient, ...]] = {}
        self._memberships: dict[Recipient, dict[str, _Seat]] = {}
        #: The roster: group -> member id -> record, for every member the hub knows of
        #: (this process's, and on Redis the others'). Changed under the lock only.
        self._present: dict[str, dict[str, Record]] = {}
        self._ids = itertools.count(1)
        self._process = uuid.uuid4().hex
        self._relay: RedisRelay | None = None
        self._presence: RedisPresence | None = None
        if url is not None:
            from ._presence import RedisPresence
            from ._redis_relay import RedisRelay

            self._relay = relay = RedisRelay(
                url,
                channel_prefix,
                self._deliver_relayed,
                max_pending=max_pending,
                history=history,
                history_ttl=history_ttl,
            )
            self._process = relay.origin.hex()
            self._presence = presence = RedisPresence(
                url,
                relay.prefix,
                relay.origin,
                self._process,
                self,
                relay.client,
                interval=presence_interval,
                ttl=presence_ttl,
            )
            relay.set_presence(presence.received, self._subscribed)
            if history:
                from ._hub_history import SharedHistory

                self._shared = shared = SharedHistory(self, relay)
                relay.set_history(self._deliver_numbered, shared.group_subscribed)

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

    @property
    def relay(self) -> RedisRelay | None:
        """The Redis relay (its `subscribed`, `dropped` and `skipped` are what
        `cello.metrics` reports), or `None` for the in-memory hub."""
        return self._relay

    # ----------------------------------------------------------------- membership

    def join(
        self,
        group: str,
        ws: Connection,
        member: Any = None,
        *,
        presence: bool = False,
        resumable: bool = False,
        since: str | None = None,
    ) -> Joined:
        """Add `ws` to `group` (joining twice does nothing). It leaves when it closes.

        On Redis, a process receives the broadcasts of the groups it has members in: the
        first member of a group here subscribes to it, and other processes' broadcasts
        reach the group here once Redis has confirmed that (a round trip). A thread
        handler's `join` waits for that (up to `connect_timeout`; not during an outage,
        when nothing is received anyway); an `async def` handler awaits what it returns,
        `await app.hub.join(...)`, and a greenlet handler calls its `.wait()`, to wait
        the same way (a greenlet does not wait inside `join`: it may hold a lock that
        other handlers on its loop need).

        Args:
            member: What `members(group)` lists for this connection: any JSON value (a
                nickname, a small dict), at most `max_member_size` bytes as JSON.
            presence: Also send this connection the group's member list now,
                `{"presence": "members", "group": ..., "members": [...]}` (itself
                included), then each other member's join and leave as it happens,
                `{"presence": "join" | "leave", "group": ..., "member": ...}`: JSON text.
            resumable: Send this connection the group's broadcasts with their ids, as
                JSON text `{"id": ..., "group": ..., "data": ...}` (`"binary":
                "<base64>"` for bytes), and first `{"hub": "joined", "group": ...,
                "at": ...}`: a position to resume from even before any broadcast.
                Needs `Hub(history=N)`.
            since: Resume from this position (an `id` or `at` the client received, for
                example from `?since=`): the broadcasts after it are sent first, in order,
                then the live ones, each once. If some of them are no longer kept (or
                the position is not one this hub gave), `{"hub": "gap", "group": ...}`
                comes first, then all that is kept. Implies `resumable`. Any text is
                accepted: it comes from the client.

        Raises:
            ConnectionClosed: the connection is already closed.
            TypeError: `member` is not JSON-serializable.
            ValueError: `member` is larger than `max_member_size` (or holds NaN);
                `resumable` on a hub that keeps no history.
        """
        self._join(group, _channel_of(ws), member, presence, resumable, since)
        return self._until_watched(group)

    def _until_watched(self, group: str) -> Joined:
        """Wait until other processes' broadcasts to `group` reach this one, or hand the
        wait to an `async def` caller (see `join`)."""
        relay = self._relay
        if relay is None or relay.watching(group) or not relay.subscribed:
            return _JOINED
        loop = relay.loop
        if loop is None:
            return _JOINED
        waiting = _wait_watched(relay, group, self.connect_timeout)
        if current_handler() is not None:
            # A greenlet handler waits only when it asks (`.wait()`): parked here it
            # could hold one of the app's locks that other handlers of the loop need.
            return Joined(loop.create_task(waiting))
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            return Joined(loop.create_task(waiting))  # an async handler awaits it
        if running is not None:
            waiting.close()  # another loop (a test's, an app's): cannot wait from there
            return _JOINED
        asyncio.run_coroutine_threadsafe(waiting, loop).result()  # a worker thread
        return _JOINED

    def _join(
        self,
        group: str,
        channel: Recipient,
        member: Any,
        presence: bool,
        resumable: bool,
        since: str | None,
        listed: bool = True,
    ) -> None:
        _check_group(group)
        resumable = resumable or since is not None
        history, shared = self._history, self._shared
        if resumable and history is None and shared is None:
            raise ValueError(
                "this hub keeps no history to resume from: create it with "
                "Hub(history=N), N broadcasts kept per group"
            )
        record = Record(time.time(), member_json(member, self.max_member_size))
        with self._lock:
            channel.check_open()
            seats = self._memberships.setdefault(channel, {})
            if group in seats:
                return
            seat = seats[group] = _Seat(
                f"{self._process}.{next(self._ids)}", presence, resumable, listed
            )
            members = self._groups.get(group, ())
            if not members and self._relay is not None:
                self._relay.watch(group)
            self._groups[group] = (*members, channel)
            if presence:
                self._watchers[group] = (*self._watchers.get(group, ()), channel)
            told = _Told()
            if resumable:
                self._resumers[group] = (*self._resumers.get(group, ()), channel)
                if history is not None:
                    self._replay(group, channel, history, since, told)
            if shared is not None:
                shared.joined(group, channel, resumable, since)
            if listed:
                self._present.setdefault(group, {})[seat.id] = record
                self._tell(group, "join", record, told, skip=channel)
                if self._presence is not None:
                    self._presence.joined(group, seat.id, record)
            if presence:
                roster = ",".join(r.member for r in self._listed(group))
                text = f'{{"presence":"members","group":{json.dumps(group)},"members":[{roster}]}}'
                self._queue(group, (channel,), notice_event(text), _NONE, told)
        self._finish(told)

    def leave(self, group: str, ws: Connection) -> None:
        """Remove `ws` from `group`; leaving a group one is not in does nothing."""
        _check_group(group)
        channel = _channel_of(ws)
        with self._lock:
            seats = self._memberships.get(channel)
            if seats is None or group not in seats:
                return
            seat = seats.pop(group)
            if not seats:
                del self._memberships[channel]
            told = _Told()
            self._remove(group, channel, seat, told)
        self._finish(told)

    def forget(self, channel: Recipient) -> None:
        """Remove a closed connection from all its groups (its connection task does this)."""
        told = _Told()
        with self._lock:
            for group, seat in self._memberships.pop(channel, {}).items():
                self._remove(group, channel, seat, told)
        self._finish(told)

    def _remove(self, group: str, channel: Recipient, seat: _Seat, told: _Told) -> None:
        """Take a member of this process out of `group` (under the lock)."""
        members = tuple(m for m in self._groups.get(group, ()) if m is not channel)
        if members:
            self._groups[group] = members
        else:
            self._groups.pop(group, None)
            if self._relay is not None:
                self._relay.unwatch(group)
        if seat.watching:
            watchers = tuple(m for m in self._watchers.get(group, ()) if m is not channel)
            if watchers:
                self._watchers[group] = watchers
            else:
                self._watchers.pop(group, None)
        if seat.resumable:
            resumers = tuple(m for m in self._resumers.get(group, ()) if m is not channel)
            if resumers:
                self._resumers[group] = resumers
            else:
                self._resumers.pop(group, None)
        if self._shared is not None:
            self._shared.left(group, channel)
        if not seat.listed:
            return
        record = self._unlist(group, seat.id)
        if self._presence is not None:
            self._presence.left(group, seat.id)
        if record is not None:
            self._tell(group, "leave", record, told)

    def _unlist(self, group: str, member_id: str) -> Record | None:
        """Remove a member from the roster (under the lock); its record, if it was there."""
        present = self._present.get(group)
        if present is None:
            return None
        record = present.pop(member_id, None)
        if not present:
            del self._present[group]
        return record

    def members(self, group: str) -> list[Any]:
        """The member values of `group`'s members, in the order they joined.

        On Redis, every process's members: answered from this process's roster, which
        follows the others within the time a Redis message takes (a few ms). During a
        Redis outage it shows this process's members as they are and the others' as last
        known; nothing is raised.
        Never blocks, so it may be called on the event loop too. Each call returns new
        values: changing them changes nothing in the hub.
        """
        _check_group(group)
        with self._lock:
            records = self._listed(group)
        return [json.loads(record.member) for record in records]

    def _listed(self, group: str) -> list[Record]:
        """The group's members in the order they joined (under the lock)."""
        present = self._present.get(group, {})
        return [present[i] for i in sorted(present, key=lambda i: (present[i].joined_at, i))]

    def count(self, group: str) -> int:
        """How many connections are in `group`: in every process on Redis (as `members`)."""
        return len(self._present.get(group, ()))

    def local_count(self, group: str) -> int:
        """How many connections of this process are in `group`."""
        return len(self._groups.get(group, ()))

    def groups(self) -> list[str]:
        """The groups with at least one member in this process."""
        return list(self._groups)

    # ----------------------------------------------------------------- presence

    def _tell(
        self, group: str, change: str, record: Record, told: _Told, skip: Recipient | None = None
    ) -> None:
        """Queue a join or leave for the group's watchers but `skip` (under the lock, so
        they learn of changes in the order the roster made them)."""
        watchers = self._watchers.get(group)
        if not watchers:
            return
        text = f'{{"presence":"{change}","group":{json.dumps(group)},"member":{record.member}}}'
        excluded = frozenset() if skip is None else frozenset((skip,))
        self._queue(group, watchers, notice_event(text), excluded, told)

    def local_presence(self) -> list[tuple[str, str, Record]]:
        """This process's members, `(group, member id, record)` (for `_presence.py`)."""
        with self._lock:
            return [
                (group, seat.id, self._present[group][seat.id])
                for seats in self._memberships.values()
                for group, seat in seats.items()
                if seat.listed
            ]

    def remote_changed(self, group: str, member_id: str, record: Record | None) -> None:
        """Another process's member joined or left (from `_presence.py`, on the loop)."""
        with self._lock:
            told = _Told()
            if record is None:
                old = self._unlist(group, member_id)
                if old is not None:
                    self._tell(group, "leave", old, told)
            else:
                present = self._present.setdefault(group, {})
                if member_id in present:
                    return
                present[member_id] = record
                self._tell(group, "join", record, told)
        self._finish(told)

    def remote_replaced(self, records: dict[tuple[str, str], Record]) -> None:
        """The other processes' members are now `records` (a roster loaded from Redis):
        what differs from the roster is changed, and the watchers told."""
        told = _Told()
        with self._lock:
            for group, present in list(self._present.items()):
                for member_id, record in list(present.items()):
                    if owner_of(member_id) == self._process:
                        continue
                    if records.get((group, member_id)) != record:
                        self._unlist(group, member_id)
                        self._tell(group, "leave", record, told)
            for (group, member_id), record in records.items():
                present = self._present.setdefault(group, {})
                if member_id not in present:
                    present[member_id] = record
                    self._tell(group, "join", record, told)
        self._finish(told)

    def _forget_remote(self) -> None:
        """Drop the other processes' members from the roster (stopped: no longer followed)."""
        with self._lock:
            for group, present in list(self._present.items()):
                for member_id in [m for m in present if owner_of(m) != self._process]:
                    self._unlist(group, member_id)

    # ----------------------------------------------------------------- broadcasting

    def broadcast(
        self,
        group: str,
        message: str | bytes | dict[str, Any] | list[Any],
        exclude: Connection | Iterable[Connection] | None = None,
    ) -> None:
        """Send `message` to every member of `group`, in every process sharing the hub.

        `str` goes as a text frame, `bytes` as binary, a `dict` or `list` as JSON text.
        `exclude` (a connection or several, typically the sender) is skipped in this
        process. Returns once the message is queued for this process's members and handed
        to the relay; it never waits for a member, so it is safe on the event loop too.
        Messages one thread broadcasts reach each member in the order broadcast. (An
        `async def` handler broadcasting in a loop should `await abroadcast(...)`, which
        lets the members' writers run when they fall behind; `broadcast` cannot.)

        Raises:
            ValueError: `message` is text that is not valid Unicode (a lone surrogate, as
                `json.loads` gives for `"\\ud800"`): it reaches no member, and none of them
                is affected.
            TypeError: `message` is of another type.
        """
        if self._broadcast(group, message, exclude):
            # A greenlet handler runs on the loop's thread: while it runs, no writer can
            # send. Looping over messages its client already sent (`recv` then returns
            # without waiting) it would queue broadcasts until members were dropped as too
            # slow: its next `recv` lets the loop run once first.
            note_behind()

    async def abroadcast(
        self,
        group: str,
        message: str | bytes | dict[str, Any] | list[Any],
        exclude: Connection | Iterable[Connection] | None = None,
    ) -> None:
        """`broadcast` for `async def` handlers.

        It never waits for a member either; but when some member is getting behind, it
        lets the loop run once, so the writers can catch up with a handler that
        broadcasts in a loop without ever waiting (its client's messages already read).
        """
        if self._broadcast(group, message, exclude):
            await asyncio.sleep(0)

    async def stream(self, group: str, since: str | None = None) -> AsyncIterator[SseEvent]:
        """`group`'s broadcasts as Server-Sent Events: `Response.sse(app.hub.stream(group))`.

        Each broadcast is an event whose `id` is its id in the history: text as it is,
        a dict or list as JSON, bytes as base64 in an event named `binary`. The stream
        starts with an event named `joined` (data `{"group": ..., "at": ...}`) whose id
        is the position, so a browser's `EventSource` has one to resume from even before
        the first broadcast; it sends it back as the `Last-Event-ID` header when it
        reconnects, which is what `since` takes:

            @app.get("/rooms/{room}/events")
            def events(request):
                since = request.headers.get("last-event-id")
                return Response.sse(app.hub.stream(request.params["room"], since=since))

        Resuming works as for `join(..., since=...)`: the broadcasts after `since`, each
        once, or first an event named `gap`. A stream is a member of the group for
        delivery (`local_count` counts it) but not in the roster (`members`, `count`).
        One that falls `max_queue` broadcasts behind is ended, as a WebSocket member
        would be closed. Needs `Hub(history=N)`. Ends when the client goes away (the
        response closes it) or the app shuts down.
        """
        member = StreamMember(asyncio.get_running_loop())
        self._join(group, member, None, False, True, since, listed=False)
        try:
            while events := await member.take():
                for event in events:
                    yield _sse_event(event["text"])
        finally:
            member.close()
            self.forget(member)

    def _broadcast(
        self,
        group: str,
        message: str | bytes | dict[str, Any] | list[Any],
        exclude: Connection | Iterable[Connection] | None,
    ) -> bool:
        """Deliver here and hand to the relay; whether some member here is getting behind."""
        _check_group(group)
        event = broadcast_event(message)
        is_json = isinstance(message, dict | list)
        excluded = _excluded(exclude)
        if self._shared is not None:
            # Delivered here too when it comes back from Redis, with its id.
            assert self._relay is not None
            token = 0
            if excluded:
                with self._lock:
                    token = next(self._tokens)
                    self._exclusions[token] = excluded
            self._relay.publish(group, event, is_json, token)
            return False
        behind = self._deliver(group, event, excluded, is_json)
        if self._relay is not None:
            self._relay.publish(group, event, is_json)
        return behind

    def _deliver(
        self,
        group: str,
        event: Message,
        excluded: frozenset[Recipient],
        is_json: bool = False,
    ) -> bool:
        """Queue `event` for this process's members of `group`, waking writers in one hop;
        whether some member is more than `OUTBOX_LIMIT` messages behind."""
        if self._history is not None:
            return self._deliver_kept(group, event, excluded, is_json)
        members = self._groups.get(group)
        if not members:
            return False
        told = _Told()
        self._queue(group, members, event, excluded, told)
        self._finish(told)
        return told.behind

    def _deliver_kept(
        self,
        group: str,
        event: Message,
        excluded: frozenset[Recipient],
        is_json: bool,
    ) -> bool:
        """`_deliver` on a hub with history: the broadcast is kept and given its id, and
        queued, in one critical section with `join`'s replay, so a member that resumes
        gets each broadcast once, from the replay or live, and in id order."""
        assert self._history is not None
        told = _Told()
        with self._lock:
            entry = self._history.add(group, event, is_json)
            members = self._groups.get(group)
            if members:
                self._queue_numbered(group, members, entry, excluded, told)
        self._finish(told)
        return told.behind

    def _queue_numbered(
        self,
        group: str,
        members: tuple[Recipient, ...],
        entry: Entry,
        excluded: frozenset[Recipient],
        told: _Told,
    ) -> None:
        """Queue a broadcast with its id for `members` but `excluded` (under the lock):
        its envelope for the resumable ones, the message itself for the others. The
        shared history on Redis (`_hub_history.py`) delivers through here too."""
        resumers = self._resumers.get(group)
        if resumers:
            enveloped = notice_event(envelope_text(json.dumps(group), entry))
            self._queue(group, resumers, enveloped, excluded, told)
            excluded = excluded.union(resumers)
        self._queue(group, members, entry.event, excluded, told)

    def _replay(
        self,
        group: str,
        channel: Recipient,
        history: History,
        since: str | None,
        told: _Told,
    ) -> None:
        """Queue for a member joining with `resumable` what it missed since `since` (a gap
        notice first if some is gone), then its position (under the lock)."""
        entries: list[Entry] = []
        gap = False
        if since is not None:
            entries, gap = history.resume(group, since)
        self._queue_replay(group, channel, gap, entries, history.position(), told)

    def _queue_replay(
        self,
        group: str,
        channel: Recipient,
        gap: bool,
        entries: Iterable[Entry],
        at: str,
        told: _Told,
    ) -> None:
        """Queue for one resuming member (under the lock): a gap notice if `gap`, the
        broadcasts it missed, then its position `at` (the `joined` notice). Queued at
        once: at most `history` events, half of `max_queue` at most."""
        to = (channel,)
        group_json = json.dumps(group)
        if gap:
            self._queue(group, to, notice_event(marker_text("gap", group_json)), _NONE, told)
        for entry in entries:
            self._queue(group, to, notice_event(envelope_text(group_json, entry)), _NONE, told)
        joined = marker_text("joined", group_json, {"at": at})
        self._queue(group, to, notice_event(joined), _NONE, told)

    def _queue(
        self,
        group: str,
        channels: tuple[Recipient, ...],
        event: Message,
        excluded: frozenset[Recipient],
        told: _Told,
    ) -> None:
        """Queue `event` for `channels` but `excluded`, noting what is left to do in `told`."""
        limit = self.max_queue
        wake = told.wake
        for channel in channels:
            if channel in excluded:
                continue
            outcome = channel.enqueue(event, limit)
            if outcome is _WAKE:
                wake.append(channel)
            elif outcome is _BEHIND:
                told.behind = True
            elif outcome is _TOO_SLOW:
                told.too_slow.append((group, channel))

    def _finish(self, told: _Told) -> None:
        """Wake the writers in one hop; disconnect the members too far behind (outside the
        lock: leaving takes it)."""
        for group, channel in told.too_slow:
            logger.warning(
                "Disconnected a member of group %r with 1008: %d messages behind",
                group,
                self.max_queue,
            )
            self.forget(channel)
        wake_writers(told.wake)

    def _deliver_numbered(
        self, group: str, id_text: str, kind: bytes, body: bytes, token: int
    ) -> bool:
        """A broadcast from the shared history, on the event loop (from the relay)."""
        assert self._shared is not None
        excluded = _NONE
        if token:
            with self._lock:
                exclusions = self._exclusions
                excluded = exclusions.pop(token, _NONE)
                while exclusions and next(iter(exclusions)) < token:
                    del exclusions[next(iter(exclusions))]  # their broadcasts were dropped
        return self._shared.deliver(group, id_text, kind, body, excluded)

    def _subscribed(self) -> None:
        """The relay's subscription is made (again), on the loop."""
        if self._presence is not None:
            self._presence.subscribed()
        if self._shared is not None:
            self._shared.subscribed()

    def _new_told(self) -> _Told:
        return _Told()

    def _deliver_relayed(self, group: str, event: Message, is_json: bool) -> bool:
        """A broadcast from another process, on the event loop; whether some member is
        getting behind (the relay then lets the loop run before the next one)."""
        if self._shared is not None and not self._warned_unnumbered:
            self._warned_unnumbered = True
            logger.warning(
                "Hub: a process whose hub keeps no history broadcasts to %r: its broadcasts "
                "are delivered here without ids, and cannot be resumed; give every process "
                "the same Hub(history=...)",
                group,
            )
        return self._deliver(group, event, _NONE, is_json)

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Connect the relay and the presence, if on Redis (the app's lifespan does this).

        Waits up to `connect_timeout` s in all for the subscription, this process's
        registration and the first load of the roster; what is not done by then is
        logged and goes on in the background.
        """
        if self._relay is None or self._presence is None:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.connect_timeout
        await self._presence.start()  # first: the subscription asks it to load the roster
        await self._relay.start(self.connect_timeout)
        ready = await self._presence.wait_ready(deadline - loop.time())
        if not ready and self._relay.subscribed:
            logger.error(
                "Hub: who is online could not be loaded from Redis within %.0f s; retrying "
                "in the background",
                self.connect_timeout,
            )

    async def stop(self) -> None:
        """Stop the relay and the presence: this process's members leave at once (their
        leave events go out), pending broadcasts are sent, tasks end, connections close."""
        if self._relay is None or self._presence is None:
            return
        await self._presence.stop()
        if self._shared is not None:
            await self._shared.stop()
        await self._relay.stop()
        self._forget_remote()

    @property
    def connected(self) -> bool:
        """Whether broadcasts from other processes reach this one now (the Redis
        subscription is up, for every group with members here); always true for the
        in-memory hub. Fit for a health check."""
        relay = self._relay
        return relay is None or (relay.subscribed and relay.following_all)

    @property
    def running(self) -> bool:
        """Whether the relay and the presence (if on Redis) are running; always true for
        the in-memory hub."""
        return self._relay is None or (
            self._relay.running and self._presence is not None and self._presence.running
        )


def _sse_event(text: str) -> SseEvent:
    """A broadcast or notice for a resuming member (`_history.py`'s JSON) as an SSE event."""
    value = json.loads(text)
    if "hub" in value:  # {"hub": "gap" | "joined", "group": ..., ...}
        kind = value.pop("hub")
        return SseEvent(json.dumps(value), event=kind, id=value.get("at"))
    if "binary" in value:
        return SseEvent(value["binary"], event="binary", id=value["id"])
    data = value["data"]
    return SseEvent(data if isinstance(data, str) else json.dumps(data), id=value["id"])


class Joined:
    """What `Hub.join` returns, to wait until other processes' broadcasts reach the new
    member (on Redis, a round trip after a group's first member here joins).

    An `async def` handler awaits it (`await app.hub.join(...)`); a greenlet handler calls
    `.wait()` (where it holds no lock other handlers need); a thread handler's `join` has
    waited already. In memory, or once subscribed, both return at once.
    """

    __slots__ = ("_task",)

    def __init__(self, task: asyncio.Task[None] | None = None) -> None:
        self._task = task

    def __await__(self) -> Generator[Any, None, None]:
        if self._task is not None:
            yield from self._task.__await__()

    def wait(self) -> None:
        """Wait from a sync handler (see the class).

        Raises:
            RuntimeError: called in an `async def` handler, which awaits it instead.
        """
        task = self._task
        if task is None or task.done():
            return
        if current_handler() is None:
            raise RuntimeError("in an async def handler, await what join() returns")
        await_(task)


_JOINED: Final = Joined()


async def _wait_watched(relay: RedisRelay, group: str, timeout: float) -> None:
    """Wait for `group`'s subscription (never raises: past `timeout` it is logged)."""
    try:
        async with asyncio.timeout(timeout):
            await relay.wait_watched(group)
    except TimeoutError:
        logger.warning(
            "Hub: Redis has not confirmed the subscription to %r within %.0f s; its "
            "broadcasts from other processes reach this one once it does",
            group,
            timeout,
        )


def _check_group(group: str) -> None:
    if not isinstance(group, str) or not group:
        raise TypeError("a group name is a non-empty str")


def _excluded(exclude: Connection | Iterable[Connection] | None) -> frozenset[Recipient]:
    if exclude is None:
        return frozenset()
    if isinstance(exclude, WebSocket | AsyncWebSocket):
        return frozenset((exclude._channel,))
    return frozenset(_channel_of(ws) for ws in exclude)
