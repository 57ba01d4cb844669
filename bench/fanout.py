"""The `fanout` workload: one sender, 100 receivers, every message broadcast to the room.

All 101 connections join the server's chat room (each is greeted once it has joined);
the sender's messages go to every member, the sender included, as in the WebSocket
page's chat loop. An operation is one delivery (one message arriving on one connection),
so the server CPU per operation is the cost of one broadcast send. The sender keeps a
few messages in flight; a message's latency runs from its send to its last delivery.
Every connection receives the room's messages in the order they were sent, so the k-th
message a member receives is the sender's k-th.
"""

from __future__ import annotations

import asyncio
import time

from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect
from workload import PAYLOAD, Measurement, Tally, measure_window

RECEIVERS = 100
#: Messages in flight: enough to keep the server busy, few enough to bound its queues.
WINDOW = 4


class Room:
    """The sender's bookkeeping: deliveries still due per message, and when each was sent."""

    def __init__(self, members: int) -> None:
        self.members = members
        self.tally = Tally()
        self.due: dict[int, int] = {}
        self.sent_at: dict[int, float] = {}
        self.sent = 0
        self.running = True
        self.sender: WSTransport | None = None

    def send_next(self) -> None:
        assert self.sender is not None
        self.sent += 1
        self.due[self.sent] = self.members
        self.sent_at[self.sent] = time.perf_counter()
        self.sender.send(WSMsgType.TEXT, PAYLOAD)

    def delivered(self, seq: int) -> None:
        self.tally.count += 1
        left = self.due[seq] - 1
        if left:
            self.due[seq] = left
            return
        del self.due[seq]
        self.tally.latencies.append(time.perf_counter() - self.sent_at.pop(seq))
        if self.running:
            self.send_next()


class Member(WSListener):
    def __init__(self, room: Room) -> None:
        self.room = room
        self.received = 0
        self.greeted: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type != WSMsgType.TEXT:
            return
        if not self.greeted.done():
            self.greeted.set_result(None)  # the greeting: this member has joined the room
            return
        self.received += 1
        self.room.delivered(self.received)


async def open_room(room: Room, urls: list[str]) -> list[WSTransport]:
    """Connect the room's members, spread over `urls` in turn (the sender on the first);
    once every member has joined, the sender starts with `WINDOW` messages in flight."""
    connections = [
        await ws_connect(lambda: Member(room), urls[i % len(urls)]) for i in range(room.members)
    ]
    await asyncio.gather(*(member.greeted for _, member in connections))
    room.sender = connections[0][0]
    for _ in range(WINDOW):
        room.send_next()
    return [transport for transport, _ in connections]


async def close_room(room: Room, transports: list[WSTransport]) -> None:
    room.running = False
    for transport in transports:
        transport.send_close()
        transport.disconnect()
    for transport in transports:
        await transport.wait_disconnected()


async def fanout(
    port: int, pid: int, seconds: float, path: str = "/fanout", receivers: int = RECEIVERS
) -> Measurement:
    room = Room(receivers + 1)
    transports = await open_room(room, [f"ws://127.0.0.1:{port}{path}"])
    result = await measure_window(pid, seconds, room.tally)
    await close_room(room, transports)
    return result
