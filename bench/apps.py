"""The servers the echo benchmark compares, each an ASGI app served by the same uvicorn.

`raw` is the limit: a hand-written ASGI echo with no framework at all. The cello apps do
the same work through cello's facades.
"""

from __future__ import annotations

from typing import Any

from cello import App, AsyncWebSocket, WebSocket


async def raw(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "websocket":
        return
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    if scope["path"] == "/greet":
        await send({"type": "websocket.send", "text": "hi"})
    while True:
        event = await receive()
        if event["type"] == "websocket.disconnect":
            return
        if event.get("text") is not None:
            await send({"type": "websocket.send", "text": event["text"]})
        else:
            await send({"type": "websocket.send", "bytes": event["bytes"]})


cello_sync = App()


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


cello_async = App()


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


async def raw_thread(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The floor of any thread-per-connection design: the raw echo, each message handed to
    a thread and back with the least code possible (no bounds, no close handling)."""
    import asyncio
    import queue
    import threading

    if scope["type"] != "websocket":
        return
    await receive()
    await send({"type": "websocket.accept"})
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
