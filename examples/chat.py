"""The chat room: every message is broadcast to every connected client.

The page's example as it stands: a shared list and a loop of `send_text` calls, each
send made from the sending client's own handler thread.

Run: python examples/chat.py   (or: uvicorn examples.chat:app)
Then open examples/clients/browser_client.html in two browser tabs.
"""

import json

from cello import App

app = App()

# Store connected clients (in production, use a proper data structure)
clients = []


@app.websocket("/ws/chat")
def chat(ws):
    # Register client
    clients.append(ws)
    ws.send_text(
        json.dumps(
            {
                "type": "system",
                "message": "Welcome to the chat!",
                "users_online": len(clients),
            }
        )
    )

    # Broadcast join notification
    broadcast(
        json.dumps(
            {
                "type": "system",
                "message": "A new user joined",
                "users_online": len(clients),
            }
        ),
        exclude=ws,
    )

    # Message loop
    while True:
        msg = ws.recv()
        if msg is None or msg.is_close():
            break
        if not msg.is_text():
            ws.send_text(json.dumps({"type": "error", "message": "messages are text"}))
            continue

        # Broadcast the message to all clients
        broadcast(
            json.dumps(
                {
                    "type": "message",
                    "text": msg.text,
                }
            )
        )

    # Cleanup on disconnect
    clients.remove(ws)
    broadcast(
        json.dumps(
            {
                "type": "system",
                "message": "A user left",
                "users_online": len(clients),
            }
        )
    )


def broadcast(message, exclude=None):
    """Send a message to all connected clients."""
    for client in clients:
        if client is not exclude:
            try:
                client.send_text(message)
            except Exception:
                pass  # Client may have disconnected


if __name__ == "__main__":
    app.run()
