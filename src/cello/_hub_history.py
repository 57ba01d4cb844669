"""The hub's side of the shared history on Redis: delivering numbered broadcasts here.

`_redis_history.py` says how broadcasts are kept in a stream per group and why every
process, the publishing one too, delivers them as they come back from Redis. This module
delivers them to this process's members, once each and in stream order, through the two
moments a member could miss one or get one twice:

* A member that joins with `resumable=True` is *waiting* until its replay (or its
  position) has been read from Redis: what arrives live meanwhile is kept for it, and
  comes after the replay, minus what the replay had. Its replay may run ahead of what
  this process has delivered (an entry added but not yet heard here): its *floor* makes
  live delivery skip what it already has.
* After the subscription is made again, each group is *held* while what was added since
  its last delivered id is read from the stream, then that is delivered, then what
  arrived meanwhile; ids drop the overlap.

Every change happens under the hub's lock, in the same critical sections as its
membership, so a member joining or leaving never races a delivery.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ._events import notice_event, relayed_event
from ._history import Entry, envelope_field, marker_text
from ._redis_history import Replay, Stored, StreamId, after, parse_id, resume
from ._redis_relay import FIRST_RETRY, LAST_RETRY

if TYPE_CHECKING:
    from ._bridge import Recipient
    from ._redis_relay import RedisRelay
    from .hub import Hub, _Told

logger = logging.getLogger("cello.hub")


class _Tail:
    """One group's delivery here: the last id delivered, and who or what waits."""

    __slots__ = ("floors", "held", "last", "waiting")

    def __init__(self) -> None:
        self.last: StreamId | None = None
        self.held: list[Stored] | None = None  # while catching up after a resubscription
        self.waiting: dict[Recipient, list[Stored]] = {}  # members whose replay is read
        self.floors: dict[Recipient, StreamId] = {}  # members whose replay ran ahead


