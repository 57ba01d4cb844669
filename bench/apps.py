"""The ASGI apps the benchmarks serve with uvicorn: the raw limit and cello's two facades.

`raw` is the limit: hand-written ASGI with no framework at all. The cello apps do the same
work through cello's facades. Every app has the same three routes: `/` echoes, `/greet`
sends one greeting and waits for the close, `/fanout` is the chat room of the WebSocket
page (greet on joining, then every message received goes to everyone in the room), and
`/hub` is the same room on cello's broadcast hub (`app.hub`); for `raw`, which has no hub,
`/hub` is its `/fanout`.
"""

from __future__ import annotations

import contextlib
from typing import Any

from cello import App, AsyncWebSocket, WebSocket

Send = Any
GREETING = {"type": "websocket.send", "text": "hi"}

_raw_room: list[Send] = []


async def raw(scope: dict[str, Any], receive: Any, send: Send) -> None:
    if scope["type"] != "websocket":
        return
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    path = scope["path"]
    if path in ("/fanout", "/hub"):
        await raw_fanout(receive, send)
        return
    if path == "/greet":
        await send(GREETING)
    while True:
        event = await receive()
        if event["type"] == "websocket.disconnect":
            return
        if event.get("text") is not None:
            await send({"type": "websocket.send", "text": event["text"]})
        else:
            await send({"type": "websocket.send", "bytes": event["bytes"]})


async def raw_fanout(receive: Any, send: Send) -> None:
    """The chat loop with ASGI sends: one event, sent to every member in turn."""
    _raw_room.append(send)
    await send(GREETING)
    try:
        while True:
            event = await receive()
            if event["type"] == "websocket.disconnect":
                return
            message = {"type": "websocket.send", "text": event["text"]}
            for member in list(_raw_room):
                with contextlib.suppress(OSError):  # a member gone: its own task leaves
                    await member(message)
    finally:
        _raw_room.remove(send)


cello_sync = App()
_sync_room: list[WebSocket] = []


@cello_sync.websocket("/")
def sync_echo(ws: WebSocket) -> None:
    while True:
        msg = ws.recv()
        if msg is None or msg.is_close():
            break
        if msg.is_text():
            ws.send_text(msg.text or "")
        else:
            ws.send_binary(msg.data or b"")


@cello_sync.websocket("/greet")
def sync_greet(ws: WebSocket) -> None:
    ws.send_text("hi")
    for _ in ws:
        pass


@cello_sync.websocket("/fanout")
def sync_chat(ws: WebSocket) -> None:
    """The WebSocket page's chat room: a list of connections, `send_text` to each."""
    _sync_room.append(ws)
    ws.send_text("hi")
    try:
        while True:
            msg = ws.recv()
            if msg is None or msg.is_close():
                break
            for client in list(_sync_room):
                with contextlib.suppress(Exception):  # as on the page: that client has gone
                    client.send_text(msg.text or "")
    finally:
        _sync_room.remove(ws)


@cello_sync.websocket("/hub")
def sync_hub_chat(ws: WebSocket) -> None:
    """The same room on the hub: one `broadcast` per message instead of a loop of sends."""
    cello_sync.hub.join("room", ws)
    ws.send_text("hi")
    for msg in ws:
        cello_sync.hub.broadcast("room", msg.text or "")


cello_async = App()
_async_room: list[AsyncWebSocket] = []


@cello_async.websocket("/greet")
async def async_greet(ws: AsyncWebSocket) -> None:
    await ws.send_text("hi")
    async for _ in ws:
        pass


@cello_async.websocket("/")
async def async_echo(ws: AsyncWebSocket) -> None:
    while True:
        msg = await ws.recv()
        if msg is None or msg.is_close():
            break
        if msg.is_text():
            await ws.send_text(msg.text or "")
        else:
            await ws.send_binary(msg.data or b"")


@cello_async.websocket("/fanout")
async def async_chat(ws: AsyncWebSocket) -> None:
    _async_room.append(ws)
    await ws.send_text("hi")
    try:
        async for msg in ws:
            for client in list(_async_room):
                with contextlib.suppress(Exception):  # that client has gone
                    await client.send_text(msg.text or "")
    finally:
        _async_room.remove(ws)


@cello_async.websocket("/hub")
async def async_hub_chat(ws: AsyncWebSocket) -> None:
    cello_async.hub.join("room", ws)
    await ws.send_text("hi")
    async for msg in ws:
        await cello_async.hub.abroadcast("room", msg.text or "")


async def raw_thread(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The floor of any thread-per-connection design: the raw echo, each message handed to
    a thread and back with the least code possible (no bounds, no close handling), and a
    thread per connection held while it is open."""
    import asyncio
    import queue
    import threading

    if scope["type"] != "websocket":
        return
    await receive()
    await send({"type": "websocket.accept"})
    if scope["path"] == "/greet":
        await send(GREETING)
    loop = asyncio.get_running_loop()
    inbox: queue.SimpleQueue[str | None] = queue.SimpleQueue()
    outbox: asyncio.Queue[str] = asyncio.Queue()

    def worker() -> None:
        while (text := inbox.get()) is not None:
            loop.call_soon_threadsafe(outbox.put_nowait, text)

    async def writer() -> None:
        while True:
            await send({"type": "websocket.send", "text": await outbox.get()})

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    task = loop.create_task(writer())
    while True:
        event = await receive()
        if event["type"] == "websocket.disconnect":
            inbox.put(None)
            task.cancel()
            return
        inbox.put(event.get("text") or "")


async def raw_greenlet(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """What a sync handler could cost without a thread of its own: the raw echo as a plain
    function in a greenlet on the event loop's thread, whose `recv()` switches back to the
    connection's task; the task awaits the ASGI receive and sends what the function queued.
    The least code possible (no bounds, no close handling, nothing may block): a measure
    of that design, not an implementation of it."""
    from greenlet import getcurrent, greenlet

    if scope["type"] != "websocket":
        return
    await receive()
    await send({"type": "websocket.accept"})
    task = getcurrent()  # the loop's greenlet, running this coroutine's step
    outbox: list[str] = []

    def handler() -> None:
        if scope["path"] == "/greet":
            outbox.append("hi")
        while (text := task.switch()) is not None:  # recv(): back to the task until a message
            outbox.append(text)  # send_text()

    worker = greenlet(handler)
    worker.switch()  # run the handler up to its first recv()
    while True:
        for text in outbox:
            await send({"type": "websocket.send", "text": text})
        outbox.clear()
        event = await receive()
        if event["type"] == "websocket.disconnect":
            worker.switch(None)
            return
        worker.switch(event.get("text") or "")
