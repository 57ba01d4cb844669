"""The app the churn, shutdown and soak tests serve in a child process, as `app.run` serves it.

Run as a script: `python tests/apps/stress.py --port N`; the `CELLO_TEST_WS` environment
variable picks uvicorn's WebSocket backend (unset: the one `app.run` chooses).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import hashlib
import os
import struct
import threading
import zlib

from cello import App, WebSocket, WebSocketMessage

app = App()
# Idle handler threads exit after half a second, so a test sees the thread count come back
# to its baseline without waiting out the default five seconds.
app.handler_threads.idle_timeout = 0.5

#: A binary soak message: sequence number and CRC-32 of the body, then the body.
BINARY_HEADER = struct.Struct("!II")


@app.get("/stats")
def stats() -> dict[str, int]:
    """What the process holds once garbage is collected and freed heap is handed back.

    `malloc_trim` returns the C heap's free pages to the system, so that RSS measures live
    memory rather than how fragmented the allocator's arenas happen to be.
    """
    gc.collect()
    libc = ctypes.util.find_library("c")
    if libc is not None:
        ctypes.CDLL(libc).malloc_trim(0)
    return {
        "objects": len(gc.get_objects()),
        "threads": threading.active_count(),
        "connections": len(app.live_channels),
        "busy_handlers": app.handler_threads.busy,
    }


@app.websocket("/echo")
def echo(ws: WebSocket) -> None:
    for msg in ws:
        if msg.is_text():
            ws.send_text(msg.text or "")
        else:
            ws.send_binary(msg.data or b"")


@app.websocket("/hold")
def hold(ws: WebSocket) -> None:
    ws.send_text("ready")
    for _ in ws:
        pass
    print(f"handler returned: {ws.close_code}", flush=True)


def check(msg: WebSocketMessage, expected_seq: int) -> bytes:
    """The body of a soak message after checking its sequence number and checksum.

    Raises:
        ValueError: the message is out of order or corrupted.
    """
    if msg.is_text():
        seq_text, crc_text, text = (msg.text or "").split(" ", 2)
        seq, crc, body = int(seq_text), int(crc_text, 16), text.encode()
    else:
        data = msg.data or b""
        seq, crc = BINARY_HEADER.unpack_from(data)
        body = data[BINARY_HEADER.size :]
    if seq != expected_seq:
        raise ValueError(f"message {seq} arrived where {expected_seq} was due")
    if zlib.crc32(body) != crc:
        raise ValueError(f"message {seq} is corrupted")
    return body


@app.websocket("/soak")
def soak(ws: WebSocket) -> None:
    """Check every message's order and checksum; answer each with its body reversed; at
    `done`, report the count and a digest of everything received."""
    received = 0
    digest = hashlib.sha256()
    for msg in ws:
        if msg.is_text() and msg.text == "done":
            break
        try:
            body = check(msg, received)
        except ValueError as exc:
            ws.close(4000, str(exc)[:120])
            return
        digest.update(body)
        if msg.is_text():  # reversed as characters, so it stays valid UTF-8
            back = body.decode()[::-1]
            ws.send_text(f"{received} {zlib.crc32(back.encode()):08x} {back}")
        else:
            ws.send_binary(BINARY_HEADER.pack(received, zlib.crc32(body[::-1])) + body[::-1])
        received += 1
    ws.send_json({"received": received, "sha256": digest.hexdigest()})


if __name__ == "__main__":
    backend = os.environ.get("CELLO_TEST_WS")
    options = {"ws": backend} if backend else {}
    app.run(log_level="warning", timeout_graceful_shutdown=10, **options)
