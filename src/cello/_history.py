"""The in-memory hub's history: each group's last broadcasts, with ids, for resuming clients.

A client that reconnects says where it stopped (`since`, the id of the last broadcast it
received, or the position the hub gave it when it joined); the hub replays what the group
broadcast after that, then goes on live. This module keeps what is replayed and decides
whether a position can be resumed exactly, or whether something after it is no longer kept
(a *gap*: the client is told, then given what is kept).

Ids are `"<epoch>-<n>"`: `epoch` is this history's creation time (µs), so a position from
before a restart, or from another process, is never mistaken for one of this history's;
`n` counts every broadcast kept in any group, so ids only grow, even for a group whose
history expired and started again.

Kept per group: the last `size` broadcasts, for `ttl` seconds after the group's last one
(so groups that are done with do not hold memory forever). What was dropped is recorded
as the highest `n` dropped, which is all a gap needs: a position before it may have
missed something. Per group while its history lives; for an expired history, per group
name for the last `REMEMBERED_EXPIRIES` expiries, and past those, one hub-wide number
(so a position older than a forgotten expiry is a gap, possibly a needless one).

Thread safety: not locked here; the hub calls every method under its lock.
"""

from __future__ import annotations

import base64
import json
import time
from collections import OrderedDict, deque
from typing import Any, Final, NamedTuple

from starlette.types import Message

#: The longest position a client may send that is looked at (longer ones are a gap).
MAX_POSITION_LENGTH: Final = 64
#: Expired histories whose last number is remembered by group name.
REMEMBERED_EXPIRIES: Final = 100_000


class Entry(NamedTuple):
    """One broadcast as kept: its number, id, ASGI event and the envelope's value field."""

    n: int
    id: str
    event: Message
    #: `"data":<JSON>` or `"binary":"<base64>"`: the envelope's field for the message.
    field: str


class _Kept:
    """One group's history."""

    __slots__ = ("entries", "started", "touched", "trimmed")

    def __init__(self, started: int, now: float) -> None:
        self.entries: deque[Entry] = deque()
        #: This history holds every broadcast of its group numbered above `started`
        #: (but those trimmed); any before may be gone.
        self.started = started
        self.trimmed = 0  # the highest `n` trimmed away (0: none)
        self.touched = now


class Resumed(NamedTuple):
    """What `History.resume` found: the entries to replay, and whether there is a gap."""

    entries: list[Entry]
    gap: bool


def envelope_field(event: Message, is_json: bool) -> str:
    """The envelope's value field for a broadcast: JSON (a dict or list broadcast, as it
    is), a JSON string (text), or base64 (binary)."""
    text = event.get("text")
    if text is None:
        return '"binary":"' + base64.b64encode(event["bytes"]).decode() + '"'
    return '"data":' + (text if is_json else json.dumps(text))


class History:
    """Every group's recent broadcasts (see the module's docstring)."""

    def __init__(self, size: int, ttl: float) -> None:
        if size < 1:
            raise ValueError("the history size must be at least 1")
        if not ttl > 0:
            raise ValueError("the history ttl must be positive")
        self.size = size
        self.ttl = ttl
        self.epoch = str(time.time_ns() // 1000)
        self._n = 0
        self._groups: OrderedDict[str, _Kept] = OrderedDict()  # least recently used first
        #: group -> the last number of its expired history (oldest expiry first).
        self._expired: OrderedDict[str, int] = OrderedDict()
        self._forgotten = 0  # the highest number of an expiry no longer remembered

    def position(self) -> str:
        """The id of "now": resuming from it replays what is broadcast from here on."""
        return f"{self.epoch}-{self._n}"

    def add(self, group: str, event: Message, is_json: bool) -> Entry:
        """Keep a broadcast (trimming and expiring as needed); its entry, with its id."""
        now = time.monotonic()
        self._expire(now)
        self._n += 1
        n = self._n
        entry = Entry(n, f"{self.epoch}-{n}", event, envelope_field(event, is_json))
        kept = self._groups.get(group)
        if kept is None:
            started = self._expired.pop(group, self._forgotten)
            kept = self._groups[group] = _Kept(started, now)
        else:
            self._groups.move_to_end(group)
            kept.touched = now
        entries = kept.entries
        entries.append(entry)
        if len(entries) > self.size:
            kept.trimmed = entries.popleft().n
        return entry

    def resume(self, group: str, since: str) -> Resumed:
        """What `group` broadcast after position `since`, and whether some of it is gone.

        A position this history never gave (malformed, from another process or before a
        restart, or ahead of it) is a gap: the client is told, and given all that is kept.
        """
        self._expire(time.monotonic())
        kept = self._groups.get(group)
        entries = list(kept.entries) if kept is not None else []
        n = self._parse(since)
        if n is None:
            return Resumed(entries, True)
        if kept is None:
            return Resumed([], n < self._expired.get(group, self._forgotten))
        gap = n < kept.trimmed or n < kept.started
        return Resumed([e for e in entries if e.n > n], gap)

    def _parse(self, since: str) -> int | None:
        """The count in a position of this history, or `None`."""
        if not isinstance(since, str) or len(since) > MAX_POSITION_LENGTH:
            return None
        epoch, _, count = since.partition("-")
        if epoch != self.epoch or not count.isdigit() or not count.isascii():
            return None
        n = int(count)
        return n if n <= self._n else None

    def _expire(self, now: float) -> None:
        """Drop the histories of groups with no broadcast for `ttl` seconds."""
        groups = self._groups
        while groups:
            group, kept = next(iter(groups.items()))
            if now - kept.touched < self.ttl:
                return
            del groups[group]
            expired = self._expired
            expired[group] = max(kept.entries[-1].n, kept.started)
            if len(expired) > REMEMBERED_EXPIRIES:
                _, last = expired.popitem(last=False)
                self._forgotten = max(self._forgotten, last)

    def __len__(self) -> int:
        """How many groups have a history now."""
        return len(self._groups)


def envelope_text(group_json: str, entry: Entry) -> str:
    """A broadcast as a member that resumes receives it: `{"id", "group", "data"}`."""
    return f'{{"id":"{entry.id}","group":{group_json},{entry.field}}}'


def marker_text(kind: str, group_json: str, extra: dict[str, Any] | None = None) -> str:
    """The hub's notices to resuming members: `{"hub": kind, "group": ..., ...}`."""
    text = f'{{"hub":"{kind}","group":{group_json}'
    if extra:
        text += "," + json.dumps(extra, separators=(",", ":"))[1:-1]
    return text + "}"
