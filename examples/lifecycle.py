"""The connection lifecycle: welcome, a message loop, cleanup when the client leaves.

Run: uvicorn examples.lifecycle:app   (or: python examples/lifecycle.py)
"""

from cello import App

app = App()


@app.websocket("/ws/lifecycle")
def lifecycle_demo(ws):
    # Phase: Connected
    ws.send_text("Welcome!")

    # Phase: Message loop
    while True:
        msg = ws.recv()
        if msg is None or msg.is_close():
            break
        ws.send_text(f"Got: {msg.text if msg.is_text() else f'{len(msg.data)} bytes'}")

    # Phase: Cleanup (connection will close when handler returns)
    print("Client disconnected")


if __name__ == "__main__":
    app.run()
