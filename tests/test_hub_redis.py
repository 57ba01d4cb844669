"""The hub across processes on a real Redis: two uvicorn servers, `--workers 2`, outages.

Each test starts its own `redis-server` on a free port (nothing saved) and serves
`tests/apps/hub_relay.py` in uvicorn child processes with `CELLO_HUB_URL` pointing at it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline, PubSub
from starlette.types import Message
from websockets.asyncio.client import ClientConnection, connect

from cello import App, AsyncWebSocket, Hub, Request, WebSocket, _redis_relay
from redis_server import RedisServer
from servers import BufferedClient, ThreadServer, subprocess_server

pytestmark = pytest.mark.usefixtures("websocket_runner")

MESSAGES = 2000
WAIT = 20
UVICORN = ("--ws", "websockets-sansio", "--log-level", "warning")


@pytest.fixture
def hub_url(redis: RedisServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """The Redis URL, also set as `CELLO_HUB_URL` for the servers the test starts."""
    monkeypatch.setenv("CELLO_HUB_URL", redis.url)
    return redis.url


@contextlib.asynccontextmanager
async def member(port: int, group: str) -> AsyncIterator[tuple[ClientConnection, int]]:
    """A client joined to `group` on the server at `port`, and that server's pid."""
    async with connect(f"ws://127.0.0.1:{port}/ws/{group}", open_timeout=WAIT) as ws:
        hello = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
        assert hello["backend"] == "redis"
        yield ws, hello["pid"]


async def receive_numbers(ws: ClientConnection, count: int) -> list[int]:
    return [int(await asyncio.wait_for(ws.recv(), WAIT)) for _ in range(count)]


async def publish_numbers(ws: ClientConnection, count: int) -> None:
    for i in range(count):
        await ws.send(str(i))


async def nothing_arrives(ws: ClientConnection, within: float = 0.5) -> bool:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(ws.recv(), within)
        return False
    return True


async def until(condition: Callable[[], bool], what: str = "timed out") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while not condition():
        assert loop.time() < deadline, what
        await asyncio.sleep(0.02)


def joining_app(url: str) -> App:
    """An app whose `/ws/{group}` joins the group, then says `joined`."""
    app = App(hub=url)

    @app.websocket("/ws/{group}")
    def joiner(ws: WebSocket, request: Request) -> None:
        app.hub.join(request.params["group"], ws).wait()
        ws.send_text("joined")
        for _ in ws:
            pass

    return app


def relay_of(app: App) -> _redis_relay.RedisRelay:
    relay = app.hub._relay
    assert relay is not None
    return relay


def carries(message: Any, text: bytes) -> bool:
    """Whether a pubsub message is a hub broadcast of `text`."""
    return (
        message is not None
        and message["type"] == "message"
        and message["data"].endswith(b"t" + text)
    )


class Unforeseen(BaseException):
    """What no `except Exception` catches: stands for a failure nobody planned for."""


def test_two_servers_deliver_every_message_once_in_order(hub_url: str) -> None:
    with (
        subprocess_server("apps.hub_relay:app", cwd=Path(__file__).parent, extra=UVICORN) as (
            _,
            port_a,
        ),
        subprocess_server("apps.hub_relay:app", cwd=Path(__file__).parent, extra=UVICORN) as (
            _,
            port_b,
        ),
    ):

        async def scenario() -> None:
            async with (
                member(port_a, "room") as (publisher, pid_a),
                member(port_a, "room") as (on_a, _),
                member(port_b, "room") as (on_b1, pid_b),
                member(port_b, "room") as (on_b2, _),
                member(port_b, "elsewhere") as (other_group, _),
            ):
                assert pid_a != pid_b
                receivers = [publisher, on_a, on_b1, on_b2]
                results = await asyncio.gather(
                    publish_numbers(publisher, MESSAGES),
                    *(receive_numbers(ws, MESSAGES) for ws in receivers),
                )
                for got in results[1:]:
                    assert got == list(range(MESSAGES))
                assert await nothing_arrives(other_group)
                assert all(await asyncio.gather(*(nothing_arrives(ws) for ws in receivers)))

        asyncio.run(scenario())


