"""The chat example (`examples/chat_app.py`): its protocol under a real uvicorn process with
the `websockets` client, across two processes sharing a Redis, and its page in headless
Chromium: two tabs talking, and both reconnecting after the server restarts.

The browser test saves what the first tab showed to `tests/artifacts/chat.png`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from browsers import ARTIFACTS, CHROMIUM, launched_chromium
from cello.runners import RUNNER_VARIABLE, RUNNERS
from redis_server import RedisServer
from servers import bound_socket, child_server, subprocess_server, wait_until

WAIT = 10


@pytest.fixture(scope="module", params=RUNNERS)
def port(request: pytest.FixtureRequest) -> Iterator[int]:
    """One chat server per runner for the protocol tests; each test uses rooms of its own."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv(RUNNER_VARIABLE, request.param)  # the child server inherits it
        target, extra = "examples.chat_app:app", ("--log-level", "warning")
        with subprocess_server(target, extra=extra) as (_, p):
            yield p


@pytest.fixture
def clients() -> Iterator[contextlib.ExitStack]:
    """Closes every connection a test opened, whatever happens."""
    with contextlib.ExitStack() as stack:
        yield stack


def join(
    clients: contextlib.ExitStack, port: int, room: str, nick: str, client: str = ""
) -> tuple[ClientConnection, dict[str, Any]]:
    """A connection to `room` as `nick`, and the first message it received."""
    query = urlencode({"nick": nick, "client": client or nick})
    url = f"ws://127.0.0.1:{port}/ws/rooms/{room}?{query}"
    ws = clients.enter_context(connect(url, open_timeout=WAIT))
    return ws, receive(ws)


def receive(ws: ClientConnection) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(ws.recv(WAIT))
    return message


def past_notices(ws: ClientConnection) -> dict[str, Any]:
    """The next message that is not a join/leave notice."""
    while (message := receive(ws))["type"] in ("joined", "left"):
        pass
    return message


def next_message(ws: ClientConnection) -> dict[str, Any]:
    """The next chat message, past any join/leave notices."""
    message = past_notices(ws)
    assert message["type"] == "message", message
    return message


def say(ws: ClientConnection, text: str) -> None:
    ws.send(json.dumps({"type": "message", "text": text}))


def close_code(ws: ClientConnection) -> int:
    """The close code the server sent, past any join/leave notices still arriving."""
    with pytest.raises(ConnectionClosed) as closed:
        past_notices(ws)
    assert closed.value.rcvd is not None, "closed without a close frame"
    return closed.value.rcvd.code


def nothing_arrives(ws: ClientConnection, within: float = 0.3) -> bool:
    with contextlib.suppress(TimeoutError):
        ws.recv(within)
        return False
    return True


# ------------------------------------------------------------------ the page and its assets


def test_the_app_serves_its_page_and_assets(port: int) -> None:
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=WAIT) as http:
        home = http.get("/")
        assert home.status_code == 302
        assert home.headers["location"] == "/rooms/lobby"
        page = http.get("/rooms/lobby")
        assert page.headers["content-type"].startswith("text/html")
        assert '<script type="module" src="../static/chat.js"' in page.text
        script = http.get("/static/chat.js")
        assert script.headers["content-type"].startswith("text/javascript")
        assert 'import { connect } from "../cello.js"' in script.text
        client = http.get("/cello.js")  # the browser client the page imports
        assert client.headers["content-type"].startswith("text/javascript")
        assert "new WebSocket" in client.text
        assert http.get("/static/chat.css").headers["content-type"].startswith("text/css")
        assert http.get("/static/chat_app.py").status_code == 404
        assert http.get("/rooms/no%20spaces").status_code == 404


# ------------------------------------------------------------------ the protocol


def test_join_and_leave_notices_carry_the_member_list(
    port: int, clients: contextlib.ExitStack
) -> None:
    alice, welcome = join(clients, port, "notices", "alice")
    assert welcome == {"type": "welcome", "room": "notices", "nick": "alice", "members": ["alice"]}
    bob, welcome = join(clients, port, "notices", "bob")
    assert welcome["members"] == ["alice", "bob"]
    assert receive(alice) == {"type": "joined", "nick": "bob"}
    assert nothing_arrives(bob)  # the newcomer hears of itself only through its welcome
    bob.close()
    assert receive(alice) == {"type": "left", "nick": "bob"}
    alice.close()


