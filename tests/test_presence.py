"""Who is online: `hub.join(..., member=...)`, `members()`, `count()` and presence events.

In memory, through the in-process `TestClient`, for sync handlers (on both runners) and
`async def` ones. On Redis, with a real `redis-server` on a free port: two uvicorn
processes serving `tests/apps/presence.py` with real WebSocket clients (a member of each
seen by both, a clean leave, a process killed with SIGKILL, a clean shutdown), and apps
served in this process for outages and lost events.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from redis import Redis as RedisClient
from websockets.sync.client import ClientConnection, connect

from cello import App, AsyncWebSocket, Hub, Request, WebSocket
from cello.testing import TestClient
from redis_server import RedisServer
from servers import ThreadServer, subprocess_server, wait_until

WAIT = 20
UVICORN = ("--ws", "websockets-sansio", "--log-level", "warning")
APPS = Path(__file__).parent
#: The heartbeat timing of the servers in the kill test: a killed process's members must
#: be gone within `TTL + INTERVAL` seconds (plus the time to notice it, below).
INTERVAL, TTL = 0.2, 1.0
#: What the kill test allows on top of the bound: scheduling on a busy machine.
SLACK = 2.0


def until(condition: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    assert wait_until(condition, timeout), what


# ------------------------------------------------------------------ in one process


def roster_app(hub: Hub | None = None) -> App:
    """`/rooms/{room}?nick=...&watch=1` joins with the nickname as member value (watching
    with `watch=1`) and answers each message with the room's members and count."""
    app = App(hub=hub or Hub())

    @app.websocket("/rooms/{room}")
    def room(ws: WebSocket, request: Request) -> None:
        name = request.params["room"]
        nick = request.query.get("nick")
        app.hub.join(name, ws, member=nick, presence=request.query.get("watch") == "1")
        ws.send_json({"members": app.hub.members(name), "count": app.hub.count(name)})
        for msg in ws:
            if msg.text == "leave":
                app.hub.leave(name, ws)
            ws.send_json({"members": app.hub.members(name), "count": app.hub.count(name)})

    @app.websocket("/async/{room}")
    async def async_room(ws: AsyncWebSocket, request: Request) -> None:
        name = request.params["room"]
        app.hub.join(name, ws, member={"nick": request.query.get("nick")}, presence=True)
        await ws.send_json({"members": app.hub.members(name), "count": app.hub.count(name)})
        async for _ in ws:
            await ws.send_json({"members": app.hub.members(name), "count": app.hub.count(name)})

    return app


def path(room: str, nick: str, *, watch: bool = False, kind: str = "rooms") -> str:
    return f"/{kind}/{room}?" + urlencode({"nick": nick, "watch": "1" if watch else "0"})


@pytest.mark.usefixtures("websocket_runner")
def test_members_and_count_list_member_values_in_join_order() -> None:
    app = roster_app()
    with TestClient(app) as client:
        with (
            client.websocket_connect(path("red", "alice")) as alice,
            client.websocket_connect(path("red", "bob")) as bob,
        ):
            assert alice.receive_json() == {"members": ["alice"], "count": 1}
            assert bob.receive_json() == {"members": ["alice", "bob"], "count": 2}
            with client.websocket_connect(path("blue", "carol")) as carol:
                assert carol.receive_json() == {"members": ["carol"], "count": 1}
                assert app.hub.members("red") == ["alice", "bob"]
            bob.send_text("leave")
            assert bob.receive_json() == {"members": ["alice"], "count": 1}
            alice.send_text("again")
            assert alice.receive_json() == {"members": ["alice"], "count": 1}
            assert app.hub.local_count("red") == app.hub.count("red") == 1
        until(lambda: app.hub.count("red") == 0, "closing did not remove the members")
        assert app.hub.members("red") == []


