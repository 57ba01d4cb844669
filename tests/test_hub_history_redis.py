"""The shared history on Redis: a stream per group, ids every process agrees on, and
delivery through Redis, so members resume on any process and miss nothing across
outages. Two hubs on one event loop stand for two processes (their Redis connections
are their own), with a real redis-server each test."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import redis.asyncio as aioredis

from cello import App, AsyncWebSocket, Hub, Request
from redis_server import RedisServer
from servers import BufferedClient

WAIT = 10.0


def history_app(url: str, history: int = 100) -> App:
    app = App(hub=Hub(url, history=history, connect_timeout=WAIT))

    @app.websocket("/resume/{room}")
    async def resume(ws: AsyncWebSocket, request: Request) -> None:
        room = request.params["room"]
        app.hub.join(room, ws, resumable=True, since=request.query.get("since"))
        async for msg in ws:
            await app.hub.abroadcast(room, msg.text or "", exclude=ws)

    @app.websocket("/plain/{room}")
    async def plain(ws: AsyncWebSocket, request: Request) -> None:
        app.hub.join(request.params["room"], ws)
        await ws.send_text("joined")
        async for msg in ws:
            await app.hub.abroadcast(request.params["room"], msg.text or "")

    return app


class Member:
    """A client of `app` on this loop (see `BufferedClient`), as JSON it received."""

    def __init__(self, app: App, path: str, texts: list[str] | None = None) -> None:
        self.client = BufferedClient(path.split("?")[0], texts or [])
        if "?" in path:
            self.client.scope["query_string"] = path.split("?", 1)[1].encode()
        self.task = asyncio.create_task(
            app(self.client.scope, self.client.receive, self.client.send)
        )

    async def received(self, count: int) -> list[Any]:
        await asyncio.wait_for(self.client.wait_for_texts(count), WAIT)
        texts = self.client.texts()
        assert len(texts) >= count, texts
        return [json.loads(str(t)) if str(t).startswith("{") else t for t in texts]

    async def leave(self) -> None:
        self.client.leave.set()
        await self.task


@asynccontextmanager
async def running(*apps: App) -> AsyncIterator[None]:
    for app in apps:
        await app.startup()
    try:
        yield
    finally:
        for app in apps:
            await app.shutdown()


def data(messages: list[Any]) -> list[Any]:
    return [m["data"] for m in messages if isinstance(m, dict) and "data" in m]


def test_every_process_delivers_with_the_streams_ids_in_one_order(redis: RedisServer) -> None:
    one, two = history_app(redis.url), history_app(redis.url)

    async def scenario() -> None:
        async with running(one, two):
            here = Member(one, "/resume/r")
            there = Member(two, "/resume/r")
            plain = Member(one, "/plain/r")
            for member in (here, there):
                assert (await member.received(1))[0]["hub"] == "joined"
            await plain.received(1)
            for i in range(20):
                (one if i % 2 else two).hub.broadcast("r", {"n": i})
            got_here = (await here.received(21))[1:]
            got_there = (await there.received(21))[1:]
            assert got_here == got_there  # the same ids, the same order, in both
            numbers = [m["data"]["n"] for m in got_here]
            assert sorted(numbers) == list(range(20))
            for parity in (0, 1):  # each process's broadcasts in the order it sent them
                mine = [n for n in numbers if n % 2 == parity]
                assert mine == sorted(mine)
            assert len({m["id"] for m in got_here}) == 20
            # A plain member gets the messages themselves, in the same order.
            assert (await plain.received(21))[1:] == [m["data"] for m in got_here]
            lag = [
                line
                for line in one.metrics.render().splitlines()
                if line.startswith("cello_hub_relay_lag_seconds ")
            ]
            assert len(lag) == 1
            assert 0 <= float(lag[0].split()[1]) < WAIT
            for member in (here, there, plain):
                await member.leave()

    asyncio.run(asyncio.wait_for(scenario(), WAIT * 3))


def test_a_member_resumes_on_another_process_from_the_last_id(redis: RedisServer) -> None:
    one, two = history_app(redis.url), history_app(redis.url)

    async def scenario() -> None:
        async with running(one, two):
            first = Member(one, "/resume/r")
            await first.received(1)
            one.hub.broadcast("r", "a")
            last = (await first.received(2))[1]["id"]
            await first.leave()
            for word in ("b", "c"):
                two.hub.broadcast("r", word)
            sender = Member(two, "/resume/r")
            await sender.received(1)
            two.hub.broadcast("r", "d")
            # b and c reach it live or not, as they went through Redis before or after
            # it joined; d does, and then all three are in the stream.
            while "d" not in data(await sender.received(len(sender.client.texts()) + 1)):
                pass
            back = Member(two, f"/resume/r?since={last}")
            got = await back.received(4)
            assert data(got[:3]) == ["b", "c", "d"]
            assert got[3]["hub"] == "joined"
            assert got[3]["at"] == got[2]["id"]
            one.hub.broadcast("r", "e")  # live after the replay, once
            got = await back.received(5)
            assert data(got) == ["b", "c", "d", "e"]
            for member in (sender, back):
                await member.leave()

    asyncio.run(asyncio.wait_for(scenario(), WAIT * 3))


@pytest.mark.parametrize("since", ["0-0", "garbage", "1-1"])
def test_positions_not_in_the_stream(redis: RedisServer, since: str) -> None:
    app = history_app(redis.url, history=3)

    async def scenario() -> None:
        async with running(app):
            watcher = Member(app, "/resume/r")
            await watcher.received(1)
            for i in range(5):
                app.hub.broadcast("r", str(i))
            await watcher.received(6)
            back = Member(app, f"/resume/r?since={since}")
            got = await back.received(5)
            # From the start of the stream more than `history` was missed ("0-0", which
            # an empty stream gives); the others were never given: gaps, then the newest
            # `history` kept (Redis trims streams lazily: it keeps at least that many).
            assert got[0] == {"hub": "gap", "group": "r"}
            assert data(got) == ["2", "3", "4"]
            assert got[4] == {"hub": "joined", "group": "r", "at": got[3]["id"]}
            for member in (watcher, back):
                await member.leave()

    asyncio.run(asyncio.wait_for(scenario(), WAIT * 3))


def test_exclude_applies_to_this_process_broadcasts(redis: RedisServer) -> None:
    app = history_app(redis.url)

    async def scenario() -> None:
        async with running(app):
            listener = Member(app, "/resume/r")
            await listener.received(1)
            sender = Member(app, "/resume/r", ["from the sender"])  # broadcasts excluding itself
            got = await listener.received(2)
            assert got[1]["data"] == "from the sender"
            app.hub.broadcast("r", "to all")
            assert data(await sender.received(2)) == ["to all"]
            for member in (listener, sender):
                await member.leave()

    asyncio.run(asyncio.wait_for(scenario(), WAIT * 3))


def test_what_was_published_while_the_subscription_was_down_is_delivered(
    redis: RedisServer,
) -> None:
    """Pub/sub keeps nothing: the stream does. One process's subscription is killed while
    the other publishes; when it subscribes again it reads what it missed, in order."""
    one, two = history_app(redis.url), history_app(redis.url)

    async def scenario() -> None:
        async with running(one, two):
            here = Member(one, "/resume/r")
            plain = Member(one, "/plain/r")
            await here.received(1)
            await plain.received(1)
            two.hub.broadcast("r", "before")
            await here.received(2)
            admin = aioredis.Redis.from_url(redis.url)
            try:
                await admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
                for i in range(50):
                    two.hub.broadcast("r", str(i))
                got = await here.received(52)
            finally:
                await admin.aclose()
            assert data(got) == ["before", *(str(i) for i in range(50))]
            assert len({m["id"] for m in got[1:]}) == 51
            assert (await plain.received(52))[1:] == ["before", *(str(i) for i in range(50))]
            for member in (here, plain):
                await member.leave()

    asyncio.run(asyncio.wait_for(scenario(), WAIT * 3))


def test_a_redis_restart_under_load_loses_nothing_and_doubles_nothing(tmp_path: Any) -> None:
    """Redis (keeping its data on disk) stops for a moment and comes back while a process
    publishes every 2 ms: every broadcast reaches the member of the other process once,
    in order, and a client that resumes from its first id gets all the rest."""
    redis = RedisServer(tmp_path, persistent=True)
    redis.start()
    one, two = history_app(redis.url, history=500), history_app(redis.url, history=500)
    total = 400

    async def scenario() -> None:
        async with running(one, two):
            member = Member(one, "/resume/r")
            await member.received(1)
            loop = asyncio.get_running_loop()
            for i in range(total):
                two.hub.broadcast("r", str(i))
                if i == total // 4:
                    await loop.run_in_executor(None, redis.stop)
                    await asyncio.sleep(0.5)  # the outage: publishing goes on
                    await loop.run_in_executor(None, redis.start)
                await asyncio.sleep(0.002)
            got = await member.received(1 + total)
            assert data(got) == [str(i) for i in range(total)]
            ids = [m["id"] for m in got[1:]]
            assert len(set(ids)) == total
            back = Member(two, f"/resume/r?since={ids[0]}")
            replayed = await back.received(total)
            assert data(replayed) == [str(i) for i in range(1, total)]
            for client in (member, back):
                await client.leave()
        assert one.hub.relay is not None
        assert two.hub.relay is not None
        assert two.hub.relay.dropped == 0

    try:
        asyncio.run(asyncio.wait_for(scenario(), WAIT * 6))
    finally:
        redis.stop()


def test_a_process_without_history_is_delivered_plainly_and_named_once(
    redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    app = history_app(redis.url)
    other = Hub(redis.url, connect_timeout=WAIT)  # no history: a misconfigured process

    async def scenario() -> None:
        async with running(app):
            await other.start()
            try:
                plain = Member(app, "/plain/r")
                await plain.received(1)
                other.broadcast("r", "one")
                other.broadcast("r", "two")
                assert (await plain.received(3))[1:] == ["one", "two"]
                await plain.leave()
            finally:
                await other.stop()

    asyncio.run(asyncio.wait_for(scenario(), WAIT * 3))
    assert caplog.text.count("keeps no history") == 1


def test_an_sse_stream_resumes_on_another_process(redis: RedisServer) -> None:
    """`hub.stream(group, since=Last-Event-ID)` on the shared history: an EventSource
    that reconnects to another process gets what it missed from the stream."""
    one, two = history_app(redis.url), history_app(redis.url)

    async def scenario() -> None:
        async with running(one, two):
            stream = one.hub.stream("r")
            joined = await anext(stream)
            assert joined.event == "joined"
            one.hub.broadcast("r", "a")
            first = await anext(stream)
            assert first.data == "a"
            await stream.aclose()  # the browser goes away...
            watcher = Member(two, "/resume/r")  # to know when both went through Redis
            await watcher.received(1)
            two.hub.broadcast("r", {"n": 2})
            two.hub.broadcast("r", b"\x03")
            await watcher.received(3)
            resumed = two.hub.stream("r", since=first.id)  # ...and comes back elsewhere
            events = [await anext(resumed) for _ in range(3)]
            await resumed.aclose()
            await watcher.leave()
            assert json.loads(events[0].data) == {"n": 2}
            assert events[1].event == "binary"
            assert events[2].event == "joined"
            assert events[2].id == events[1].id

    asyncio.run(asyncio.wait_for(scenario(), WAIT * 3))
