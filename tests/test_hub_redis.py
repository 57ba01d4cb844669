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
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis
from websockets.asyncio.client import ClientConnection, connect

from cello import App, Hub, WebSocket, _redis_relay
from redis_server import RedisServer
from servers import ThreadServer, subprocess_server

MESSAGES = 2000
WAIT = 20
UVICORN = ("--ws", "websockets-sansio", "--log-level", "warning")


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


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

    async def until(condition: Callable[[], bool]) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT
        while not condition():
            assert loop.time() < deadline, "timed out"
            await asyncio.sleep(0.02)

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
