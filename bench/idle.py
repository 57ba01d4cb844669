"""The `idle_mem` and `capacity` workloads: many idle connections, then one round trip each.

Opens `n` echo connections and leaves them idle, reads the server's RSS and thread count
(its process tree) against its baseline before the first one, then sends one message on
every connection at once and counts the echoes that come back: a server that holds its
connections but can no longer answer them has not held them. The server CPU per
operation is the whole life of a connection here (open, one round trip, close).
"""

from __future__ import annotations

import asyncio
import resource
import time

from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect
from processes import status_total
from workload import Measurement, Window

#: Connections opened at once, well under the listen backlog.
BATCH = 200
#: How long the round trips on all connections may take before the rest count as lost.
ANSWER_TIMEOUT = 60.0


class Idle(WSListener):
    def __init__(self) -> None:
        self.answered: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.sent_at = 0.0

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def ask(self) -> None:
        self.sent_at = time.perf_counter()
        self.transport.send(WSMsgType.TEXT, b"ping")

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.TEXT and not self.answered.done():
            self.answered.set_result(time.perf_counter() - self.sent_at)


def allow_files(n: int) -> None:
    """Raise this process's open-file limit to its hard limit if `n` sockets need it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n + 100:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def idle(port: int, pid: int, n: int) -> Measurement:
    allow_files(n)
    url = f"ws://127.0.0.1:{port}/"
    base_rss = status_total(pid, "VmRSS")
    window = Window(pid)
    t0 = time.perf_counter()
    clients: list[Idle] = []
    for start in range(0, n, BATCH):
        opened = await asyncio.gather(
            *(
                ws_connect(Idle, url, websocket_handshake_timeout=ANSWER_TIMEOUT)
                for _ in range(min(BATCH, n - start))
            )
        )
        clients += [client for _, client in opened]
    opened_s = time.perf_counter() - t0
    await asyncio.sleep(0.5)  # let the server settle (threads started, buffers trimmed)
    rss, threads = status_total(pid, "VmRSS"), status_total(pid, "Threads")
    t1 = time.perf_counter()
    for client in clients:
        client.ask()
    done, _ = await asyncio.wait([c.answered for c in clients], timeout=ANSWER_TIMEOUT)
    trips_s = time.perf_counter() - t1
    for client in clients:
        client.transport.send_close()
        client.transport.disconnect()
    for client in clients:
        await client.transport.wait_disconnected()
    return window.close(
        len(done),
        [future.result() for future in done],
        connections=n,
        kib_per_conn=(rss - base_rss) / n,
        threads=threads,
        open_s=opened_s,
        trips_s=trips_s,
    )
