"""Relays hub broadcasts between processes over Redis pub/sub.

Each process publishes its broadcasts to one Redis channel per group (`prefix + group`) and
subscribes to the channels of the groups it has members in (`watch`/`unwatch`, kept in
step by a task beside the reader), so what a process receives grows with its own groups,
not with every group of the deployment. The presence's changes travel on one channel of
their own, the prefix itself (no group's channel is named that: a group name is never
empty), which every process follows. A process skips its own broadcasts (they carry its
origin id), since its hub already delivered them to its members. So a message reaches
every member exactly once while Redis is up, and in the order one publisher sent it:
publishing goes through one task in order, and Redis keeps a connection's order. A group
joined here receives from the moment Redis confirms its subscription (`wait_watched`),
a Redis round trip after the first member joined.

Outages: nothing is raised into handlers. The publisher keeps up to `max_pending`
broadcasts while Redis is slow or unreachable and sends them after it reconnects (older ones are
dropped past that); a batch that failed mid-send is dropped, never resent, so nothing is
delivered twice. The subscriber reconnects with backoff and subscribes again. What other
processes published while this one was disconnected is lost to it: pub/sub keeps nothing.
Both are logged, with counts, on the `cello.hub` logger.

Failures that are not Redis's (a bug, an unexpected value from redis-py, a `deliver` that
raises) are logged with their traceback and survived the same way: a message whose
delivery raises is skipped; anything else restarts the subscription, or drops the batch
being published and reconnects, with the same backoff. Should a task still end (an
exception nobody foresaw), that is logged and `running`/`subscribed` turn false; broadcasts
are then counted as dropped rather than queued for a publisher that is gone.

Wire format of a message: 16 bytes of origin id, `t` (text), `j` (JSON text: a dict or
list broadcast) or `b`, then the UTF-8 text or the bytes. Presence changes
(`_presence.py`) travel on the same channels as kind `p`, and go to the presence
(`set_presence`) whichever process sent them, this one included: each carries a number
every process must see to notice a gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

from starlette.types import Message

from ._bridge import Mailbox
from ._events import relayed_event
from ._redis_history import ADD

logger = logging.getLogger("cello.hub")

#: Publishes sent in one pipeline round trip.
BATCH: Final = 512
#: Backoff between reconnection attempts, doubling from the first to the last.
FIRST_RETRY: Final = 0.05
LAST_RETRY: Final = 2.0
#: A subscription idle this long is pinged; one that stays silent as long again is dead.
IDLE_PING: Final = 5.0
#: At most one "dropped" warning per this many seconds (a long outage would flood the log).
DROP_WARNING_INTERVAL: Final = 10.0

_STOP = object()  # the mailbox item that tells the publisher to finish

#: A broadcast waiting to be published: channel, kind and body, token, number.
_Item = tuple[bytes, bytes, int, int]

try:
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.exceptions import RedisError
except ImportError:  # pragma: no cover - depends on the install
    aioredis = None  # type: ignore[assignment]


def redacted(url: str) -> str:
    """`url` with any password replaced, for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[-1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


class Outage:
    """One connection's time without Redis: when it began, and the backoff between tries.

    The publisher and the subscriber each keep one, so each logs its own outage once when
    it begins and once when it ends.
    """

    def __init__(self) -> None:
        self.since: float | None = None
        self.delay = FIRST_RETRY

    def begin(self) -> bool:
        """Note a failure; whether it starts an outage (the moment to log it)."""
        if self.since is not None:
            return False
        self.since = time.monotonic()
        return True

    async def backoff(self) -> None:
        """Wait before the next try, twice as long as the last time (up to `LAST_RETRY`)."""
        await asyncio.sleep(self.delay)
        self.delay = min(self.delay * 2, LAST_RETRY)

    def end(self) -> float | None:
        """Note a success; how long the outage lasted, or `None` if there was none."""
        self.delay = FIRST_RETRY
        if self.since is None:
            return None
        lasted, self.since = time.monotonic() - self.since, None
        return lasted


class RedisRelay:
    """Carries one process's hub broadcasts to the others sharing a Redis, and theirs back.

    Args:
        url: `redis://`, `rediss://` or `unix://` URL.
        prefix: Prefix of the pub/sub channel names.
        deliver: Called on the event loop with `(group, event, is_json)` for each message
            from another process (`is_json`: broadcast as a dict or list); returns
            whether some member is getting behind.
        max_pending: Broadcasts kept while Redis is slow or unreachable; past it the
            oldest are dropped, counted and logged.
    """

    def __init__(
        self,
        url: str,
        prefix: str,
        deliver: Callable[[str, Message, bool], bool],
        *,
        max_pending: int = 100_000,
        history: int = 0,
        history_ttl: float = 600.0,
    ) -> None:
        if aioredis is None:
            raise ImportError("the Redis hub needs redis-py: pip install 'cello[redis]'")
        if urlsplit(url).scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"a hub URL is redis://, rediss:// or unix://, not {url!r}")
        self.url = url
        self.prefix = prefix.encode()
        self.origin = uuid.uuid4().bytes
        self.max_pending = max_pending
        #: Entries each group's stream keeps (`_redis_history.py`); 0: no streams.
        self.history = history
        self.history_ttl = history_ttl
        self._deliver = deliver
        self._deliver_numbered: Callable[[str, str, bytes, bytes, int], bool] | None = None
        self._on_group_subscribed: Callable[[str], None] | None = None
        #: The group channels to follow (groups with members here), from any thread.
        self._groups: set[bytes] = set()
        self._groups_lock = threading.Lock()
        self._changed: asyncio.Event | None = None  # set (on the loop) when they change
        self._loop: asyncio.AbstractEventLoop | None = None
        #: The group channels confirmed in the current subscription (changed on the
        #: loop, under `_groups_lock` with `_groups`), and who waits for one
        #: (`wait_watched`, on the loop).
        self._confirmed: set[bytes] = set()
        self._waiters: dict[bytes, list[asyncio.Future[None]]] = {}
        self._added_key = self.prefix + b"added:" + self.origin.hex().encode()
        self._seq = 0  # the last number given to a broadcast (by the publisher task)
        self._on_presence: Callable[[bytes], None] | None = None
        self._on_subscribed_hook: Callable[[], None] | None = None
        self._mailbox: Mailbox[Any] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._subscribed: asyncio.Event | None = None
        #: Broadcasts this process could not relay (dropped in an outage), since start.
        self.dropped = 0
        #: Messages from other processes whose delivery here raised (skipped), since start.
        self.skipped = 0
        #: Times the publisher or the subscriber lost Redis, since start (on the loop).
        self.outages = 0
        #: With `history`: seconds from Redis numbering the latest broadcast (its stream
        #: id holds Redis's time in ms) to its arrival here, or `None` before the first.
        self.lag: float | None = None
        self._stopped = False
        self._publisher_ended = False
        self._warned_after_stop = False
        self._subscriber_outage = Outage()
        self._last_drop_warning = -DROP_WARNING_INTERVAL
        self._last_skip_warning = -DROP_WARNING_INTERVAL

    def set_history(
        self,
        deliver: Callable[[str, str, bytes, bytes, int], bool],
        group_subscribed: Callable[[str], None],
    ) -> None:
        """With `history`: broadcasts come back with their stream id, this process's own
        too, to `deliver(group, id, kind, body, token)` on the event loop (`token`: the
        one `publish` was given, for this process's own; else 0); `group_subscribed(group)`
        is called, on the loop, each time a group's subscription is confirmed."""
        self._deliver_numbered = deliver
        self._on_group_subscribed = group_subscribed

    def stream_key(self, group: str) -> bytes:
        """The Redis key of a group's stream."""
        return self.prefix + b"history:" + group.encode()

    def set_presence(
        self, on_presence: Callable[[bytes], None], on_subscribed: Callable[[], None]
    ) -> None:
        """Hand presence changes (kind `p`, this process's own included) to `on_presence`,
        and call `on_subscribed` each time the subscription is made (again); both on the
        event loop."""
        self._on_presence = on_presence
        self._on_subscribed_hook = on_subscribed

    @property
    def running(self) -> bool:
        """Whether the relay was started, not stopped, and both its tasks are alive."""
        return self._mailbox is not None and not any(task.done() for task in self._tasks)

    @property
    def subscribed(self) -> bool:
        """Whether this process currently receives the other processes' broadcasts."""
        tasks = self._tasks
        return (
            self._subscribed is not None
            and self._subscribed.is_set()
            and len(tasks) == 2
            and not tasks[1].done()
        )

    def client(self) -> aioredis.Redis:
        """A new client with no retries inside redis-py: its users reconnect themselves,
        and log the outage (the presence, `_presence.py`, uses it too)."""
        return aioredis.Redis.from_url(
            self.url, retry=Retry(NoBackoff(), 0), socket_connect_timeout=2.0
        )

    # ----------------------------------------------------------------- lifecycle

    async def start(self, timeout: float = 5.0) -> None:
        """Start publishing and subscribing; wait up to `timeout` s for the subscription.

        An unreachable Redis does not stop the app from starting: it is logged and the
        relay keeps trying in the background.
        """
        if self._mailbox is not None:
            return
        self._stopped = False
        self._publisher_ended = False
        self._warned_after_stop = False
        self._subscriber_outage = Outage()
        self._mailbox = Mailbox(asyncio.get_running_loop())
        self._subscribed = asyncio.Event()
        self._changed = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        publisher = asyncio.create_task(
            self._publish_forever(self._mailbox), name="cello-hub-publish"
        )
        publisher.add_done_callback(functools.partial(self._publisher_done, self._mailbox))
        subscriber = asyncio.create_task(self._subscribe_forever(), name="cello-hub-subscribe")
        subscriber.add_done_callback(functools.partial(self._subscriber_done, self._subscribed))
        self._tasks = [publisher, subscriber]
        try:
            await asyncio.wait_for(self._subscribed.wait(), timeout)
        except TimeoutError:
            logger.error(
                "Hub: could not subscribe on %s within %.0f s; retrying in the background",
                redacted(self.url),
                timeout,
            )

    async def stop(self, timeout: float = 2.0) -> None:
        """Send what is pending (for up to `timeout` s), then end both tasks."""
        mailbox, self._mailbox = self._mailbox, None
        if mailbox is None:
            return
        self._stopped = True
        publisher, subscriber = self._tasks
        self._tasks = []
        mailbox.put(_STOP)
        # Not wait_for: a publisher that already failed must not raise out of stop().
        await asyncio.wait((publisher,), timeout=timeout)
        for task in (publisher, subscriber):
            task.cancel()
        await asyncio.gather(publisher, subscriber, return_exceptions=True)
        # Put after the publisher's last look (a thread racing the shutdown): never sent.
        self.dropped += sum(1 for item in mailbox.take_nowait() if item is not _STOP)
        if self._subscribed is not None:
            self._subscribed.clear()

    def _publisher_done(self, mailbox: Mailbox[Any], task: asyncio.Task[None]) -> None:
        """Log a publisher that ended by itself (not on `stop()`), and stop queueing for it."""
        if task.cancelled():
            return  # stop() ended it
        error = task.exception()
        if error is None and self._stopped:
            return  # it sent what was pending and finished, as stop() asked
        self._publisher_ended = True
        lost = sum(1 for item in mailbox.take_nowait() if item is not _STOP)
        self.dropped += lost
        logger.error(
            "Hub: the publisher to %s ended unexpectedly; broadcasts are no longer relayed to "
            "other processes (%d dropped so far)",
            redacted(self.url),
            self.dropped,
            exc_info=error,
        )

    def _subscriber_done(self, subscribed: asyncio.Event, task: asyncio.Task[None]) -> None:
        """Log a subscriber that ended by itself (not on `stop()`); it is no longer subscribed."""
        subscribed.clear()
        if task.cancelled():
            return  # stop() ended it
        logger.error(
            "Hub: the subscription on %s ended unexpectedly; broadcasts from other processes "
            "are no longer received",
            redacted(self.url),
            exc_info=task.exception(),
        )

    # ----------------------------------------------------------------- publishing

    def publish(self, group: str, event: Message, is_json: bool = False, token: int = 0) -> None:
        """Relay a broadcast to the other processes, from any thread; never blocks.
        `is_json`: the text is JSON (broadcast as a dict or list), told to the others.
        With `history`, it goes to the group's stream, and back to this process too,
        carrying `token`."""
        mailbox = self._mailbox
        if mailbox is None:
            if self._stopped:
                # A thread of the app still broadcasting while it shuts down.
                self.dropped += 1
                if not self._warned_after_stop:
                    self._warned_after_stop = True
                    logger.warning("Hub: broadcasts after shutdown are not relayed")
                return
            raise RuntimeError(
                "the Redis hub is not running: the app's lifespan starts it "
                "(a mounted app: call `await app.startup()` from the outer app's lifespan)"
            )
        if self._publisher_ended:
            self.dropped += 1  # its end was logged; queueing would only grow the mailbox
            return
        text = event.get("text")
        if text is None:
            payload = b"b" + event["bytes"]
        else:
            payload = (b"j" if is_json else b"t") + text.encode()
        mailbox.put((self.prefix + group.encode(), payload, token))

    async def _publish_forever(self, mailbox: Mailbox[Any]) -> None:
        pending: deque[_Item] = deque()
        add: Any = None  # the `ADD` script, registered on the current client
        client: aioredis.Redis | None = None
        stopping = False
        in_flight = 0  # broadcasts being sent, neither sent nor counted as dropped yet
        try:
            while not (stopping and not pending):
                if not pending and not stopping:
                    stopping = self._take(await mailbox.take_all(), pending)
                else:
                    stopping = self._take(mailbox.take_nowait(), pending) or stopping
                if not pending:
                    continue
                if client is None:
                    client = await self._reconnect_publisher(mailbox, pending)
                batch = [pending.popleft() for _ in range(min(len(pending), BATCH))]
                in_flight = len(batch)
                try:
                    async with client.pipeline(transaction=False) as pipe:
                        if self.history:
                            if add is None or add.registered_client is not client:
                                add = client.register_script(ADD)
                            for item in batch:
                                await add(self._add_keys(item), self._add_args(item), pipe)
                        else:
                            for channel, data, _, _ in batch:
                                pipe.publish(channel, self.origin + data)
                        await pipe.execute()
                    in_flight = 0
                except (RedisError, OSError) as exc:
                    in_flight = 0
                    if self.history:
                        # Each broadcast is added once whatever happens (its number is
                        # checked in Redis): the batch is sent again once Redis is back.
                        pending.extendleft(reversed(batch))
                        logger.warning(
                            "Hub: lost Redis at %s while publishing (%s); %d broadcasts "
                            "will be sent again",
                            redacted(self.url),
                            exc,
                            len(batch),
                        )
                    else:
                        # Part of the batch may have gone out: dropping it, never resending,
                        # keeps every delivery single.
                        self.dropped += len(batch)
                        logger.warning(
                            "Hub: lost Redis at %s while publishing (%s); %d broadcasts dropped",
                            redacted(self.url),
                            exc,
                            len(batch),
                        )
                    await _close(client)
                    client = None
                except Exception:
                    # Not an outage but a bug or an unexpected value (here or in redis-py):
                    # the same treatment, so the publisher lives on. The batch is dropped (part
                    # of it may have gone out), and the client replaced (its connection may be
                    # left mid-reply).
                    in_flight = 0
                    self.dropped += len(batch)
                    logger.exception(
                        "Hub: publishing to %s failed; %d broadcasts dropped, reconnecting",
                        redacted(self.url),
                        len(batch),
                    )
                    await _close(client)
                    client = None
        finally:
            # Left unsent: stop() timed out waiting for Redis, or the task failed.
            self.dropped += len(pending) + in_flight
            if client is not None:
                await _close(client)

    def _add_keys(self, item: _Item) -> list[bytes]:
        return [self.prefix + b"history:" + item[0][len(self.prefix) :], self._added_key]

    def _add_args(self, item: _Item) -> list[Any]:
        channel, payload, token, seq = item
        ttl_ms = max(1, int(self.history_ttl * 1000))
        return [channel, self.origin, seq, token, payload, self.history, ttl_ms]

    def _take(self, items: list[Any], pending: deque[_Item]) -> bool:
        """Move mailbox items to `pending`, numbered in the order they were put, keeping at
        most `max_pending`; True on stop."""
        stop = False
        for item in items:
            if item is _STOP:
                stop = True
            else:
                self._seq += 1
                pending.append((*item, self._seq))
        excess = len(pending) - self.max_pending
        if excess > 0:
            for _ in range(excess):
                pending.popleft()
            self.dropped += excess
            now = time.monotonic()
            if now - self._last_drop_warning >= DROP_WARNING_INTERVAL:
                self._last_drop_warning = now
                logger.warning(
                    "Hub: more than %d broadcasts waiting for Redis at %s; the oldest are "
                    "dropped (%d so far)",
                    self.max_pending,
                    redacted(self.url),
                    self.dropped,
                )
        return stop

    async def _reconnect_publisher(
        self, mailbox: Mailbox[Any], pending: deque[_Item]
    ) -> aioredis.Redis:
        """A connected client, retrying with backoff; broadcasts keep queueing meanwhile."""
        outage = Outage()
        dropped_before = self.dropped
        while True:
            client = None
            try:
                client = self.client()
                await client.ping()
            except Exception as exc:
                if client is not None:
                    await _close(client)
                unexpected = not isinstance(exc, RedisError | OSError)
                began = outage.begin()
                self.outages += began
                if began or unexpected:
                    # A failure that is not Redis's is logged every time, with its traceback.
                    logger.warning(
                        "Hub: cannot reach Redis at %s (%s); holding up to %d broadcasts",
                        redacted(self.url),
                        exc,
                        self.max_pending,
                        exc_info=unexpected,
                    )
                await outage.backoff()
                if self._take(mailbox.take_nowait(), pending):
                    mailbox.put(_STOP)  # seen again by the publishing loop
                continue
            lasted = outage.end()
            if lasted is not None:
                logger.warning(
                    "Hub: Redis at %s is back after %.1f s; %d broadcasts were dropped",
                    redacted(self.url),
                    lasted,
                    self.dropped - dropped_before,
                )
            return client

    # ----------------------------------------------------------------- subscribing

    async def _subscribe_forever(self) -> None:
        """Subscribe, deliver, and on any failure reconnect with backoff, forever."""
        assert self._subscribed is not None
        loop = asyncio.get_running_loop()
        this = asyncio.current_task()
        assert this is not None
        while True:
            client = pubsub = None
            try:
                client = self.client()
                pubsub = client.pubsub()
                with self._groups_lock:
                    self._confirmed.clear()
                # The presence channel first: with one channel subscribed, redis-py sends
                # no health check whose reply the reader could take.
                await pubsub.subscribe(self.prefix)
                heard = [loop.time()]
                tasks = (
                    asyncio.create_task(self._read(pubsub, heard)),
                    asyncio.create_task(self._watch(pubsub, heard)),
                    asyncio.create_task(self._follow_groups(pubsub)),
                )
                try:
                    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for task in tasks:
                        task.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)
                for task in tasks:
                    error = None if task.cancelled() else task.exception()
                    if error is not None:
                        raise error
            except (RedisError, OSError) as exc:
                if this.cancelling():  # `stop()`'s cancel, turned into an error by redis-py
                    raise asyncio.CancelledError from exc
                self._subscribed.clear()
                if self._subscriber_outage.begin():
                    self.outages += 1
                    logger.warning(
                        "Hub: lost the subscription on %s (%s); reconnecting",
                        redacted(self.url),
                        exc,
                    )
            except Exception as exc:
                if this.cancelling():
                    raise asyncio.CancelledError from exc
                # Not an outage: a bug or an unexpected value from redis-py (one message's
                # delivery failing is dealt with in `_read` and never gets here). The
                # connection may be left mid-reply, so it is not reused: the subscription
                # starts over, as after an outage. Logged every time, with its traceback.
                self._subscribed.clear()
                self.outages += self._subscriber_outage.begin()
                logger.exception(
                    "Hub: the subscription on %s failed; subscribing again", redacted(self.url)
                )
            finally:
                if pubsub is not None:
                    await _close(pubsub)
                if client is not None:
                    await _close(client)
            await self._subscriber_outage.backoff()

    # ----------------------------------------------------------------- groups followed

    def watch(self, group: str) -> None:
        """Receive `group`'s broadcasts from now on (it has a member here); any thread."""
        with self._groups_lock:
            self._groups.add(self.prefix + group.encode())
        self._groups_changed()

    def unwatch(self, group: str) -> None:
        """Stop receiving `group`'s broadcasts (its last member here left); any thread."""
        with self._groups_lock:
            self._groups.discard(self.prefix + group.encode())
        self._groups_changed()

    def _groups_changed(self) -> None:
        changed, loop = self._changed, self._loop
        if changed is None or loop is None:
            return  # not running: the subscription will read the set when it starts
        with contextlib.suppress(RuntimeError):  # a closed loop: nothing follows groups
            loop.call_soon_threadsafe(changed.set)

    async def _follow_groups(self, pubsub: Any) -> None:
        """Keep the subscription's channels the groups with members here (one task per
        subscription, beside the reader: subscribing only sends, the reader reads)."""
        changed = self._changed
        assert changed is not None
        subscribed: set[bytes] = set()
        while True:
            changed.clear()
            with self._groups_lock:
                wanted = set(self._groups)
            if wanted - subscribed:
                await pubsub.subscribe(*(wanted - subscribed))
            if subscribed - wanted:
                gone = subscribed - wanted
                with self._groups_lock:
                    self._confirmed.difference_update(gone)
                await pubsub.unsubscribe(*gone)
            subscribed = wanted
            await changed.wait()

    def _confirm(self, channel: bytes) -> None:
        """Redis confirmed a subscription (on the loop): the presence channel's, or a
        group's, whose broadcasts reach this process from now on."""
        if channel == self.prefix:
            self._on_subscribed()
            return
        with self._groups_lock:
            self._confirmed.add(channel)
        for waiter in self._waiters.pop(channel, ()):
            if not waiter.done():
                waiter.set_result(None)
        if self._on_group_subscribed is not None:
            self._on_group_subscribed(channel[len(self.prefix) :].decode(errors="replace"))

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The event loop the relay runs on, once started."""
        return self._loop

    def watching(self, group: str) -> bool:
        """Whether `group`'s broadcasts reach this process now (its subscription is
        confirmed); any thread."""
        with self._groups_lock:
            return self.prefix + group.encode() in self._confirmed

    @property
    def following_all(self) -> bool:
        """Whether every group with members here has its subscription confirmed."""
        with self._groups_lock:
            return self._groups <= self._confirmed

    async def wait_watched(self, group: str) -> None:
        """Wait until this process receives `group`'s broadcasts (after `watch`)."""
        channel = self.prefix + group.encode()
        # Checked and waited for on the loop, where `_confirm` also runs: no confirmation
        # can come between the check and the wait.
        while not self.watching(group):
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.setdefault(channel, []).append(waiter)
            await waiter

    def _on_subscribed(self) -> None:
        assert self._subscribed is not None
        self._subscribed.set()
        if self._on_subscribed_hook is not None:
            self._on_subscribed_hook()
        lasted = self._subscriber_outage.end()
        if lasted is not None:
            logger.warning(
                "Hub: subscribed again on %s after %.1f s; broadcasts from other processes "
                "meanwhile were missed",
                redacted(self.url),
                lasted,
            )

    async def _read(self, pubsub: Any, heard: list[float]) -> None:
        """Deliver messages as they come: a blocking read, no timer per message."""
        loop = asyncio.get_running_loop()
        received = self._received
        while True:
            # An exception from reading (redis-py's) ends the subscription: see the caller.
            message = await pubsub.get_message(timeout=None)
            heard[0] = loop.time()
            if message is None:
                continue
            # Once redis-py has returned a message, the connection is in a known state, so
            # a failure from here on (a message of an unexpected shape, a `deliver` that
            # raises) concerns this message alone: it is logged and skipped, and the
            # subscription goes on. Restarting would lose what other processes publish
            # meanwhile, and a message that fails every time would restart it every time.
            try:
                kind = message["type"]
                if kind == "message":
                    if received(message["channel"], message["data"]):
                        # Some member here is getting behind: let the writers run before
                        # the next message (redis-py returns what it has buffered without
                        # waiting, so a burst would otherwise be queued all at once).
                        await asyncio.sleep(0)
                elif kind == "subscribe":
                    self._confirm(message["channel"])
            except Exception:
                self.skipped += 1
                if self._may_report_skip():
                    logger.exception(
                        "Hub: delivering a message from another process (on %r) raised; "
                        "skipped (%d so far)",
                        message.get("channel") if isinstance(message, dict) else message,
                        self.skipped,
                    )

    def _may_report_skip(self) -> bool:
        """Whether to log a skipped message: at most one every `DROP_WARNING_INTERVAL` s,
        so a delivery that fails for every message does not flood the log."""
        now = time.monotonic()
        if now - self._last_skip_warning < DROP_WARNING_INTERVAL:
            return False
        self._last_skip_warning = now
        return True

    async def _watch(self, pubsub: Any, heard: list[float]) -> None:
        """Ping a quiet subscription; return (ending it) if Redis stays silent after a ping."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(IDLE_PING)
            if loop.time() - heard[0] < IDLE_PING:
                continue
            await pubsub.ping()
            await asyncio.sleep(IDLE_PING)
            if loop.time() - heard[0] >= 2 * IDLE_PING:
                raise ConnectionError("no answer from Redis to a ping")

    def _received(self, channel: bytes, data: bytes) -> bool:
        """Deliver one message from Redis; whether some member is getting behind."""
        kind = data[16:17]
        if kind == b"p":
            if self._on_presence is not None:
                self._on_presence(data[17:])
            return False
        if kind == b"h":
            return self._received_numbered(channel, data)
        origin = self.origin
        if data[:16] == origin or len(data) < 17:
            return False  # our own broadcast, already delivered here (or not ours to read)
        group = channel[len(self.prefix) :].decode(errors="replace")
        return self._deliver(group, relayed_event(kind, data[17:]), kind == b"j")

    def _received_numbered(self, channel: bytes, data: bytes) -> bool:
        """A broadcast with its stream id: `origin h<id> <token> <kind><body>`."""
        deliver = self._deliver_numbered
        if deliver is None:
            return False  # a process with history on a hub without: not ours to read
        head, _, rest = data[17:].partition(b" ")
        token, _, message = rest.partition(b" ")
        if not message or not token.isdigit():
            raise ValueError(f"a malformed broadcast with an id: {data[:80]!r}")
        own = data[:16] == self.origin
        ms = head.partition(b"-")[0]
        if ms.isdigit():
            self.lag = max(0.0, time.time() - int(ms) / 1000)
        group = channel[len(self.prefix) :].decode(errors="replace")
        return deliver(group, head.decode(), message[:1], message[1:], int(token) if own else 0)


async def _close(connection: Any) -> None:
    """Close a client or pubsub being discarded; a failure to close it is only logged."""
    try:
        await connection.aclose()
    except (RedisError, OSError):
        pass  # the connection is already broken: that is why it is being closed
    except Exception:
        logger.warning("Hub: closing a Redis connection failed", exc_info=True)
