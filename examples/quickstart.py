"""The Quick Start echo: greets with "Connected!", then echoes every message.

Run: python examples/quickstart.py   (or: uvicorn examples.quickstart:app)
Then: python examples/clients/python_client.py ws://localhost:8000/ws
"""

from cello import App

app = App()


@app.websocket("/ws")
def echo(ws):
    ws.send_text("Connected!")
    while True:
        msg = ws.recv()
        if msg is None or msg.is_close():
            break
        if msg.is_text():
            ws.send_text(f"Echo: {msg.text}")
        else:
            ws.send_binary(msg.data)  # binary comes back as it came


if __name__ == "__main__":
    app.run()
