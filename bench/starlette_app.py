"""The benchmark routes on Starlette (the async peer), served by the same uvicorn.

The same three routes as `apps.py`: `/` echoes, `/greet` greets and waits for the close,
`/fanout` is the chat room (greet on joining, every message to everyone).
"""

from __future__ import annotations

import contextlib

from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

_room: list[WebSocket] = []


async def echo(ws: WebSocket) -> None:
    await ws.accept()
    while True:
        event = await ws.receive()
        if event["type"] == "websocket.disconnect":
            return
        if event.get("text") is not None:
            await ws.send_text(event["text"])
        else:
            await ws.send_bytes(event["bytes"])


async def greet(ws: WebSocket) -> None:
    await ws.accept()
    await ws.send_text("hi")
    while (await ws.receive())["type"] != "websocket.disconnect":
        pass


async def fanout(ws: WebSocket) -> None:
    await ws.accept()
    _room.append(ws)
    await ws.send_text("hi")
    try:
        while True:
            text = await ws.receive_text()
            for member in list(_room):
                with contextlib.suppress(OSError, RuntimeError):  # that member has gone
                    await member.send_text(text)
    except WebSocketDisconnect:
        pass
    finally:
        _room.remove(ws)


app = Starlette(
    routes=[
        WebSocketRoute("/", echo),
        WebSocketRoute("/greet", greet),
        WebSocketRoute("/fanout", fanout),
    ]
)