def test_uvicorn_workers_share_the_hub(hub_url: str) -> None:
    extra = (*UVICORN, "--workers", "2")
    with subprocess_server("apps.hub_relay:app", cwd=Path(__file__).parent, extra=extra) as (
        _,
        port,
    ):

        async def scenario() -> None:
            async with contextlib.AsyncExitStack() as stack:
                by_pid: dict[int, list[ClientConnection]] = {}
                # Whichever worker is free accepts a connection, and one often wins them
                # all: open one plainly, and one while a worker's loop is held (on a new
                # HTTP connection each time), which the other worker must take.
                for _ in range(10):
                    async with httpx.AsyncClient(timeout=WAIT) as http:
                        held = asyncio.create_task(http.get(f"http://127.0.0.1:{port}/hold"))
                        await asyncio.sleep(0.2)
                        for _ in range(2):
                            ws, pid = await stack.enter_async_context(member(port, "shared"))
                            by_pid.setdefault(pid, []).append(ws)
                        (await held).raise_for_status()
                    ws, pid = await stack.enter_async_context(member(port, "shared"))
                    by_pid.setdefault(pid, []).append(ws)
                    if len(by_pid) == 2 and min(len(v) for v in by_pid.values()) >= 2:
                        break
                assert len(by_pid) == 2, f"every connection went to one worker: {by_pid.keys()}"
                first, second = by_pid.values()
                publisher = first[0]
                receivers = [ws for group in by_pid.values() for ws in group]
                results = await asyncio.gather(
                    publish_numbers(publisher, MESSAGES),
                    *(receive_numbers(ws, MESSAGES) for ws in receivers),
                )
                for got in results[1:]:
                    assert got == list(range(MESSAGES))
                assert second  # receivers on the other worker were among them

        asyncio.run(scenario())


def test_a_member_dropping_without_a_close_frame_leaves_the_others_unaffected(
    hub_url: str,
) -> None:
    with subprocess_server("apps.hub_relay:app", cwd=Path(__file__).parent, extra=UVICORN) as (
        _,
        port,
    ):

        async def scenario() -> None:
            async with member(port, "drop") as (stays, _):
                async with member(port, "drop") as (drops, _):
                    drops.transport.abort()  # gone without a close frame
                await stays.send("after the drop")
                assert await asyncio.wait_for(stays.recv(), WAIT) == "after the drop"

        asyncio.run(scenario())


