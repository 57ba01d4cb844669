"""The benchmark routes on Flask-Sock (the sync peer), served by gunicorn's thread worker.

The same three routes as `apps.py`: `/` echoes, `/greet` greets and waits for the close,
`/fanout` is the chat room (greet on joining, every message to everyone). Each connection
holds one of gunicorn's threads, and simple-websocket adds a reader thread of its own.
"""

from __future__ import annotations

import contextlib
from typing import Any

from flask import Flask
from flask_sock import ConnectionClosed, Sock

app = Flask(__name__)
sock = Sock(app)
_room: list[Any] = []


@sock.route("/")
def echo(ws: Any) -> None:
    while True:
        ws.send(ws.receive())


@sock.route("/greet")
def greet(ws: Any) -> None:
    ws.send("hi")
    while True:
        ws.receive()


@sock.route("/fanout")
def fanout(ws: Any) -> None:
    _room.append(ws)
    ws.send("hi")
    try:
        while True:
            text = ws.receive()
            for member in list(_room):
                with contextlib.suppress(ConnectionClosed):  # that member has gone
                    member.send(text)
    finally:
        _room.remove(ws)
