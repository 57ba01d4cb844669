"""The `connect_1` and `connect_20` workloads: open a WebSocket, read a greeting, close.

One client at a time, then 20 at once: the cost of a connection's whole life (handshake,
the handler starting, one message, the close) with nothing else going on.
"""

from __future__ import annotations

import asyncio
import time

from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect
from workload import Measurement, Tally, measure_window


class Greeted(WSListener):
    def __init__(self) -> None:
        self.greeted: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.TEXT and not self.greeted.done():
            self.greeted.set_result(None)


async def cycle(url: str) -> None:
    transport, client = await ws_connect(Greeted, url)
    await client.greeted
    transport.send_close()
    transport.disconnect()
    await transport.wait_disconnected()


async def connect(port: int, pid: int, parallel: int, seconds: float) -> Measurement:
    url = f"ws://127.0.0.1:{port}/greet"
    tally = Tally()
    running = True

    async def worker() -> None:
        while running:
            started = time.perf_counter()
            await cycle(url)
            tally.count += 1
            tally.latencies.append(time.perf_counter() - started)

    tasks = [asyncio.create_task(worker()) for _ in range(parallel)]
    result = await measure_window(pid, seconds, tally)
    running = False
    await asyncio.gather(*tasks)
    return result