def test_messages_reach_everyone_in_the_room_and_no_other_room(
    port: int, clients: contextlib.ExitStack
) -> None:
    alice, _ = join(clients, port, "red", "alice")
    bob, _ = join(clients, port, "red", "bob")
    receive(alice)  # bob joined
    carol, _ = join(clients, port, "blue", "carol")
    before = time.time()
    say(bob, "hello red")
    for member in (alice, bob):  # the sender gets its own message back, in order
        message = receive(member)
        assert message["type"] == "message"
        assert (message["nick"], message["text"]) == ("bob", "hello red")
        assert before - 5 < message["time"] / 1000 < time.time() + 5
    assert nothing_arrives(carol)
    say(carol, "hello blue")
    assert receive(carol)["text"] == "hello blue"
    assert nothing_arrives(alice)
    for ws in (alice, bob, carol):
        ws.close()


@pytest.mark.parametrize(
    ("nick", "error"),
    [
        ("", "a nickname is 1-24 letters, digits, - or _"),
        ("two words", "a nickname is 1-24 letters, digits, - or _"),
        ("<script>", "a nickname is 1-24 letters, digits, - or _"),
        ("x" * 25, "a nickname is 1-24 letters, digits, - or _"),
    ],
    ids=["empty", "space", "markup", "too-long"],
)
def test_a_bad_nickname_is_refused_with_a_reason(
    port: int, clients: contextlib.ExitStack, nick: str, error: str
) -> None:
    ws, first = join(clients, port, "names", nick)
    assert first == {"type": "error", "error": error}
    assert close_code(ws) == 4000
    assert ws.close_reason == error


def test_a_taken_nickname_is_refused_and_the_room_carries_on(
    port: int, clients: contextlib.ExitStack
) -> None:
    alice, _ = join(clients, port, "taken", "alice", client="first-tab")
    impostor, first = join(clients, port, "taken", "alice", client="other-tab")
    assert first == {"type": "error", "error": "alice is already in taken"}
    assert close_code(impostor) == 4000
    assert nothing_arrives(alice)  # no notice: nobody joined or left
    say(alice, "still here")
    assert receive(alice)["text"] == "still here"
    alice.close()


def test_a_bad_room_name_is_refused(port: int, clients: contextlib.ExitStack) -> None:
    ws, first = join(clients, port, "x" * 30, "alice")
    assert first["error"] == "a room name is 1-24 letters, digits, - or _"
    assert close_code(ws) == 4000


@pytest.mark.parametrize(
    ("sent", "error"),
    [
        ("not json", "messages are JSON text"),
        (b"\x00\x01", "messages are JSON text"),
        ("[1, 2]", 'send {"type": "message", "text": "..."}'),
        ('{"type": "shout", "text": "hi"}', 'send {"type": "message", "text": "..."}'),
        ('{"type": "message", "text": "   "}', "a message needs some text"),
        ('{"type": "message", "text": 42}', "a message needs some text"),
        (json.dumps({"type": "message", "text": "x" * 501}), "a message is at most 500 characters"),
    ],
    ids=["not-json", "binary", "a-list", "unknown-type", "blank", "not-a-string", "too-long"],
)
def test_bad_input_is_answered_and_the_connection_stays_open(
    port: int, clients: contextlib.ExitStack, sent: str | bytes, error: str
) -> None:
    ws, _ = join(clients, port, "input", "alice")
    ws.send(sent)
    assert receive(ws) == {"type": "error", "error": error}
    say(ws, "this one is fine")
    assert receive(ws)["text"] == "this one is fine"
    ws.close()
    assert ws.close_code == 1000


def test_a_reconnecting_page_takes_its_nickname_back(
    port: int, clients: contextlib.ExitStack
) -> None:
    """A page whose old socket the server still holds (a network blink) gets its nickname
    back at once: the old connection is closed with 4001 and nobody sees a leave/join."""
    bob, _ = join(clients, port, "blink", "bob")
    old, _ = join(clients, port, "blink", "alice", client="tab-1")
    receive(bob)  # alice joined
    new, welcome = join(clients, port, "blink", "alice", client="tab-1")
    assert welcome["members"] == ["alice", "bob"]
    assert close_code(old) == 4001
    assert nothing_arrives(bob)
    say(new, "back")
    assert receive(bob)["text"] == "back"
    new.close()
    assert receive(bob) == {"type": "left", "nick": "alice"}
    bob.close()


