"""Receiving messages: prints what arrives until the client disconnects or closes.

Run: uvicorn examples.receiving:app   (or: python examples/receiving.py)
"""

from cello import App

app = App()


@app.websocket("/ws")
def handler(ws):
    while True:
        msg = ws.recv()
        if msg is None:
            break  # Client disconnected
        if msg.is_close():
            break  # Client sent close frame
        if msg.is_text():
            print(f"Text: {msg.text}")
        elif msg.is_binary():
            print(f"Binary: {len(msg.data)} bytes")


if __name__ == "__main__":
    app.run()
