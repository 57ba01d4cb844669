"""The page's Python client: sends one message and prints the first reply.

Run (with examples/quickstart.py serving): python examples/clients/python_client.py [URL]
The URL defaults to the page's ws://localhost:8000/ws.
"""

import asyncio
import sys

import websockets

URL = sys.argv[1] if len(sys.argv) > 1 else "ws://localhost:8000/ws"


async def client():
    async with websockets.connect(URL) as ws:
        await ws.send("Hello from Python!")
        response = await ws.recv()
        print(f"Received: {response}")


asyncio.run(client())