class SharedHistory:
    """The numbered deliveries of a `Hub` on Redis with `history` (see the module)."""

    def __init__(self, hub: Hub, relay: RedisRelay) -> None:
        self._hub = hub
        self._relay = relay
        self._tails: dict[str, _Tail] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._client: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # ----------------------------------------------------------------- under the lock

    def joined(self, group: str, channel: Recipient, resumable: bool, since: str | None) -> None:
        """A member of this process joined (the hub holds its lock)."""
        tail = self._tails.get(group)
        if tail is None:
            tail = self._tails[group] = _Tail()
        if resumable:
            tail.waiting[channel] = []
            self._spawn(self._replay(group, channel, since), channel)

    def left(self, group: str, channel: Recipient) -> None:
        """A member of this process left (the hub holds its lock)."""
        tail = self._tails.get(group)
        if tail is None:
            return
        tail.waiting.pop(channel, None)
        tail.floors.pop(channel, None)
        if group not in self._hub._groups:
            del self._tails[group]

    def _deliver(
        self,
        group: str,
        tail: _Tail,
        entry: Stored,
        excluded: Iterable[Recipient],
        told: _Told,
    ) -> None:
        """Queue one numbered broadcast for the group's members here."""
        if tail.last is not None and entry.key <= tail.last:
            return  # delivered already (a catch-up overlapping what came live)
        tail.last = entry.key
        hub = self._hub
        members = hub._groups.get(group)
        if not members:
            return
        skip = set(excluded)
        for channel, kept in tail.waiting.items():
            kept.append(entry)
            skip.add(channel)
        if tail.floors:
            for channel, floor in list(tail.floors.items()):
                if entry.key <= floor:
                    skip.add(channel)
                else:
                    del tail.floors[channel]
        hub._queue_numbered(group, members, _entry(entry), frozenset(skip), told)

    # ----------------------------------------------------------------- on the loop

    def deliver(
        self, group: str, id_text: str, kind: bytes, body: bytes, excluded: Iterable[Recipient]
    ) -> bool:
        """A numbered broadcast from the subscription; whether some member is behind."""
        key = parse_id(id_text)
        if key is None:
            raise ValueError(f"a broadcast with a malformed id: {id_text!r}")
        entry = Stored(id_text, key, kind, body)
        hub = self._hub
        told = hub._new_told()
        with hub._lock:
            tail = self._tails.get(group)
            if tail is None:
                return False  # no member here
            if tail.held is not None:
                tail.held.append(entry)
                return False
            self._deliver(group, tail, entry, excluded, told)
        hub._finish(told)
        return told.behind

    def subscribed(self) -> None:
        """The relay's subscription is made (again), on the loop."""
        self._loop = asyncio.get_running_loop()

    def group_subscribed(self, group: str) -> None:
        """`group`'s subscription is made (again), on the loop: catch it up from its last
        delivered id, holding what arrives live meanwhile."""
        self._loop = asyncio.get_running_loop()
        with self._hub._lock:
            tail = self._tails.get(group)
            if tail is not None and tail.last is not None and tail.held is None:
                tail.held = []
                self._spawn(self._catch_up(group, tail))

    def _spawn(self, coroutine: Any, channel: Recipient | None = None) -> None:
        """Start a task on the relay's loop, from any thread."""
        loop = self._loop if channel is None else channel._loop
        assert loop is not None

        def start() -> None:
            task = loop.create_task(coroutine)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        if channel is not None:
            channel._on_loop(start)
        else:
            start()

    async def _read(self, what: str, read: Any) -> Any:
        """`read()` against Redis, retried with backoff while Redis is unreachable."""
        delay = FIRST_RETRY
        while True:
            try:
                if self._client is None:
                    self._client = self._relay.client()
                return await read(self._client)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - an outage or not, retried the same way
                logger.warning("Hub: reading %s from Redis failed (%s); retrying", what, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, LAST_RETRY)

    async def _replay(self, group: str, channel: Recipient, since: str | None) -> None:
        """Read a resuming member's replay, then send it what it missed, in order."""
        # Broadcasts added from the moment the group's subscription is confirmed reach
        # this process live; read the replay after that, so none falls in between.
        await self._relay.wait_watched(group)
        stream = self._relay.stream_key(group)
        size = self._relay.history
        replay: Replay = await self._read(
            f"the history of {group!r}", lambda client: resume(client, stream, since, size)
        )
        hub = self._hub
        told = hub._new_told()
        with hub._lock:
            tail = self._tails.get(group)
            kept = tail.waiting.pop(channel, None) if tail is not None else None
            if tail is None or kept is None:
                return  # it left meanwhile
            entries = list(replay.entries)
            newest, at = parse_id(replay.at), replay.at
            for entry in kept:  # what came live while the replay was read
                if newest is not None and entry.key <= newest:
                    continue  # in the replay already, or before `since`
                entries.append(entry)
                newest, at = entry.key, entry.id
            if newest is not None and (tail.last is None or newest > tail.last):
                tail.floors[channel] = newest
            hub._queue_replay(group, channel, replay.gap, map(_entry, entries), at, told)
        hub._finish(told)

    async def _catch_up(self, group: str, tail: _Tail) -> None:
        """Deliver what `group` added while the subscription was down, then what was held."""
        last = tail.last
        assert last is not None
        stream = self._relay.stream_key(group)
        size = self._relay.history
        missed: tuple[list[Stored], bool] = await self._read(
            f"what {group!r} missed", lambda client: after(client, stream, last, size)
        )
        entries, gap = missed
        hub = self._hub
        told = hub._new_told()
        with hub._lock:
            held, tail.held = tail.held or [], None
            if self._tails.get(group) is not tail:
                return  # every member left meanwhile
            resumers = hub._resumers.get(group)
            if gap and resumers:
                text = marker_text("gap", json.dumps(group))
                hub._queue(group, resumers, notice_event(text), frozenset(), told)
            for entry in [*entries, *held]:
                self._deliver(group, tail, entry, (), told)
        if gap:
            logger.warning(
                "Hub: some broadcasts to %r while the subscription was down are no longer "
                "kept (more than history=%d); members here missed them",
                group,
                size,
            )
        hub._finish(told)

    async def stop(self) -> None:
        """End the reading tasks and the client."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        client, self._client = self._client, None
        if client is not None:
            try:
                await client.aclose()
            except Exception:  # already broken: that is fine at shutdown
                logger.debug("Hub: closing the history client failed", exc_info=True)


def _entry(stored: Stored) -> Entry:
    """A broadcast read from Redis as the hub queues it (its number is not used)."""
    event = relayed_event(stored.kind, stored.body)
    return Entry(0, stored.id, event, envelope_field(event, stored.kind == b"j"))
