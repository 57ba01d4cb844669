"""Who is in each hub group across processes: kept in Redis, mirrored in every process.

Each process writes its own members to Redis and keeps a full copy of everyone's (its
hub's roster), so `members()` and `count()` are answered from memory, on any thread,
without a round trip. The roster follows Redis through change events; this module keeps
the two in step, and keeps members of a process that vanished from staying forever.

What Redis holds (`P` is the hub's channel prefix, `cello:hub:` by default):

* `P presence` (hash): every member of every group. Field `<member id> <group>`, value
  `<joined_at> <member JSON>`. A member id is `<process id>.<n>`, so its owner is known.
* `P presence:owned:<process>` (set): the fields a process owns, to remove them without
  a scan.
* `P presence:alive:<process>`: the process's heartbeat, refreshed every `interval` s and
  expiring `ttl` s after the last refresh.
* `P presence:processes` (set): the processes that own members, for the sweep.
* `P presence:seq`: a counter. Every change increments it and is published with its
  number on the presence's pub/sub channel (`P` itself, kind `p`), which every process
  follows, so a process that reads the changes in order notices when it missed one.

Every change is one Lua script, so a change and its event happen together, and two
processes sweeping the same dead process cannot both announce its members' leaving.
(Scripts name their keys themselves: one Redis server, not a Redis Cluster.)

Keeping Redis right: joins and leaves go to Redis in order, in batches, from one task.
Every `interval` s that task refreshes the heartbeat and sweeps: the members of any
process whose heartbeat has expired are removed and their leaving announced. So a
process killed outright loses its members within `ttl + interval` s. When this
process's heartbeat is found gone (Redis restarted empty, or the process was stalled
past `ttl` and swept), or after any failure, it rewrites all its members at once
(reconcile) rather than replaying what it missed. A clean stop removes them at once.

Keeping the roster right: it is loaded whole (a snapshot and the counter read together)
when the relay subscribes or subscribes again, and then follows the events. An event
whose number is not the next one means some were missed: the roster is loaded again.
Events that arrive while a snapshot is being read are held and applied after it, those
it already contains skipped. As a last resort each tick compares the counter with the
roster's: still behind a whole tick later (an event lost without the subscription
breaking), or ahead of Redis (Redis was reset), it reloads.

Outages: nothing is raised into handlers. Joins and leaves change this process's roster
at once; Redis learns of them by the reconcile once it is back. Meanwhile the roster
shows the other processes' members as last known. After an outage of its own longer
than `ttl`, every process's heartbeat may have expired: a process that reconnects waits
`ttl` s before sweeping, so the others can reconnect and refresh theirs first.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import Callable
from typing import Any, Final, NamedTuple, Protocol

from ._bridge import Mailbox
from ._redis_relay import Outage, redacted

try:
    from redis.exceptions import RedisError
except ImportError:  # pragma: no cover - depends on the install; RedisPresence is not made
    RedisError = OSError  # type: ignore[misc,assignment]

logger = logging.getLogger("cello.hub")

#: Joins and leaves written to Redis in one script call.
BATCH: Final = 256
#: Events held while a snapshot is read; past it they are dropped and the roster reloaded.
MAX_HELD: Final = 100_000

_RESYNC = object()  # the mailbox item that asks for the roster to be loaded again


class Record(NamedTuple):
    """One member of a group: when it joined (the list's order) and its JSON text."""

    joined_at: float
    member: str

    def encode(self) -> bytes:
        return f"{self.joined_at!r} {self.member}".encode()

    @classmethod
    def decode(cls, raw: bytes) -> Record:
        """Parse a value read from Redis; `ValueError` if it is not one of ours."""
        stamp, _, member = raw.decode().partition(" ")
        json.loads(member)  # refuse what is not JSON: it would reach clients as is
        return cls(float(stamp), member)


def member_json(member: Any, limit: int) -> str:
    """`member` as compact JSON text, at most `limit` bytes.

    Raises:
        TypeError: `member` is not JSON-serializable.
        ValueError: it is larger than `limit`, or holds NaN or an infinity (not JSON).
    """
    try:
        text = json.dumps(member, separators=(",", ":"), allow_nan=False)
    except TypeError as exc:
        raise TypeError(f"a member must be JSON-serializable: {exc}") from None
    except ValueError as exc:
        raise ValueError(f"a member must be JSON: {exc}") from None
    if len(text) > limit:  # ASCII-only text: characters are bytes
        raise ValueError(
            f"a member is at most {limit} bytes of JSON (Hub(max_member_size=...)), "
            f"this one is {len(text)}"
        )
    return text


def owner_of(member_id: str) -> str:
    return member_id.partition(".")[0]


def field_of(group: str, member_id: str) -> bytes:
    return member_id.encode() + b" " + group.encode("utf-8", "surrogatepass")


def parse_field(field: bytes) -> tuple[str, str]:
    """`(group, member id)` of a hash field."""
    member_id, _, group = field.partition(b" ")
    return group.decode("utf-8", "surrogatepass"), member_id.decode("ascii")


class Roster(Protocol):
    """What the presence keeps in step with Redis: the hub's view of every member."""

    def local_presence(self) -> list[tuple[str, str, Record]]:
        """This process's members: `(group, member id, record)`."""

    def remote_changed(self, group: str, member_id: str, record: Record | None) -> None:
        """Another process's member joined (`record`) or left (`None`)."""

    def remote_replaced(self, records: dict[tuple[str, str], Record]) -> None:
        """The other processes' members are now exactly these, by `(group, member id)`."""


# Every script starts with these. ARGV: prefix, what precedes an event's number (the
# relay's origin and `p`), this process's id, the heartbeat's lifetime in ms.
_COMMON = """
local P, head, me, ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local members = P .. 'presence'
local processes = P .. 'presence:processes'
local function alive(process) return P .. 'presence:alive:' .. process end
local function owned(process) return P .. 'presence:owned:' .. process end
local function announce(field, body)
  local seq = redis.call('INCR', P .. 'presence:seq')
  redis.call('PUBLISH', P, head .. seq .. ' ' .. body)
end
local function add(process, field, record)
  redis.call('SADD', owned(process), field)
  if redis.call('HSETNX', members, field, record) == 1 then
    announce(field, 'j' .. record .. '\\n' .. field)
  end
end
local function remove(process, field)
  redis.call('SREM', owned(process), field)
  if redis.call('HDEL', members, field) == 1 then
    announce(field, 'l' .. field)
  end
end
"""

#: Joins (`j`, field, record) and leaves (`l`, field) from ARGV[5] on; 0 if this process
#: is not alive (then nothing is written: the caller reconciles).
_APPLY = """
if redis.call('EXISTS', alive(me)) == 0 then return 0 end
local i = 5
while i <= #ARGV do
  if ARGV[i] == 'j' then
    add(me, ARGV[i + 1], ARGV[i + 2])
    i = i + 3
  else
    remove(me, ARGV[i + 1])
    i = i + 2
  end
end
return 1
"""

#: This process's members are exactly the (field, record) pairs from ARGV[5] on.
_RECONCILE = """
redis.call('SET', alive(me), '1', 'PX', ttl)
redis.call('SADD', processes, me)
local wanted = {}
for i = 5, #ARGV, 2 do wanted[ARGV[i]] = ARGV[i + 1] end
for _, field in ipairs(redis.call('SMEMBERS', owned(me))) do
  if wanted[field] == nil then remove(me, field) end
end
for field, record in pairs(wanted) do add(me, field, record) end
return 1
"""

#: Refresh the heartbeat (if it is still there) and, if ARGV[5] is 1, sweep the members of
#: processes whose heartbeat expired. Returns {refreshed, counter}.
_TICK = """
local refreshed = redis.call('SET', alive(me), '1', 'XX', 'PX', ttl)
if ARGV[5] == '1' then
  for _, process in ipairs(redis.call('SMEMBERS', processes)) do
    if process ~= me and redis.call('EXISTS', alive(process)) == 0 then
      for _, field in ipairs(redis.call('SMEMBERS', owned(process))) do
        remove(process, field)
      end
      redis.call('DEL', owned(process))
      redis.call('SREM', processes, process)
    end
  end
end
local seq = tonumber(redis.call('GET', P .. 'presence:seq') or '0')
return {refreshed and 1 or 0, seq}
"""

#: A clean stop: this process's members leave now.
_DEPART = """
for _, field in ipairs(redis.call('SMEMBERS', owned(me))) do remove(me, field) end
redis.call('DEL', owned(me), alive(me))
redis.call('SREM', processes, me)
return 1
"""

#: The counter and every member, read together.
_SNAPSHOT = """
return {tonumber(redis.call('GET', P .. 'presence:seq') or '0'), redis.call('HGETALL', members)}
"""

_SCRIPTS: Final = {
    "apply": _APPLY,
    "reconcile": _RECONCILE,
    "tick": _TICK,
    "depart": _DEPART,
    "snapshot": _SNAPSHOT,
}


class RedisPresence:
    """Writes this process's members to Redis and keeps the roster in step with everyone's.

    Args:
        url: The Redis URL (for logs; `new_client` connects).
        prefix: The hub's channel prefix, which also prefixes the keys.
        origin: The relay's origin id: events carry it as broadcasts do.
        process: This process's id, the first part of its member ids.
        roster: The hub, whose view is kept current.
        new_client: A new Redis client (no retries: this class retries itself).
        interval: Seconds between heartbeats and sweeps.
        ttl: Seconds a heartbeat lives; a process silent this long is swept.
    """

    def __init__(
        self,
        url: str,
        prefix: bytes,
        origin: bytes,
        process: str,
        roster: Roster,
        new_client: Callable[[], Any],
        *,
        interval: float,
        ttl: float,
    ) -> None:
        self.url = url
        self.process = process
        self.interval = interval
        self.ttl = ttl
        self._roster = roster
        self._new_client = new_client
        self._args = [prefix, origin + b"p", process.encode(), str(int(ttl * 1000)).encode()]
        self._mailbox: Mailbox[Any] | None = None
        self._task: asyncio.Task[None] | None = None
        self._ready: asyncio.Event | None = None
        #: The number of the last change the roster reflects; `None` until it is loaded.
        self._seq: int | None = None
        #: Events held while a snapshot is read (`None` when none is being read).
        self._held: list[tuple[int, bytes]] | None = None
        self._reload_again = False  # a reload was asked for while one was under way
        self._behind: int | None = None  # the counter seen ahead of the roster at a tick
        self._registered = False  # a reconcile was sent: a clean stop must remove members
        self._written = False  # a reconcile succeeded

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    # ----------------------------------------------------------------- from the hub

    def joined(self, group: str, member_id: str, record: Record) -> None:
        """Write a member of this process to Redis (from any thread; never blocks)."""
        mailbox = self._mailbox
        if mailbox is not None:
            mailbox.put((b"j", field_of(group, member_id), record.encode()))

    def left(self, group: str, member_id: str) -> None:
        """Remove a member of this process from Redis (from any thread; never blocks)."""
        mailbox = self._mailbox
        if mailbox is not None:
            mailbox.put((b"l", field_of(group, member_id)))

    # ----------------------------------------------------------------- from the relay

    def subscribed(self) -> None:
        """The relay (re)subscribed, on the loop: events may have been missed, reload."""
        self._request_resync()

    def received(self, data: bytes) -> None:
        """A change event (`<number> <body>`), on the loop, from the relay's subscription."""
        if self._mailbox is None:
            return
        number, _, body = data.partition(b" ")
        try:
            seq = int(number)
        except ValueError:
            logger.warning("Hub: skipped a presence event that is not one: %r", data[:80])
            return
        self._follow(seq, body)

    def _follow(self, seq: int, body: bytes) -> None:
        """Apply an event, or hold it while a snapshot is being read."""
        held = self._held
        if held is None:
            self._event(seq, body)
        elif len(held) < MAX_HELD:
            held.append((seq, body))
        else:
            self._reload_again = True

    def _event(self, seq: int, body: bytes) -> None:
        if self._seq is None or seq <= self._seq:
            return  # no roster yet (its load is on its way), or already in it
        if seq != self._seq + 1:
            self._request_resync()  # missed some: load the roster again
            self._follow(seq, body)  # held, for after the snapshot
            return
        self._seq = seq
        try:
            kind, rest = body[:1], body[1:]
            if kind == b"j":
                raw_record, _, field = rest.partition(b"\n")
                group, member_id = parse_field(field)
                change: Record | None = Record.decode(raw_record)
            elif kind == b"l":
                group, member_id = parse_field(rest)
                change = None
            else:
                raise ValueError(f"unknown kind {kind!r}")
        except ValueError:
            logger.warning("Hub: skipped a malformed presence event: %r", body[:80])
            return
        if owner_of(member_id) != self.process:  # this process's own are known already
            self._roster.remote_changed(group, member_id, change)

    def _request_resync(self) -> None:
        if self._mailbox is None:
            return
        if self._held is not None:
            self._reload_again = True  # the one under way may have read Redis too early
            return
        self._held = []
        self._mailbox.put(_RESYNC)

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        if self._mailbox is not None:
            return
        self._mailbox = Mailbox(asyncio.get_running_loop())
        self._ready = asyncio.Event()
        self._seq = self._held = self._behind = None
        self._reload_again = self._registered = self._written = False
        self._task = asyncio.create_task(self._run(self._mailbox), name="cello-hub-presence")
        self._task.add_done_callback(self._done)

    async def wait_ready(self, timeout: float) -> bool:
        """Wait up to `timeout` s until this process is registered and the roster loaded."""
        if self._ready is None:
            return False
        try:
            await asyncio.wait_for(self._ready.wait(), max(timeout, 0.0))
        except TimeoutError:
            return False
        return True

    async def stop(self, timeout: float = 2.0) -> None:
        """End the task, then remove this process's members from Redis (for up to
        `timeout` s; if Redis cannot be reached, they expire with the heartbeat)."""
        task, self._task = self._task, None
        if self._mailbox is None:
            return
        self._mailbox = None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self._seq = self._held = None
        if self._registered:
            client = None
            try:
                async with asyncio.timeout(timeout):
                    client = self._new_client()
                    await client.register_script(_COMMON + _DEPART)(args=self._args)
            except (RedisError, OSError) as exc:
                logger.warning(
                    "Hub: could not remove this process's members from %s (%s); they "
                    "expire within %.0f s",
                    redacted(self.url),
                    _describe(exc),
                    self.ttl + self.interval,
                )
            except Exception:
                logger.exception(
                    "Hub: removing this process's members from %s failed", redacted(self.url)
                )
            finally:
                if client is not None:
                    await _close(client)

    def _done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        logger.error(
            "Hub: the presence task for %s ended unexpectedly; who is online is no longer "
            "kept in Redis",
            redacted(self.url),
            exc_info=task.exception(),
        )

    # ----------------------------------------------------------------- the task

    async def _run(self, mailbox: Mailbox[Any]) -> None:
        """Write joins and leaves, heartbeat, sweep, reload the roster; survive anything."""
        loop = asyncio.get_running_loop()
        this = asyncio.current_task()
        assert this is not None
        client: Any = None
        outage = Outage()
        work = _Work(next_tick=loop.time(), sweep_from=loop.time())
        try:
            while True:
                if this.cancelling():  # see the `except` below
                    raise asyncio.CancelledError
                # Reconnecting (after the backoff) and pending work do not wait for the tick.
                urgent = client is None or work.dirty or work.resync or bool(work.ops)
                for item in await _collect(mailbox, 0 if urgent else work.next_tick - loop.time()):
                    if item is _RESYNC:
                        work.resync = True
                    elif not work.dirty:  # when dirty, the reconcile covers it
                        work.ops.append(item)
                try:
                    # A Redis that stops answering (no error, no reply) counts as a failure.
                    async with asyncio.timeout(self.ttl):
                        if client is None:
                            client = self._new_client()
                            await client.ping()
                            work.scripts = {
                                name: client.register_script(_COMMON + source)
                                for name, source in _SCRIPTS.items()
                            }
                            lasted = outage.end()
                            if lasted is not None:
                                logger.warning(
                                    "Hub: presence on %s is back after %.1f s",
                                    redacted(self.url),
                                    lasted,
                                )
                                # The others' heartbeats may have expired during the outage
                                # too: give them time to refresh before sweeping them.
                                work.sweep_from = loop.time() + self.ttl
                        await self._round(work, loop.time())
                except Exception as exc:
                    # `stop()` cancels this task; a Redis call that turns that cancel into
                    # an error of its own must not make the task run on forever.
                    if this.cancelling():
                        raise asyncio.CancelledError from exc
                    # An outage, or something that is not Redis's (a bug, an unexpected reply):
                    # either way the connection is dropped, Redis is rewritten from this
                    # process's members once it answers again, and the roster reloaded.
                    expected = isinstance(exc, RedisError | OSError)
                    if outage.begin() or not expected:
                        logger.warning(
                            "Hub: presence on %s failed (%s); retrying",
                            redacted(self.url),
                            _describe(exc),
                            exc_info=not expected,
                        )
                    if client is not None:
                        await _close(client)
                    client = None
                    work.dirty = work.resync = True  # events may have been missed meanwhile
                    work.ops.clear()
                    await outage.backoff()
        finally:
            # Cancelled by `stop()`: the connection in use is closed, not left to the GC.
            if client is not None:
                await _close(client)

    async def _round(self, work: _Work, now: float) -> None:
        """Do what is due: reconcile, write joins and leaves, reload, heartbeat and sweep."""
        if work.dirty:
            work.ops.clear()
            await self._reconcile(work.scripts["reconcile"])
            work.dirty = False
        while work.ops:
            batch, work.ops = work.ops[:BATCH], work.ops[BATCH:]
            args = [part for op in batch for part in op]
            if not await work.scripts["apply"](args=[*self._args, *args]):
                work.ops.clear()
                work.dirty = True  # this process is not alive in Redis: write it whole
                return
        if work.resync:
            work.resync = False
            await self._resync(work.scripts["snapshot"])
        if now >= work.next_tick:
            work.next_tick = now + self.interval
            sweep = b"1" if now >= work.sweep_from else b"0"
            refreshed, seq = await work.scripts["tick"](args=[*self._args, sweep])
            if not refreshed:
                work.dirty = True  # swept while stalled, or Redis lost its data
            elif self._stale(seq):
                self._request_resync()

    async def _reconcile(self, script: Any) -> None:
        local = self._roster.local_presence()
        args = [part for g, i, r in local for part in (field_of(g, i), r.encode())]
        self._registered = True  # from now on a clean stop removes what may be in Redis
        await script(args=[*self._args, *args])
        self._written = True
        self._mark_ready()

    async def _resync(self, script: Any) -> None:
        """Load the roster whole, then apply the events held meanwhile that it lacks."""
        if self._held is None:
            self._held = []
        seq, flat = await script(args=self._args)
        records: dict[tuple[str, str], Record] = {}
        for field, value in zip(flat[::2], flat[1::2], strict=True):
            try:
                group, member_id = parse_field(field)
                record = Record.decode(value)
            except ValueError:
                logger.warning("Hub: skipped a malformed presence entry: %r", field[:80])
                continue
            if owner_of(member_id) != self.process:
                records[group, member_id] = record
        held, self._held = self._held, None
        again, self._reload_again = self._reload_again, False
        self._seq = int(seq)
        self._behind = None
        self._roster.remote_replaced(records)
        if again:
            self._request_resync()
        for number, body in held:
            self._follow(number, body)
        self._mark_ready()

    def _stale(self, seq: int) -> bool:
        """Whether the roster missed changes: Redis's counter was ahead of it a whole tick
        ago and still is, or Redis's counter is behind it (Redis was reset)."""
        if self._seq is None or self._held is not None:
            self._behind = None
            return False
        if seq < self._seq:
            return True
        behind, self._behind = self._behind, (seq if seq > self._seq else None)
        return behind is not None and self._seq < behind

    def _mark_ready(self) -> None:
        if self._ready is not None and self._written and self._seq is not None:
            self._ready.set()


@dataclasses.dataclass
class _Work:
    """What the presence task has to do, carried from one round to the next."""

    next_tick: float
    sweep_from: float  # no sweeping before this time (just back from an outage)
    dirty: bool = True  # Redis may not hold this process's members as they are: reconcile
    resync: bool = False  # reload the roster
    ops: list[tuple[bytes, ...]] = dataclasses.field(default_factory=list)
    scripts: dict[str, Any] = dataclasses.field(default_factory=dict)


async def _collect(mailbox: Mailbox[Any], timeout: float) -> list[Any]:
    """What the mailbox holds, waiting up to `timeout` s for something to arrive."""
    if timeout <= 0:
        return mailbox.take_nowait()
    try:
        async with asyncio.timeout(timeout):
            return await mailbox.take_all()
    except TimeoutError:
        return []


async def _close(client: Any) -> None:
    try:
        await client.aclose()
    except Exception:
        logger.debug("Hub: closing a Redis connection failed", exc_info=True)


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
