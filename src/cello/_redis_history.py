"""The Redis hub's history: a Redis Stream per group, shared by every process.

With `Hub(url, history=N)` a broadcast is not delivered straight to this process's
members: the publisher adds it to its group's stream and publishes it with the id Redis
gave it, in one Lua script (`ADD`), and every process (this one too) delivers it when it
comes back on the subscription. So every member everywhere sees a group's broadcasts in
one order, with one id each, and a client can resume on any process from the last id it
saw: the ids are the stream's.

Exactly once, in order, through outages:
* The publisher numbers its broadcasts (`seq`), and the script adds one only if this
  process's last added number is lower. So a batch whose reply was lost (Redis went away
  mid-pipeline) is sent again, and what already got in is not added twice: nothing a
  process accepted is lost while the process lives and Redis comes back.
* Pub/sub keeps nothing, so what is published while a process's subscription is down
  would be missed; the stream has it. When the subscription is made again the hub reads,
  for each group it has members in, what was added after the last id it delivered
  (`after`), and delivers that first, holding what arrives live meanwhile; ids dedupe the
  overlap.
* A member that resumes (`since`) is held the same way while its replay is read
  (`resume`): what arrives live meanwhile waits, then comes after the replay, minus what
  the replay had.

A stream keeps about `N` entries (`MAXLEN ~`, at least `N`) and expires `ttl` after its
last broadcast. Stream ids are `"<ms>-<n>"` and compare as pairs of integers.
"""

from __future__ import annotations

from typing import Any, Final, NamedTuple

try:
    from redis.exceptions import ResponseError
except ImportError:  # pragma: no cover - depends on the install (the Redis hub needs it)
    ResponseError = Exception  # type: ignore[assignment,misc]

#: Adds one broadcast to its group's stream and publishes it with its id, unless this
#: process already added it (a batch sent again after a lost reply).
#: KEYS: the stream, this process's last-added number. ARGV: channel, origin (16 bytes),
#: number, token (see `Hub`), kind and body, max length, ttl (ms).
ADD: Final = """
local seq = tonumber(ARGV[3])
if seq <= tonumber(redis.call('GET', KEYS[2]) or '0') then return 0 end
redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[7])
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[6], '*', 'm', ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[7])
redis.call('PUBLISH', ARGV[1], ARGV[2] .. 'h' .. id .. ' ' .. ARGV[4] .. ' ' .. ARGV[5])
return 1
"""

#: The longest `since` a client may send that is looked at (longer ones are a gap).
MAX_POSITION_LENGTH: Final = 64

#: The position of an empty stream: resuming from it replays everything kept.
START: Final = "0-0"

StreamId = tuple[int, int]


def parse_id(text: str | bytes) -> StreamId | None:
    """A stream id as a pair of integers, or `None` for text that is not one."""
    if isinstance(text, bytes):
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError:
            return None
    if not isinstance(text, str) or len(text) > MAX_POSITION_LENGTH:
        return None
    ms, dash, n = text.partition("-")
    if not dash or not (ms.isascii() and ms.isdigit() and n.isascii() and n.isdigit()):
        return None
    return int(ms), int(n)


class Stored(NamedTuple):
    """One broadcast read from a stream: its id, and its kind and body (`t`, `j`, `b`)."""

    id: str
    key: StreamId
    kind: bytes
    body: bytes


class Replay(NamedTuple):
    """What a member resuming from a position is sent: a gap or not, then `entries`;
    `at` is the newest id among them, or the stream's newest if there are none."""

    entries: list[Stored]
    gap: bool
    at: str


def _stored(raw: list[Any]) -> list[Stored]:
    """XRANGE/XREVRANGE's reply as `Stored` entries, oldest first (`raw` in that order)."""
    entries = []
    for raw_id, fields in raw:
        text = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
        key = parse_id(text)
        message = fields.get(b"m") if isinstance(fields, dict) else None
        if key is None or not isinstance(message, bytes) or not message:
            continue  # not an entry of ours (a key someone else wrote): skipped
        entries.append(Stored(text, key, message[:1], message[1:]))
    return entries


async def resume(client: Any, stream: bytes, since: str | None, size: int) -> Replay:
    """What `stream` holds after `since` (at most `size` entries), for a member resuming.

    `None`: nothing to replay, only the position. A position that is in the stream gives
    exactly what follows it. One that is not (trimmed away, the stream expired or lost in
    a Redis restart without persistence, an id never given, any other text) is a gap,
    with the last `size` entries. `START` (given for an empty stream) is exact while
    nothing was trimmed, as far as Redis tells (`entries-added`, Redis 7).
    """
    if since is None:
        newest = _stored(await client.xrevrange(stream, "+", "-", count=1))
        return Replay([], False, newest[0].id if newest else START)
    key = parse_id(since)
    if since == START:
        entries = _stored(await client.xrevrange(stream, "+", "-", count=size + 1))[::-1]
        gap = len(entries) > size or await _trimmed(client, stream)
    elif key is None:
        entries, gap = _stored(await client.xrevrange(stream, "+", "-", count=size))[::-1], True
    else:
        newest_first = _stored(await client.xrevrange(stream, "+", since, count=size + 1))
        entries = newest_first[::-1]
        if entries and entries[0].key == key:
            entries, gap = entries[1:], False
        else:
            gap = True
    entries = entries[-size:]
    if entries:
        return Replay(entries, gap, entries[-1].id)
    if not gap:
        return Replay([], False, since)  # nothing after it: it is the newest
    newest = _stored(await client.xrevrange(stream, "+", "-", count=1))
    return Replay([], True, newest[0].id if newest else START)


async def after(client: Any, stream: bytes, last: StreamId, size: int) -> tuple[list[Stored], bool]:
    """What `stream` added after id `last` (at most `size`, the oldest first), and
    whether some of it is no longer kept: what a process missed while its subscription
    was down."""
    entries = _stored(await client.xrange(stream, f"{last[0]}-{last[1]}", "+", count=size + 1))
    if not entries:
        return [], False
    if entries[0].key == last:
        return entries[1:], False
    return entries[-size:], True


async def _trimmed(client: Any, stream: bytes) -> bool:
    """Whether entries were ever removed from `stream` (Redis 7's `entries-added`)."""
    try:
        info = await client.xinfo_stream(stream)
    except ResponseError:  # no such stream: nothing to miss
        return False
    added = info.get("entries-added")
    return isinstance(added, int) and added > int(info.get("length", 0))