@pytest.fixture
def redis_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh redis-server, its URL also set as `CELLO_HUB_URL` for the servers started."""
    if shutil.which("redis-server") is None:
        pytest.skip("the system has no redis-server")
    redis = RedisServer(tmp_path)
    redis.start()
    try:
        monkeypatch.setenv("CELLO_HUB_URL", redis.url)
        yield redis.url
    finally:
        redis.stop()


def room(port: int, name: str) -> dict[str, Any]:
    """`GET /rooms/{name}/members` of the server at `port`."""
    answer = httpx.get(f"http://127.0.0.1:{port}/rooms/{name}/members", timeout=WAIT)
    answer.raise_for_status()
    listed: dict[str, Any] = answer.json()
    return listed


def room_members(port: int, name: str) -> list[str]:
    members: list[str] = room(port, name)["members"]
    return members


def connections(port: int, name: str) -> int:
    count: int = room(port, name)["connections"]
    return count


def test_two_processes_share_a_room_through_redis(
    redis_url: str, clients: contextlib.ExitStack
) -> None:
    """Messages, notices, the member list and the nickname check span the processes."""
    quiet = ("--log-level", "warning")
    with (
        subprocess_server("examples.chat_app:app", extra=quiet) as (_, port_a),
        subprocess_server("examples.chat_app:app", extra=quiet) as (_, port_b),
    ):
        alice, _ = join(clients, port_a, "shared", "alice", client="tab-a")
        assert wait_until(lambda: room_members(port_b, "shared") == ["alice"], WAIT)
        bob, welcome = join(clients, port_b, "shared", "bob")
        assert welcome["members"] == ["alice", "bob"]
        assert receive(alice) == {"type": "joined", "nick": "bob"}
        impostor, refused = join(clients, port_b, "shared", "alice", client="tab-b")
        assert refused == {"type": "error", "error": "alice is already in shared"}
        assert close_code(impostor) == 4000
        say(bob, "across processes")
        assert receive(alice)["text"] == "across processes"
        # Alice's own notice may reach bob late: pub/sub has no order across publishers.
        assert next_message(bob)["text"] == "across processes"
        bob.close()
        assert receive(alice) == {"type": "left", "nick": "bob"}
        assert room_members(port_a, "shared") == ["alice"]


def test_a_page_reconnecting_to_another_process_keeps_its_nickname(
    redis_url: str, clients: contextlib.ExitStack
) -> None:
    """The same page (its client id) back through another process while its old socket
    is still open: it gets its nickname, and nobody sees a join or a leave."""
    quiet = ("--log-level", "warning")
    with (
        subprocess_server("examples.chat_app:app", extra=quiet) as (_, port_a),
        subprocess_server("examples.chat_app:app", extra=quiet) as (_, port_b),
    ):
        bob, _ = join(clients, port_a, "moving", "bob")
        old, _ = join(clients, port_a, "moving", "alice", client="tab-1")
        assert receive(bob) == {"type": "joined", "nick": "alice"}
        assert wait_until(lambda: connections(port_b, "moving") == 2, WAIT)
        new, welcome = join(clients, port_b, "moving", "alice", client="tab-1")
        assert welcome["members"] == ["alice", "bob"]
        assert wait_until(lambda: connections(port_a, "moving") == 3, WAIT)
        old.close()
        assert wait_until(lambda: connections(port_b, "moving") == 2, WAIT)
        say(new, "moved")
        message = receive(bob)  # no notice before it: alice never left
        assert (message["type"], message["nick"], message["text"]) == ("message", "alice", "moved")
        new.close()
        assert receive(bob) == {"type": "left", "nick": "alice"}
        assert nothing_arrives(bob)


def children_of(pid: int) -> list[int]:
    """The processes whose parent is `pid` (Linux: read from /proc)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            # The fields after the command (which may hold spaces) follow its last ")".
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                children.append(int(stat.parent.name))
    return children


def serving_process(ws: ClientConnection, candidates: list[int]) -> int:
    """Which of `candidates` holds the server's end of `ws` (Linux: /proc): the TCP
    socket from the server's port to the client's, found by its inode."""
    client_port, server_port = ws.local_address[1], ws.remote_address[1]
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = (int(address.split(":")[1], 16) for address in fields[1:3])
        if (local, remote) == (server_port, client_port):
            inodes.add(f"socket:[{fields[9]}]")
    for pid in candidates:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                if os.readlink(fd) in inodes:
                    return pid
    raise AssertionError(f"no process among {candidates} holds the connection")