@pytest.mark.usefixtures("websocket_runner")
def test_a_watcher_gets_the_others_joins_and_leaves() -> None:
    app = roster_app()
    with (
        TestClient(app) as client,
        client.websocket_connect(path("r", "alice", watch=True)) as alice,
    ):
        # The list first (queued by `join` itself), then the others' changes: not its own join.
        assert alice.receive_json() == {"presence": "members", "group": "r", "members": ["alice"]}
        assert alice.receive_json() == {"members": ["alice"], "count": 1}
        with client.websocket_connect(path("r", "bob")) as bob:
            assert bob.receive_json()["members"] == ["alice", "bob"]
            assert alice.receive_json() == {"presence": "join", "group": "r", "member": "bob"}
            bob.send_text("leave")
            assert bob.receive_json()["members"] == ["alice"]
            assert alice.receive_json() == {"presence": "leave", "group": "r", "member": "bob"}
        with client.websocket_connect(path("r", "carol")) as carol:
            carol.receive_json()
            assert alice.receive_json() == {"presence": "join", "group": "r", "member": "carol"}
        assert alice.receive_json() == {"presence": "leave", "group": "r", "member": "carol"}
        with client.websocket_connect(path("elsewhere", "dave")) as dave:
            dave.receive_json()
        alice.send_text("members")  # nothing about another room came before the answer
        assert alice.receive_json() == {"members": ["alice"], "count": 1}


def test_async_handlers_use_the_same_calls_and_events() -> None:
    app = roster_app()
    with (
        TestClient(app) as client,
        client.websocket_connect(path("mixed", "alice", kind="async")) as alice,
    ):
        listed = {"presence": "members", "group": "mixed", "members": [{"nick": "alice"}]}
        assert alice.receive_json() == listed
        assert alice.receive_json() == {"members": [{"nick": "alice"}], "count": 1}
        with client.websocket_connect(path("mixed", "bob")) as bob:
            assert bob.receive_json()["members"] == [{"nick": "alice"}, "bob"]
            assert alice.receive_json() == {"presence": "join", "group": "mixed", "member": "bob"}
        assert alice.receive_json() == {"presence": "leave", "group": "mixed", "member": "bob"}
        alice.send_text("members")
        assert alice.receive_json() == {"members": [{"nick": "alice"}], "count": 1}


def test_a_member_value_must_be_small_json() -> None:
    """Refused at `join`, with the reason, and the connection is not joined."""
    app = App(hub=Hub(max_member_size=32))
    outcomes: list[str] = []

    @app.websocket("/join")
    def joiner(ws: WebSocket) -> None:
        for value in ("x" * 40, object(), float("nan"), {"nick": "fine"}):
            try:
                app.hub.join("g", ws, member=value)
                outcomes.append(f"joined {app.hub.members('g')}")
            except (TypeError, ValueError) as exc:
                outcomes.append(f"{type(exc).__name__}: {exc}")
        ws.send_text("done")

    with TestClient(app) as client, client.websocket_connect("/join") as ws:
        assert ws.receive_text() == "done"
    too_big, not_json, nan, fine = outcomes
    assert too_big == (
        "ValueError: a member is at most 32 bytes of JSON (Hub(max_member_size=...)), "
        "this one is 42"
    )
    assert not_json.startswith("TypeError: a member must be JSON-serializable")
    assert nan.startswith("ValueError: a member must be JSON")
    assert fine == "joined [{'nick': 'fine'}]"


def test_members_returns_copies_and_joining_twice_keeps_the_first_value() -> None:
    app = App()

    @app.websocket("/ws")
    def handler(ws: WebSocket) -> None:
        app.hub.join("g", ws, member={"nick": "alice"})
        app.hub.join("g", ws, member={"nick": "someone else"})
        app.hub.members("g")[0]["nick"] = "changed by a caller"
        ws.send_json(app.hub.members("g"))

    with TestClient(app) as client, client.websocket_connect("/ws") as ws:
        assert ws.receive_json() == [{"nick": "alice"}]


def test_presence_timing_is_checked() -> None:
    with pytest.raises(ValueError, match="at least twice"):
        Hub(presence_interval=1.0, presence_ttl=1.5)
    with pytest.raises(ValueError, match="positive"):
        Hub(presence_interval=0)
    with pytest.raises(ValueError, match="max_member_size"):
        Hub(max_member_size=3)


# ------------------------------------------------------------------ across processes


