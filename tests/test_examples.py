"""Every example of the WebSocket page, served by a real uvicorn process and driven by the
`websockets` client, behaves as the page says."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from servers import ROOT, subprocess_server

pytestmark = pytest.mark.usefixtures("websocket_runner")

WAIT = 10


@contextlib.contextmanager
def served(module: str, **options: object) -> Iterator[tuple[subprocess.Popen[str], str]]:
    with subprocess_server(f"examples.{module}:app", **options) as (proc, port):  # type: ignore[arg-type]
        yield proc, f"ws://127.0.0.1:{port}"


def output_of(proc: subprocess.Popen[str], expected: str, timeout: float = WAIT) -> str:
    """Stop the server and return what it printed, once `expected` could have appeared."""
    time.sleep(0.2)
    proc.terminate()
    out, _ = proc.communicate(timeout=timeout)
    assert expected in out, out
    return out


def close_code(client: ClientConnection) -> int:
    with pytest.raises(ConnectionClosed) as closed:
        client.recv(WAIT)
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code


@pytest.mark.parametrize("use_run", [False, True], ids=["uvicorn", "app.run"])
def test_quickstart(use_run: bool) -> None:
    with served("quickstart", use_run=use_run) as (_, url), connect(f"{url}/ws") as ws:
        assert ws.recv(WAIT) == "Connected!"
        ws.send("Hello!")
        assert ws.recv(WAIT) == "Echo: Hello!"
        ws.send(b"\x00\xff")  # binary comes back as it came, not as "Echo: None"
        assert ws.recv(WAIT) == b"\x00\xff"
        ws.close()
        assert ws.close_code == 1000


def test_python_client_from_the_page() -> None:
    with served("quickstart") as (_, url):
        result = subprocess.run(
            [sys.executable, "examples/clients/python_client.py", f"{url}/ws"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
    assert result.stdout.strip() == "Received: Connected!"


def test_sending() -> None:
    with served("sending") as (_, url), connect(f"{url}/ws") as ws:
        assert ws.recv(WAIT) == "Hello, client!"
        assert ws.recv(WAIT) == b"\x00\x01\x02\x03"
        assert ws.recv(WAIT) == "Structured message"
        assert close_code(ws) == 1000


def test_receiving() -> None:
    with served("receiving") as (proc, url):
        with connect(f"{url}/ws") as ws:
            ws.send("hello there")
            ws.send(b"\x00" * 5)
        output_of(proc, "Text: hello there\nBinary: 5 bytes\n")


def test_lifecycle() -> None:
    with served("lifecycle") as (proc, url):
        with connect(f"{url}/ws/lifecycle") as ws:
            assert ws.recv(WAIT) == "Welcome!"
            ws.send("x")
            assert ws.recv(WAIT) == "Got: x"
            ws.send(b"abc")
            assert ws.recv(WAIT) == "Got: 3 bytes"
        output_of(proc, "Client disconnected")


def test_json_data() -> None:
    with served("json_data") as (_, url), connect(f"{url}/ws/data") as ws:
        assert json.loads(ws.recv(WAIT)) == {"type": "connected", "status": "ok"}
        ws.send(json.dumps({"action": "ping"}))
        assert json.loads(ws.recv(WAIT)) == {"ok": True, "command": {"action": "ping"}}
        ws.send("{not json")
        assert json.loads(ws.recv(WAIT)) == {"error": "Invalid JSON"}
        ws.send(b"{}")
        assert json.loads(ws.recv(WAIT)) == {"error": "Send JSON as a text message"}


def test_rooms() -> None:
    with served("rooms") as (_, url), connect(f"{url}/ws/rooms/lobby") as ws:
        assert ws.recv(WAIT) == "Joined room: lobby"
        ws.send("hi")
        assert ws.recv(WAIT) == "[lobby] hi"
        ws.send(b"12")
        assert ws.recv(WAIT) == "[lobby] 2 bytes"


def receive_json(ws: ClientConnection) -> dict[str, object]:
    data: dict[str, object] = json.loads(ws.recv(WAIT))
    return data


def system(message: str, users: int) -> dict[str, object]:
    return {"type": "system", "message": message, "users_online": users}


@pytest.mark.parametrize("module", ["chat", "hub_chat"])
def test_chat_three_clients_join_talk_and_leave(module: str) -> None:
    """The page's chat, and the same chat on the hub, behave alike for their clients."""
    with served(module) as (_, url), contextlib.ExitStack() as stack:
        a = stack.enter_context(connect(f"{url}/ws/chat"))
        assert receive_json(a) == system("Welcome to the chat!", 1)
        b = stack.enter_context(connect(f"{url}/ws/chat"))
        assert receive_json(b) == system("Welcome to the chat!", 2)
        assert receive_json(a) == system("A new user joined", 2)
        c = stack.enter_context(connect(f"{url}/ws/chat"))
        assert receive_json(c) == system("Welcome to the chat!", 3)
        for earlier in (a, b):
            assert receive_json(earlier) == system("A new user joined", 3)

        # Binary is refused to its sender only, not broadcast as "text": null.
        b.send(b"\x01")
        assert receive_json(b) == {"type": "error", "message": "messages are text"}

        # A message reaches everyone, its sender included (the page's broadcast has no exclude).
        b.send("hello all")
        for member in (a, b, c):
            assert receive_json(member) == {"type": "message", "text": "hello all"}

        # A clean leave.
        c.close()
        for member in (a, b):
            assert receive_json(member) == system("A user left", 2)

        # A client that vanishes without a close frame is noticed too.
        b.socket.shutdown(socket.SHUT_RDWR)
        assert receive_json(a) == system("A user left", 1)

        # The survivor still chats.
        a.send("anyone?")
        assert receive_json(a) == {"type": "message", "text": "anyone?"}


def test_browser_client_page_points_at_the_chat() -> None:
    page = (ROOT / "examples" / "clients" / "browser_client.html").read_text()
    assert 'new WebSocket("ws://localhost:8000/ws/chat")' in page


def test_rest_api() -> None:
    import httpx

    with served("rest") as (_, url), httpx.Client(base_url=url.replace("ws", "http", 1)) as http:
        assert http.get("/api/todos").json() == []
        created = http.post("/api/todos", json={"title": " tune the A string "})
        assert created.status_code == 201
        assert created.headers["location"] == "/api/todos/1"
        assert created.json() == {"id": 1, "title": "tune the A string", "done": False}
        assert http.post("/api/todos", json={"title": ""}).status_code == 422
        assert (
            http.post(
                "/api/todos", content=b"{", headers={"content-type": "application/json"}
            ).status_code
            == 400
        )
        assert http.patch("/api/todos/1", json={"done": True}).json()["done"] is True
        assert http.get("/api/todos", params={"done": "true"}).json()[0]["id"] == 1
        assert http.get("/api/todos", params={"done": "false"}).json() == []
        assert http.delete("/api/todos/1").status_code == 204
        assert http.get("/api/todos/1").status_code == 404
        assert http.put("/api/todos/1").status_code == 405