def test_redis_restarting_under_load(
    redis: RedisServer, hub_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Broadcasts go on while Redis is stopped and restarted: nothing raises into the
    handler, members in the publishing process get everything, the other process's
    members get what was relayed (never twice, always in order) and delivery resumes."""
    app = App(hub=hub_url)

    @app.websocket("/ws/{group}")
    def publisher(ws: WebSocket) -> None:
        app.hub.join("load", ws)
        for msg in ws:
            app.hub.broadcast("load", msg.text or "")

    sent: list[int] = []

    async def collect(ws: ClientConnection, into: list[int]) -> None:
        with contextlib.suppress(TimeoutError):
            while True:
                into.append(int(await asyncio.wait_for(ws.recv(), 3)))

    async def send_for(ws: ClientConnection, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        while loop.time() < end:
            await ws.send(str(len(sent)))
            sent.append(len(sent))
            await asyncio.sleep(0.002)

    async def scenario(local_url: str, remote_port: int) -> tuple[list[int], list[int]]:
        local_got: list[int] = []
        remote_got: list[int] = []
        async with (
            connect(local_url, open_timeout=WAIT) as pub,
            member(remote_port, "load") as (remote, _),
        ):
            collectors = asyncio.gather(collect(pub, local_got), collect(remote, remote_got))
            await send_for(pub, 1.0)
            redis.stop()
            await send_for(pub, 1.0)
            redis.start()
            await send_for(pub, 3.0)
            await collectors
        return local_got, remote_got

    with (
        caplog.at_level(logging.WARNING, logger="cello.hub"),
        ThreadServer(app, ws="websockets-sansio") as local,
        subprocess_server("apps.hub_relay:app", cwd=Path(__file__).parent, extra=UVICORN) as (
            _,
            remote_port,
        ),
    ):
        local_got, remote_got = asyncio.run(scenario(local.url("/ws/load"), remote_port))

    assert local_got == sent  # the publishing process never depends on Redis
    assert remote_got == sorted(set(remote_got))  # never twice, never out of order
    tail = sent[-200:]
    assert remote_got[-len(tail) :] == tail  # delivery resumed after the restart
    lost = len(sent) - len(remote_got)
    print(f"sent {len(sent)}, relayed {len(remote_got)}, lost during the outage {lost}")
    assert "back after" in caplog.text


def test_the_lifespan_starts_and_stops_the_relay_and_no_task_outlives_it(
    hub_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = App(hub=hub_url)
    with pytest.raises(RuntimeError, match="not running"):
        app.hub.broadcast("g", "before startup")

    async def lifespan() -> set[str]:
        await app.startup()
        assert app.hub.running
        app.hub.broadcast("g", "while running")
        await app.shutdown()
        return {t.get_name() for t in asyncio.all_tasks()} - {"main"}

    with caplog.at_level(logging.WARNING, logger="cello.hub"):
        left = asyncio.run(lifespan())
        app.hub.broadcast("g", "after shutdown")  # a straggling thread: logged, not raised
    assert not any(name.startswith("cello-hub") for name in left), left
    assert not app.hub.running
    assert not app.hub.connected
    assert "after shutdown are not relayed" in caplog.text


def test_an_unreachable_redis_at_startup_is_logged_and_retried(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    redis = RedisServer(tmp_path)  # not started yet
    app = App(hub=Hub(redis.url, connect_timeout=0.5))

    async def scenario() -> bytes:
        await app.startup()  # does not fail, nor wait past its timeout
        assert "could not subscribe" in caplog.text
        assert not app.hub.connected
        redis.start()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT
        while not app.hub.connected:
            assert loop.time() < deadline, "the relay did not reconnect"
            await asyncio.sleep(0.05)
        watcher = aioredis.Redis.from_url(redis.url)
        pubsub = watcher.pubsub()
        await pubsub.psubscribe("cello:hub:*")
        try:
            await pubsub.get_message(timeout=WAIT)  # the subscription's confirmation
            app.hub.broadcast("g", "hello")  # and the publisher reconnects on its own
            message = await pubsub.get_message(timeout=WAIT)
            assert message is not None
            data: bytes = message["data"]
            return data
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]
            await watcher.aclose()
            await app.shutdown()

    try:
        with caplog.at_level(logging.WARNING, logger="cello.hub"):
            data = asyncio.run(scenario())
    finally:
        redis.stop()
    assert data.endswith(b"thello")
    assert "subscribed again" in caplog.text


def test_a_redis_that_stops_answering_is_noticed_and_left(
    redis: RedisServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A Redis that hangs (here: stopped with SIGSTOP) sends no error: the subscription's
    ping goes unanswered, the relay reconnects, and it subscribes again once Redis wakes."""
    monkeypatch.setattr(_redis_relay, "IDLE_PING", 0.2)
    app = App(hub=redis.url)

    async def scenario() -> None:
        await app.startup()
        try:
            assert app.hub.connected
            assert redis.proc is not None
            redis.proc.send_signal(signal.SIGSTOP)
            try:
                await until(lambda: not app.hub.connected)
            finally:
                redis.proc.send_signal(signal.SIGCONT)
            await until(lambda: app.hub.connected)
        finally:
            await app.shutdown()

    with caplog.at_level(logging.WARNING, logger="cello.hub"):
        asyncio.run(scenario())
    assert "no answer from Redis to a ping" in caplog.text
    assert "subscribed again" in caplog.text


def test_a_message_whose_delivery_raises_is_logged_and_skipped(
    redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """One message that fails to be delivered (the fault injected at the relay's `deliver`)
    is logged with its traceback and skipped; the subscription stays up and the messages
    after it arrive."""
    app = joining_app(redis.url)
    relay = relay_of(app)
    deliver = relay._deliver

    def failing_once(group: str, event: Message, is_json: bool) -> bool:
        if event.get("text") == "poison":
            raise RuntimeError("injected: delivery failed")
        return deliver(group, event, is_json)

    relay._deliver = failing_once

    async def scenario(url: str) -> list[str | bytes]:
        other_process = Hub(redis.url)
        await other_process.start()
        try:
            async with connect(url, open_timeout=WAIT) as ws:
                assert await asyncio.wait_for(ws.recv(), WAIT) == "joined"
                for text in ("poison", "after 1", "after 2"):
                    other_process.broadcast("room", text)
                return [await asyncio.wait_for(ws.recv(), WAIT) for _ in range(2)]
        finally:
            await other_process.stop()

    with (
        caplog.at_level(logging.WARNING, logger="cello.hub"),
        ThreadServer(app, ws="websockets-sansio") as server,
    ):
        got = asyncio.run(scenario(server.url("/ws/room")))
        assert app.hub.connected  # skipped, not resubscribed
    assert got == ["after 1", "after 2"]
    assert relay.skipped == 1
    [record] = [r for r in caplog.records if "skipped" in r.getMessage()]
    assert record.name == "cello.hub"
    assert record.exc_info is not None
    assert "RuntimeError: injected: delivery failed" in caplog.text  # the traceback
    assert "subscribing again" not in caplog.text


def test_a_failure_reading_the_subscription_is_logged_and_it_subscribes_again(
    redis: RedisServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """redis-py raising something other than a Redis error while reading (injected once, at
    `PubSub.get_message`) restarts the subscription: logged with the traceback, not
    `connected` until it is subscribed again, then delivery resumes."""
    app = joining_app(redis.url)
    connected_when_resubscribing: list[bool] = []
    failed: list[bool] = []
    get_message = PubSub.get_message

    async def failing_once(self: PubSub, *args: Any, **kwargs: Any) -> Any:
        if failed and not connected_when_resubscribing:
            connected_when_resubscribing.append(app.hub.connected)
        message = await get_message(self, *args, **kwargs)
        if not failed and carries(message, b"break"):
            failed.append(True)
            raise RuntimeError("injected: unexpected reply")
        return message

    monkeypatch.setattr(PubSub, "get_message", failing_once)

    async def scenario(url: str) -> str | bytes:
        other_process = aioredis.Redis.from_url(redis.url)  # publishing in the wire format
        origin = uuid.uuid4().bytes
        try:
            async with connect(url, open_timeout=WAIT) as ws:
                assert await asyncio.wait_for(ws.recv(), WAIT) == "joined"
                await other_process.publish("cello:hub:room", origin + b"tbreak")
                await until(
                    lambda: bool(connected_when_resubscribing) and app.hub.connected,
                    "the relay did not subscribe again",
                )
                await other_process.publish("cello:hub:room", origin + b"tafter")
                return await asyncio.wait_for(ws.recv(), WAIT)
        finally:
            await other_process.aclose()

    with (
        caplog.at_level(logging.WARNING, logger="cello.hub"),
        ThreadServer(app, ws="websockets-sansio") as server,
    ):
        got = asyncio.run(scenario(server.url("/ws/room")))
    assert got == "after"
    assert connected_when_resubscribing == [False]
    [record] = [r for r in caplog.records if "subscribing again" in r.getMessage()]
    assert record.name == "cello.hub"
    assert record.exc_info is not None
    assert "RuntimeError: injected: unexpected reply" in caplog.text
    assert "subscribed again" in caplog.text


def test_a_failure_publishing_is_logged_and_the_publisher_goes_on(
    redis: RedisServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A non-Redis exception while publishing (injected once, at `Pipeline.execute`) drops
    that batch, counted and logged with the traceback; later broadcasts are published."""
    execute = Pipeline.execute
    failed: list[bool] = []

    async def failing_once(self: Pipeline, *args: Any, **kwargs: Any) -> Any:
        if not failed:
            failed.append(True)
            raise RuntimeError("injected: publishing failed")
        return await execute(self, *args, **kwargs)

    monkeypatch.setattr(Pipeline, "execute", failing_once)
    app = App(hub=redis.url)
    relay = relay_of(app)

    async def scenario() -> bytes:
        await app.startup()
        watcher = aioredis.Redis.from_url(redis.url)
        pubsub = watcher.pubsub()
        await pubsub.psubscribe("cello:hub:*")
        try:
            await pubsub.get_message(timeout=WAIT)  # the subscription's confirmation
            app.hub.broadcast("g", "lost")
            await until(lambda: relay.dropped == 1, "the failed batch was not counted")
            app.hub.broadcast("g", "after")
            message = await pubsub.get_message(timeout=WAIT)
            assert message is not None
            data: bytes = message["data"]
            assert app.hub.running
            return data
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]
            await watcher.aclose()
            await app.shutdown()

    with caplog.at_level(logging.WARNING, logger="cello.hub"):
        data = asyncio.run(scenario())
    assert data.endswith(b"tafter")
    [record] = [r for r in caplog.records if "publishing to" in r.getMessage()]
    assert record.name == "cello.hub"
    assert record.exc_info is not None
    assert "RuntimeError: injected: publishing failed" in caplog.text
    assert relay.dropped == 1


def assert_ended_unexpectedly(
    caplog: pytest.LogCaptureFixture, tasks_left: set[str], task: str
) -> None:
    """The relay task's unforeseen end was logged with its traceback, and no relay task
    outlived the app's shutdown."""
    assert not any(name.startswith("cello-hub") for name in tasks_left), tasks_left
    [record] = [r for r in caplog.records if "ended unexpectedly" in r.getMessage()]
    assert record.name == "cello.hub"
    assert record.exc_info is not None
    assert record.exc_info[0] is Unforeseen
    assert f"Unforeseen: injected into the {task}" in caplog.text


def test_a_publisher_that_ends_unexpectedly_is_logged_and_reported(
    redis: RedisServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Should the publisher end anyway (a `BaseException` no handler expects, injected at
    `Pipeline.execute`), that is logged with the traceback, `running` turns false,
    broadcasts are counted as dropped instead of queued, and shutdown ends cleanly."""

    async def execute_or_die(self: Pipeline, *args: Any, **kwargs: Any) -> Any:
        raise Unforeseen("injected into the publisher")

    monkeypatch.setattr(Pipeline, "execute", execute_or_die)
    app = App(hub=redis.url)
    relay = relay_of(app)

    async def scenario() -> set[str]:
        await app.startup()
        try:
            assert app.hub.running
            app.hub.broadcast("g", "kills the publisher")
            await until(
                lambda: not app.hub.running and "ended unexpectedly" in caplog.text,
                "the publisher's end was not noticed",
            )
            assert relay.dropped == 1  # the batch it was sending
            app.hub.broadcast("g", "nobody to publish it")  # nothing raised into the caller
            assert relay.dropped == 2  # counted, not queued
            assert app.hub.connected  # the subscriber is unaffected
        finally:
            await app.shutdown()
        return {t.get_name() for t in asyncio.all_tasks()} - {"main"}

    with caplog.at_level(logging.WARNING, logger="cello.hub"):
        left = asyncio.run(scenario())
    assert_ended_unexpectedly(caplog, left, "publisher")


def test_a_subscriber_that_ends_unexpectedly_is_logged_and_reported(
    redis: RedisServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Should the subscriber end anyway (a `BaseException` no handler expects, injected at
    `PubSub.get_message`), that is logged with the traceback, `connected` and `running`
    turn false, and shutdown ends cleanly."""
    get_message = PubSub.get_message

    async def get_message_or_die(self: PubSub, *args: Any, **kwargs: Any) -> Any:
        message = await get_message(self, *args, **kwargs)
        if carries(message, b"die"):
            raise Unforeseen("injected into the subscriber")
        return message

    monkeypatch.setattr(PubSub, "get_message", get_message_or_die)
    app = App(hub=redis.url)

    async def scenario() -> set[str]:
        await app.startup()
        other_process = aioredis.Redis.from_url(redis.url)
        try:
            assert app.hub.connected
            # On the channel every process follows (the presence's): no group needed.
            await other_process.publish("cello:hub:", uuid.uuid4().bytes + b"tdie")
            await until(lambda: not app.hub.connected, "the subscriber's end was not noticed")
            assert not app.hub.running
        finally:
            await other_process.aclose()
            await app.shutdown()
        return {t.get_name() for t in asyncio.all_tasks()} - {"main"}

    with caplog.at_level(logging.WARNING, logger="cello.hub"):
        left = asyncio.run(scenario())
    assert_ended_unexpectedly(caplog, left, "subscriber")


def test_metrics_report_the_relays_connection_and_outages(redis: RedisServer) -> None:
    from test_metrics import parse

    app = App(hub=Hub(redis.url, connect_timeout=WAIT))

    async def until(condition: Callable[[], bool]) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT
        while not condition():
            assert loop.time() < deadline, "timed out"
            await asyncio.sleep(0.02)

    async def scenario() -> list[dict[str, float]]:
        scrapes = []
        await app.startup()
        try:
            await until(lambda: app.hub.connected)
            scrapes.append(parse(app.metrics.render()))
            redis.stop()
            await until(lambda: not app.hub.connected)
            scrapes.append(parse(app.metrics.render()))
            redis.start()
            await until(lambda: app.hub.connected)
            scrapes.append(parse(app.metrics.render()))
        finally:
            await app.shutdown()
        return scrapes

    up, down, back = asyncio.run(scenario())
    assert (up["cello_hub_relay_connected"], up["cello_hub_relay_outages_total"]) == (1, 0)
    assert down["cello_hub_relay_connected"] == 0
    assert down["cello_hub_relay_outages_total"] >= 1
    assert back["cello_hub_relay_connected"] == 1
    assert up["cello_hub_relay_dropped_total"] == back["cello_hub_relay_dropped_total"] == 0


def test_a_burst_from_another_process_reaches_every_member(redis: RedisServer) -> None:
    """Another process's broadcasts arrive in bursts that redis-py returns from its buffer
    without waiting: delivered back to back, they drove members past `max_queue` before
    their writers (on the same loop) could run, and the members were dropped as too slow.
    The relay lets the loop run once a member gets behind."""
    app = App(hub=Hub(redis.url, max_queue=100, connect_timeout=WAIT))
    other_process = Hub(redis.url, connect_timeout=WAIT)
    total = 2000

    @app.websocket("/member", runner="greenlet")
    def member(ws: WebSocket) -> None:
        app.hub.join("room", ws).wait()
        ws.send_text("joined")
        for _ in ws:
            pass

    async def scenario() -> None:
        await app.startup()
        await other_process.start()
        reader = BufferedClient("/member", [])
        reading = asyncio.create_task(app(reader.scope, reader.receive, reader.send))
        try:
            await reader.wait_for_texts(1)  # joined
            for i in range(total):  # one burst: the publisher sends what queued at once
                other_process.broadcast("room", str(i))
            await reader.wait_for_texts(1 + total)
            assert reader.texts() == ["joined", *(str(i) for i in range(total))]
        finally:
            reader.leave.set()
            await reading
            await other_process.stop()
            await app.shutdown()

    asyncio.run(asyncio.wait_for(scenario(), WAIT * 3))


@pytest.mark.parametrize("handler", ["sync", "async"])
def test_a_process_subscribes_to_the_groups_it_has_members_in(
    redis: RedisServer, handler: str
) -> None:
    """Each process follows the channels of its own groups (and the presence's), so its
    cost grows with its groups, not the deployment's; a member hears other processes'
    broadcasts from the moment `join` returns (sync) or its result is awaited (async)."""
    app = App(hub=redis.url)

    @app.websocket("/ws/{group}")
    def joiner(ws: WebSocket, request: Request) -> None:
        app.hub.join(request.params["group"], ws).wait()  # a greenlet waits when it asks
        ws.send_text("joined")
        for _ in ws:
            pass

    @app.websocket("/async/{group}")
    async def ajoiner(ws: AsyncWebSocket, request: Request) -> None:
        await app.hub.join(request.params["group"], ws)
        await ws.send_text("joined")
        async for _ in ws:
            pass

    path = "/ws" if handler == "sync" else "/async"

    async def channels(client: aioredis.Redis) -> set[bytes]:
        return set(await client.pubsub_channels("cello:hub:*"))

    async def scenario(url: str) -> None:
        other_process = aioredis.Redis.from_url(redis.url)
        origin = uuid.uuid4().bytes
        try:
            await until(lambda: app.hub.connected)
            assert await channels(other_process) == {b"cello:hub:"}  # the presence's only
            async with connect(url + f"{path}/red", open_timeout=WAIT) as red:
                assert await asyncio.wait_for(red.recv(), WAIT) == "joined"
                # At once: the subscription was confirmed before the handler went on.
                await other_process.publish("cello:hub:red", origin + b"tfirst")
                assert await asyncio.wait_for(red.recv(), WAIT) == "first"
                assert await channels(other_process) == {b"cello:hub:", b"cello:hub:red"}
                async with connect(url + f"{path}/blue", open_timeout=WAIT) as blue:
                    assert await asyncio.wait_for(blue.recv(), WAIT) == "joined"
                    assert b"cello:hub:blue" in await channels(other_process)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + WAIT
            while await channels(other_process) != {b"cello:hub:"}:  # both groups left
                assert loop.time() < deadline, "the groups' channels were not unsubscribed"
                await asyncio.sleep(0.02)
        finally:
            await other_process.aclose()

    with ThreadServer(app, ws="websockets-sansio") as server:
        asyncio.run(scenario(server.url("")))


def test_a_greenlet_joining_under_the_apps_lock_never_blocks_the_loop(
    redis: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Greenlet handlers that join under one of the app's locks (as the chat example
    does): `join` used to park the greenlet, lock held, until Redis confirmed the
    group's subscription; the next handler taking the lock then blocked the loop, so
    the confirmation never came. Here confirmations are held back until the second
    handler is through: with `join` waiting, that never happens."""
    app = App(hub=redis.url, websocket_runner="greenlet")
    lock = threading.Lock()
    release = threading.Event()
    confirm = _redis_relay.RedisRelay._confirm

    def held_confirm(self: _redis_relay.RedisRelay, channel: bytes) -> None:
        if channel != self.prefix and not release.is_set():
            asyncio.get_running_loop().call_later(0.05, held_confirm, self, channel)
            return
        confirm(self, channel)

    monkeypatch.setattr(_redis_relay.RedisRelay, "_confirm", held_confirm)

    @app.websocket("/ws/{group}")
    def joiner(ws: WebSocket, request: Request) -> None:
        with lock:
            joined = app.hub.join(request.params["group"], ws)
        ws.send_text("in")
        joined.wait()  # outside the lock: waits for the confirmation here
        ws.send_text("joined")
        for _ in ws:
            pass

    async def scenario(url: str) -> None:
        async with (
            connect(url + "/ws/one", open_timeout=WAIT) as one,
            connect(url + "/ws/two", open_timeout=WAIT) as two,
        ):
            assert await asyncio.wait_for(one.recv(), WAIT) == "in"
            assert await asyncio.wait_for(two.recv(), WAIT) == "in"
            release.set()
            assert await asyncio.wait_for(one.recv(), WAIT) == "joined"
            assert await asyncio.wait_for(two.recv(), WAIT) == "joined"

    with ThreadServer(app, ws="websockets-sansio") as server:
        asyncio.run(scenario(server.url("")))
