"""cello: real-time web apps with a synchronous WebSocket API, on ASGI.

from cello import App

app = App()

@app.websocket("/ws")
def echo(ws):
    for msg in ws:
        ws.send_text(f"Echo: {msg.text}")
"""

from .app import App
from .errors import ConnectionClosed, HTTPException
from .messages import WebSocketMessage
from .request import Request
from .websocket import AsyncWebSocket, WebSocket

__all__ = [
    "App",
    "AsyncWebSocket",
    "ConnectionClosed",
    "HTTPException",
    "Request",
    "WebSocket",
    "WebSocketMessage",
]

__version__ = "0.1.0"
