"""Sending messages: text, binary, a WebSocketMessage, then closing the connection.

Run: uvicorn examples.sending:app   (or: python examples/sending.py)
"""

from cello import App, WebSocketMessage

app = App()


@app.websocket("/ws")
def handler(ws):
    # Send text
    ws.send_text("Hello, client!")

    # Send binary
    ws.send_binary(b"\x00\x01\x02\x03")

    # Send a message object
    msg = WebSocketMessage.text("Structured message")
    ws.send(msg)

    # Close the connection
    ws.close()


if __name__ == "__main__":
    app.run()
