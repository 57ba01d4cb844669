"""The `echo_1` and `echo_50` workloads: sequential round trips of a 32-byte text message.

Each connection sends its next message as soon as the echo of the previous one arrives,
so one connection measures the cost of a message with the server otherwise idle, and 50
measure it with the server busy (where per-message overheads can be batched away).
"""

from __future__ import annotations

import time

from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect
from workload import PAYLOAD, Measurement, Tally, measure_window

#: Keep every 16th latency: plenty for percentiles, little work per message.
SAMPLE_EVERY = 16


class Echoer(WSListener):
    """Sends the next message as soon as the echo of the previous one arrives."""

    def __init__(self, tally: Tally) -> None:
        self.tally = tally
        self.sent_at = 0.0
        self.running = True

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def start(self) -> None:
        self.sent_at = time.perf_counter()
        self.transport.send(WSMsgType.TEXT, PAYLOAD)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type != WSMsgType.TEXT:
            return
        now = time.perf_counter()
        tally = self.tally
        tally.count += 1
        if tally.count % SAMPLE_EVERY == 0:
            tally.latencies.append(now - self.sent_at)
        if self.running:
            self.sent_at = now
            transport.send(WSMsgType.TEXT, PAYLOAD)


async def echo(port: int, pid: int, connections: int, seconds: float) -> Measurement:
    tally = Tally()
    clients = [
        (await ws_connect(lambda: Echoer(tally), f"ws://127.0.0.1:{port}/"))[1]
        for _ in range(connections)
    ]
    for client in clients:
        client.start()
    result = await measure_window(pid, seconds, tally)
    for client in clients:
        client.running = False
        client.transport.send_close()
        client.transport.disconnect()
    for client in clients:
        await client.transport.wait_disconnected()
    return result
