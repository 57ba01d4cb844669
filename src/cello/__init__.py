"""cello: real-time web apps with a synchronous WebSocket API, on ASGI.

from cello import App

app = App()

@app.websocket("/ws")
def echo(ws):
    for msg in ws:
        ws.send_text(f"Echo: {msg.text}")
"""

from .app import App
from .blueprints import Blueprint
from .browser import ack, client_script
from .errors import ConcurrencyError, ConnectionClosed, HTTPException
from .hub import Hub
from .messages import WebSocketMessage
from .request import Request
from .responses import Response
from .runners import blocking, sleep
from .sse import SseEvent, SseStream
from .websocket import AsyncWebSocket, WebSocket

__all__ = [
    "App",
    "AsyncWebSocket",
    "Blueprint",
    "ConcurrencyError",
    "ConnectionClosed",
    "HTTPException",
    "Hub",
    "Request",
    "Response",
    "SseEvent",
    "SseStream",
    "WebSocket",
    "WebSocketMessage",
    "ack",
    "blocking",
    "client_script",
    "sleep",
]

__version__ = "0.1.0"