@pytest.fixture
def hub_url(redis: RedisServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """The Redis URL, also set as `CELLO_HUB_URL` for the servers the test starts."""
    monkeypatch.setenv("CELLO_HUB_URL", redis.url)
    monkeypatch.setenv("CELLO_TEST_PRESENCE", f"{INTERVAL},{TTL}")
    return redis.url


@contextlib.contextmanager
def two_servers() -> Iterator[tuple[tuple[subprocess.Popen[str], int], ...]]:
    """Two uvicorn processes serving `tests/apps/presence.py`: `(process, port)` each."""
    target = "apps.presence:app"
    with (
        subprocess_server(target, cwd=APPS, extra=UVICORN) as first,
        subprocess_server(target, cwd=APPS, extra=UVICORN) as second,
    ):
        yield first, second


def member(
    stack: contextlib.ExitStack, port: int, group: str, nick: str, *, watch: bool = False
) -> tuple[ClientConnection, dict[str, Any]]:
    """A client joined to `group` as `nick` on the server at `port`, and its greeting (with
    the presence list it was sent first under `listed`, if it watches)."""
    query = urlencode({"nick": nick, "watch": "1" if watch else "0"})
    ws = stack.enter_context(connect(f"ws://127.0.0.1:{port}/ws/{group}?{query}"))
    listed = json.loads(ws.recv(WAIT)) if watch else None
    greeting: dict[str, Any] = json.loads(ws.recv(WAIT))
    if listed is not None:
        assert listed["presence"] == "members"
        greeting["listed"] = listed["members"]
    return ws, greeting


def members(port: int, group: str) -> list[Any]:
    answer = httpx.get(f"http://127.0.0.1:{port}/members/{group}", timeout=WAIT)
    answer.raise_for_status()
    listed: list[Any] = answer.json()["members"]
    return listed


def lists(port: int, group: str, expected: list[Any]) -> bool:
    return members(port, group) == expected


def next_event(ws: ClientConnection, timeout: float = WAIT) -> dict[str, Any]:
    """The next presence event the client receives."""
    while "presence" not in (message := json.loads(ws.recv(timeout))):
        pass
    event: dict[str, Any] = message
    return event


def nothing_more(ws: ClientConnection, within: float = 0.3) -> bool:
    with contextlib.suppress(TimeoutError):
        ws.recv(within)
        return False
    return True


def test_members_joined_in_either_process_are_seen_by_both(hub_url: str) -> None:
    with two_servers() as ((_, port_a), (_, port_b)), contextlib.ExitStack() as stack:
        alice, hello_a = member(stack, port_a, "room", "alice", watch=True)
        bob, hello_b = member(stack, port_b, "room", "bob", watch=True)
        assert hello_a["pid"] != hello_b["pid"]
        for port in (port_a, port_b):
            until(functools.partial(lists, port, "room", ["alice", "bob"]), f"not on {port}")
        assert next_event(alice) == {"presence": "join", "group": "room", "member": "bob"}
        # Bob's list had alice, or he hears of her join: never neither, never both.
        if hello_b["listed"] == ["bob"]:
            assert next_event(bob)["member"] == "alice"
        else:
            assert hello_b["listed"] == ["alice", "bob"]
        assert nothing_more(bob)
        answer = httpx.get(f"http://127.0.0.1:{port_b}/members/room", timeout=WAIT).json()
        assert (answer["count"], answer["local"]) == (2, 1)

        bob.close()  # a clean leave, seen by the other process
        assert next_event(alice) == {"presence": "leave", "group": "room", "member": "bob"}
        assert members(port_a, "room") == ["alice"]


def test_a_killed_process_loses_its_members_within_the_bound(hub_url: str) -> None:
    with two_servers() as ((_, port_a), (proc_b, port_b)), contextlib.ExitStack() as stack:
        alice, _ = member(stack, port_a, "room", "alice", watch=True)
        member(stack, port_b, "room", "bob")
        member(stack, port_b, "other", "carol")
        until(lambda: members(port_a, "room") == ["alice", "bob"], "bob never listed")
        assert next_event(alice)["member"] == "bob"
        proc_b.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        proc_b.wait(WAIT)
        until(lambda: members(port_a, "room") == ["alice"], "bob stayed", TTL + INTERVAL + WAIT)
        gone_after = time.monotonic() - killed
        print(f"members of the killed process gone after {gone_after:.2f} s")
        assert gone_after < TTL + INTERVAL + SLACK
        assert next_event(alice) == {"presence": "leave", "group": "room", "member": "bob"}
        assert members(port_a, "other") == []


def test_a_clean_shutdown_removes_members_at_once(
    hub_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a 30 s heartbeat lifetime, a process stopped with SIGTERM takes its members
    out at once: the others hear of it long before the heartbeat could expire."""
    monkeypatch.setenv("CELLO_TEST_PRESENCE", "5,30")
    with two_servers() as ((_, port_a), (proc_b, port_b)), contextlib.ExitStack() as stack:
        alice, _ = member(stack, port_a, "room", "alice", watch=True)
        member(stack, port_b, "room", "bob")
        assert next_event(alice)["member"] == "bob"
        stopped = time.monotonic()
        proc_b.send_signal(signal.SIGTERM)
        assert next_event(alice) == {"presence": "leave", "group": "room", "member": "bob"}
        left_after = time.monotonic() - stopped
        print(f"members of the stopped process gone after {left_after:.2f} s")
        assert left_after < 10
        assert proc_b.wait(WAIT) == -signal.SIGTERM  # uvicorn's exit after a clean stop
        assert members(port_a, "room") == ["alice"]


# ------------------------------------------------------------------ faults, in this process


def redis_app(url: str, interval: float = INTERVAL, ttl: float = TTL) -> App:
    return roster_app(Hub(url, presence_interval=interval, presence_ttl=ttl))


def counting_reloads(hub: Hub) -> list[None]:
    """A list that grows by one each time `hub`'s roster is loaded whole from Redis."""
    reloads: list[None] = []
    replace = hub.remote_replaced

    def counted(records: dict[tuple[str, str], Any]) -> None:
        replace(records)
        reloads.append(None)

    hub.remote_replaced = counted  # type: ignore[method-assign]  # what the presence calls
    return reloads


def back(hub: Hub, reloads: list[None], before: int) -> bool:
    """Whether `hub` is subscribed again, its roster was loaded from the restarted Redis
    (reloaded since `before` reloads), and it lists alice and bob (written back by both).
    Until that load it shows bob as last known; a load made before b wrote him back
    drops him until his join arrives: being subscribed and listing him is not enough."""
    return hub.connected and len(reloads) > before and hub.members("room") == ["alice", "bob"]


@pytest.mark.usefixtures("websocket_runner")
def test_an_outage_raises_nothing_into_handlers_and_presence_comes_back(
    redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """While Redis is down, joins, leaves and reads answer from this process's roster (the
    other process's members as last known); once a Redis with no memory of them is back,
    each process writes its members again and both see everyone."""
    app_a, app_b = redis_app(redis.url), redis_app(redis.url)
    reloads = {app: counting_reloads(app.hub) for app in (app_a, app_b)}
    with (
        caplog.at_level(logging.WARNING, logger="cello.hub"),
        ThreadServer(app_a, ws="websockets-sansio") as a,
        ThreadServer(app_b, ws="websockets-sansio") as b,
        contextlib.ExitStack() as stack,
    ):

        def join(server: ThreadServer, nick: str, watch: bool = False) -> ClientConnection:
            ws = stack.enter_context(connect(server.url(path("room", nick, watch=watch))))
            json.loads(ws.recv(WAIT))
            return ws

        alice = join(a, "alice", watch=True)
        join(b, "bob")
        until(lambda: app_a.hub.members("room") == ["alice", "bob"], "bob not seen by a")
        assert next_event(alice)["member"] == "bob"

        redis.stop()
        carol = join(a, "carol")  # joins during the outage: seen here at once
        assert next_event(alice)["member"] == "carol"
        carol.send("members")
        assert json.loads(carol.recv(WAIT)) == {
            "members": ["alice", "bob", "carol"],  # bob: as last known
            "count": 3,
        }
        carol.send("leave")
        assert json.loads(carol.recv(WAIT))["members"] == ["alice", "bob"]
        assert next_event(alice)["member"] == "carol"

        before = {app: len(reloads[app]) for app in (app_a, app_b)}  # none in the outage
        redis.start()  # empty: it kept nothing
        # Each process writes its members back on its own next round, and loads the
        # roster again; the other's members come with that load or, if it was made first,
        # with their join events.
        for app in (app_a, app_b):
            came_back = functools.partial(back, app.hub, reloads[app], before[app])
            until(came_back, "presence did not come back")
        carol.send("members")  # every handler is still there to answer
        assert json.loads(carol.recv(WAIT))["members"] == ["alice", "bob"]
    assert "presence on" in caplog.text
    assert "back after" in caplog.text


def test_a_lost_event_is_noticed_by_the_next_one(redis: RedisServer) -> None:
    """An event that never arrives (dropped here on purpose) leaves a gap in the numbers:
    the next event reloads the roster at once, long before a tick would."""
    app_a, app_b = redis_app(redis.url, 5, 15), redis_app(redis.url, 5, 15)
    relay, presence = app_a.hub._relay, app_a.hub._presence
    assert relay is not None
    assert presence is not None
    received = presence.received
    dropped: list[bytes] = []

    def losing_carols_join(data: bytes) -> None:
        if b'"carol"' in data and not dropped:
            dropped.append(data)
            return
        received(data)

    relay._on_presence = losing_carols_join  # where the relay hands presence events
    with (
        ThreadServer(app_a, ws="websockets-sansio"),
        ThreadServer(app_b, ws="websockets-sansio") as b,
        contextlib.ExitStack() as stack,
    ):
        for nick in ("carol", "dave"):
            stack.enter_context(connect(b.url(path("room", nick)))).recv(WAIT)
            if nick == "carol":
                until(lambda: bool(dropped), "carol's join never came")
                assert app_a.hub.members("room") == []
        started = time.monotonic()
        until(lambda: app_a.hub.members("room") == ["carol", "dave"], "no reload")
        assert time.monotonic() - started < 2.5  # the tick comes every 5 s


def test_a_lost_last_event_is_noticed_by_the_tick(redis: RedisServer) -> None:
    app_a, app_b = redis_app(redis.url), redis_app(redis.url)
    relay, presence = app_a.hub._relay, app_a.hub._presence
    assert relay is not None
    assert presence is not None
    received = presence.received
    dropped: list[bytes] = []

    def losing_bobs_join(data: bytes) -> None:
        if b'"bob"' in data and not dropped:
            dropped.append(data)
            return
        received(data)

    relay._on_presence = losing_bobs_join  # where the relay hands presence events
    with (
        ThreadServer(app_a, ws="websockets-sansio") as a,
        ThreadServer(app_b, ws="websockets-sansio") as b,
        contextlib.ExitStack() as stack,
    ):
        alice = stack.enter_context(connect(a.url(path("room", "alice", watch=True))))
        alice.recv(WAIT)
        stack.enter_context(connect(b.url(path("room", "bob")))).recv(WAIT)
        until(lambda: app_a.hub.members("room") == ["alice", "bob"], "no reload")
        assert len(dropped) == 1
        assert next_event(alice) == {"presence": "join", "group": "room", "member": "bob"}


def test_a_process_taken_for_dead_writes_its_members_back(redis: RedisServer) -> None:
    """A process whose heartbeat vanished (here: deleted, as if it had stalled past the
    lifetime) is swept by the others, who see its members leave; at its next heartbeat it
    finds its own gone and writes its members back, and they are seen joining again."""
    app_a = redis_app(redis.url, 5, 15)  # slow to notice: the other sweeps first
    app_b = redis_app(redis.url)
    with (
        ThreadServer(app_a, ws="websockets-sansio") as a,
        ThreadServer(app_b, ws="websockets-sansio") as b,
        contextlib.ExitStack() as stack,
        RedisClient.from_url(redis.url) as direct,
    ):
        stack.enter_context(connect(a.url(path("room", "alice")))).recv(WAIT)
        bob = stack.enter_context(connect(b.url(path("room", "bob", watch=True))))
        until(lambda: app_b.hub.members("room") == ["alice", "bob"], "alice not seen by b")
        if json.loads(bob.recv(WAIT))["members"] == ["bob"]:  # alice not yet listed
            assert next_event(bob)["member"] == "alice"
        assert direct.delete(f"cello:hub:presence:alive:{app_a.hub._process}") == 1
        assert next_event(bob) == {"presence": "leave", "group": "room", "member": "alice"}
        assert app_b.hub.members("room") == ["bob"]
        assert next_event(bob) == {"presence": "join", "group": "room", "member": "alice"}
        assert app_b.hub.members("room") == ["alice", "bob"]
        assert app_a.hub.members("room") == ["alice", "bob"]  # a's own never left it


def test_stop_ends_the_presence_task_even_if_redis_turns_its_cancel_into_an_error(
    redis: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Redis call cancelled by `stop()` may raise a connection error instead of letting
    the cancel through (seen as a shutdown that never ended, about one run in fifty); the
    task must end anyway, not take it for an outage and retry forever."""
    import asyncio

    from redis.exceptions import ConnectionError as RedisConnectionError

    from cello._presence import RedisPresence

    in_round = asyncio.Event()

    async def swallowing_round(self: RedisPresence, work: Any, now: float) -> None:
        in_round.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            raise RedisConnectionError("connection closed by the cancel") from None

    monkeypatch.setattr(RedisPresence, "_round", swallowing_round)
    app = App(hub=Hub(redis.url, presence_interval=0.05, presence_ttl=30))

    async def scenario() -> None:
        await app.startup()
        await asyncio.wait_for(in_round.wait(), 5)
        await asyncio.wait_for(app.shutdown(), 5)  # hung here before the fix

    asyncio.run(scenario())