def test_the_chat_under_gunicorn_with_two_workers(
    redis_url: str, tmp_path: Path, clients: contextlib.ExitStack
) -> None:
    """The deployment page's gunicorn settings: two workers, one room, a clean stop."""
    pytest.importorskip("gunicorn")
    pytest.importorskip("uvicorn_worker")
    sock = bound_socket()
    port = sock.getsockname()[1]
    sock.close()
    cmd = [
        sys.executable, "-m", "gunicorn", "-c", "examples/gunicorn.conf.py",
        "--bind", f"127.0.0.1:{port}", "--workers", "2", "examples.chat_app:app",
    ]  # fmt: skip
    # gunicorn's control socket goes to XDG_RUNTIME_DIR: keep it out of the home directory.
    env = {"XDG_RUNTIME_DIR": str(tmp_path)}
    with child_server(cmd, port, env=env) as proc:
        # Members until both workers have some.
        members: list[ClientConnection] = []
        serving: set[int] = set()
        for i in range(40):
            ws, _ = join(clients, port, "gunicorn", f"user{i}")
            members.append(ws)
            serving.add(serving_process(ws, children_of(proc.pid)))
            if len(serving) == 2:
                break
        else:
            pytest.fail("40 connections all reached the same gunicorn worker")
        # Who is in the room is known to both workers: the last one in heard of everyone.
        everyone = sorted(f"user{n}" for n in range(len(members)))
        assert wait_until(lambda: room_members(port, "gunicorn") == everyone, WAIT)
        say(members[0], "one room, two processes")
        for ws in members:
            assert next_message(ws)["text"] == "one room, two processes"
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        for ws in members:
            assert close_code(ws) == 1012  # uvicorn's "service restart"
        assert proc.wait(30) == 0
        assert time.monotonic() - started < 15


# ------------------------------------------------------------------ in the browser


@contextlib.contextmanager
def chat_command(port: int) -> Iterator[subprocess.Popen[str]]:
    """The example's own command, `python examples/chat_app.py`, on `port`."""
    with child_server([sys.executable, "examples/chat_app.py", "--port", str(port)], port) as proc:
        yield proc


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if CHROMIUM is None:
        pytest.skip("the system has no chromium")
    yield from launched_chromium()


def wait_connected(page: Any) -> None:
    page.wait_for_selector("body[data-state=connected]", timeout=20_000)


def wait_for_line(page: Any, selector: str, text: str) -> None:
    page.locator(selector, has_text=text).first.wait_for(timeout=20_000)


def test_two_tabs_chat_and_reconnect_after_a_restart(browser: Any) -> None:
    sock = bound_socket()
    port = sock.getsockname()[1]
    sock.close()  # the server binds it; a restart binds it again
    context = browser.new_context(viewport={"width": 1000, "height": 620})
    try:
        alice, bob = context.new_page(), context.new_page()  # two tabs of one browser
        with chat_command(port):
            alice.goto(f"http://127.0.0.1:{port}/")  # redirected to /rooms/lobby
            alice.fill("#nick", "alice")
            alice.press("#nick", "Enter")
            wait_connected(alice)
            bob.goto(f"http://127.0.0.1:{port}/rooms/lobby?nick=bob")
            wait_connected(bob)
            wait_for_line(alice, ".log .notice", "bob joined.")
            assert alice.inner_text("#count") == "2"

            bob.fill("#text", "Hello from the other tab!")
            bob.press("#text", "Enter")
            wait_for_line(alice, ".log .message .text", "Hello from the other tab!")
            alice.fill("#text", "<b>markup stays text</b>")
            alice.click("#composer button")
            wait_for_line(bob, ".log .message .text", "<b>markup stays text</b>")
            assert bob.locator(".log b").count() == 0

            # A third tab asking for a taken nickname is asked again, with the reason.
            impostor = context.new_page()
            impostor.goto(f"http://127.0.0.1:{port}/rooms/lobby?nick=alice")
            impostor.wait_for_selector("#join:not([hidden])", timeout=20_000)
            assert impostor.inner_text("#join-error") == "alice is already in lobby"
            assert impostor.get_attribute("body", "data-state") == "offline"
            impostor.close()

        # The server is gone: both tabs notice and keep trying.
        for page in (alice, bob):
            page.wait_for_selector("body[data-state=reconnecting]", timeout=20_000)
            assert page.is_disabled("#text")

        with chat_command(port):  # the same server again, with no memory of the room
            for page in (alice, bob):
                wait_connected(page)
                wait_for_line(page, ".log .notice", "Reconnected.")
            alice.wait_for_function(
                "document.getElementById('count').textContent === '2'", timeout=20_000
            )
            alice.fill("#text", "Still here after the restart.")
            alice.press("#text", "Enter")
            wait_for_line(bob, ".log .message .text", "Still here after the restart.")
            wait_for_line(alice, ".log .message .text", "Still here after the restart.")
            assert alice.inner_text("#members") == "alice\nbob"
            ARTIFACTS.mkdir(exist_ok=True)
            alice.screenshot(path=str(ARTIFACTS / "chat.png"))
    finally:
        context.close()
