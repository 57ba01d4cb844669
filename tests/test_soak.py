"""Long-running behaviour of a server process, as `app.run` serves it (`tests/apps/stress.py`):
connection churn leaves no thread, file descriptor or memory behind; SIGTERM with hundreds
of open sockets closes every one and exits in time; a checksummed soak loses, duplicates
and reorders nothing.

CI runs small sizes; `CELLO_STRESS=1` (`nox -s stress`) runs the sizes the reliability page
quotes. Every figure is printed (`pytest -s` shows them).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import signal
import socket
import struct
import subprocess
import time
import zlib

import httpx
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as aconnect
from websockets.exceptions import ConnectionClosed

from cello.serving import WS_PROTOCOL
from child import GRACEFUL_TIMEOUT, Usage, served
from servers import WS_BACKENDS

#: Every backend on threads; the greenlet runner on the backend `app.run` serves with (the
#: runner sits above the backend; the other backends' runs on greenlets are in
#: test_transport and test_faults, and a soak per pair would double this module's minutes).
RUNS = [("thread", backend) for backend in WS_BACKENDS] + [("greenlet", WS_PROTOCOL)]
#: Parametrize a test with `RUNS`, the runner through conftest's `websocket_runner`.
over_runs = pytest.mark.parametrize(
    ("websocket_runner", "backend"), RUNS, indirect=["websocket_runner"]
)

pytestmark = pytest.mark.usefixtures("websocket_runner")


STRESS = os.environ.get("CELLO_STRESS") == "1"
BINARY_HEADER = struct.Struct("!II")

#: Churn: connect/close cycles, and how many run at once.
CYCLES = 10_000 if STRESS else 2_000
CHURN_CONCURRENCY = 20
#: After a GC and `malloc_trim`, RSS may end this much above its baseline, and the count of
#: live Python objects this far from it (caches that fill on first use).
RSS_TOLERANCE = 8 * 1024 * 1024
OBJECT_TOLERANCE = 50
#: Shutdown: sockets open when SIGTERM arrives.
OPEN_AT_SHUTDOWN = 500
#: Soak: connections, and messages each way on each.
SOAK_CONNECTIONS = 100 if STRESS else 50
SOAK_MESSAGES = 1_000 if STRESS else 400


# ----------------------------------------------------------------- the server process


def server_stats(port: int) -> dict[str, int]:
    """The app's own count of objects, threads and connections, after a GC and a heap trim."""
    stats: dict[str, int] = httpx.get(f"http://127.0.0.1:{port}/stats", timeout=30).json()
    return stats


def quiescent(pid: int, port: int, timeout: float = 30) -> tuple[dict[str, int], Usage]:
    """The server's figures once no connection is open and its thread and fd counts have
    held still for 2 s (idle handler threads exit after 0.5 s in this app)."""
    deadline = time.monotonic() + timeout
    stable_since, last = time.monotonic(), Usage.of(pid)
    while True:
        assert time.monotonic() < deadline, f"the server never settled: {last}"
        time.sleep(0.2)
        usage = Usage.of(pid)
        if (usage.threads, usage.fds) != (last.threads, last.fds):
            stable_since, last = time.monotonic(), usage
        elif time.monotonic() - stable_since > 2:
            stats = server_stats(port)
            if not stats["connections"] and not stats["busy_handlers"]:
                # The stats request's own connection closes on the server's side soon after.
                while (usage := Usage.of(pid)).fds != last.fds:
                    assert time.monotonic() < deadline, f"the server never settled: {usage}"
                    time.sleep(0.05)
                return stats, usage


def abort(client: ClientConnection) -> None:
    """Vanish with a TCP reset: no close frame, no FIN."""
    sock = client.transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.transport.abort()


# ----------------------------------------------------------------- churn


async def churn(url: str, cycles: int, concurrency: int) -> None:
    """`cycles` connections: a clean close after an echo, a reset after an echo, a reset
    right after the handshake, a reset with a message half sent, in turn."""
    counter = iter(range(cycles))

    async def one(n: int) -> None:
        client = await aconnect(url, open_timeout=30, close_timeout=10)
        kind = n % 4
        if kind == 2:
            abort(client)
            return
        if kind == 3:
            client.transport.write(b"\x82\xfe\x10\x00" + b"\x00" * 4 + b"x" * 100)
            abort(client)
            return
        await client.send(f"cycle {n}")
        assert await asyncio.wait_for(client.recv(), 30) == f"cycle {n}"
        if kind == 0:
            await client.close()
        else:
            abort(client)

    async def worker() -> None:
        for n in counter:
            await one(n)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


@over_runs
def test_churn_returns_threads_fds_and_memory_to_baseline(backend: str) -> None:
    with served(backend) as (proc, port):
        url = f"ws://127.0.0.1:{port}/echo"
        asyncio.run(churn(url, 400, CHURN_CONCURRENCY))  # warm-up: pools, caches, arenas
        before, baseline = quiescent(proc.pid, port)
        started = time.monotonic()
        asyncio.run(churn(url, CYCLES, CHURN_CONCURRENCY))
        elapsed = time.monotonic() - started
        after_stats, after = quiescent(proc.pid, port)
    print(
        f"\nchurn [{backend}] {CYCLES} cycles in {elapsed:.1f} s; baseline {baseline}, "
        f"{before['objects']} objects; after {after}, {after_stats['objects']} objects"
    )
    assert after.threads == baseline.threads
    assert after.fds <= baseline.fds  # the baseline may still count a closing socket
    assert abs(after_stats["objects"] - before["objects"]) < OBJECT_TOLERANCE
    assert after.rss - baseline.rss < RSS_TOLERANCE


# ----------------------------------------------------------------- shutdown under load


async def hold_then_sigterm(url: str, proc: subprocess.Popen[str]) -> tuple[list[int], float]:
    """Open the sockets, SIGTERM the server, and collect the close code each client gets."""
    clients = []
    for batch in range(0, OPEN_AT_SHUTDOWN, 50):
        opened = await asyncio.gather(
            *(aconnect(url, open_timeout=30) for _ in range(min(50, OPEN_AT_SHUTDOWN - batch)))
        )
        clients += opened
    for client in clients:
        assert await asyncio.wait_for(client.recv(), 30) == "ready"
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)

    async def close_code(client: ClientConnection) -> int:
        try:
            await asyncio.wait_for(client.recv(), GRACEFUL_TIMEOUT + 5)
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd is not None else -1
        return 0  # a message instead of a close

    codes = await asyncio.gather(*(close_code(client) for client in clients))
    return codes, started


@pytest.mark.parametrize(
    "backend", [None, *WS_BACKENDS] if STRESS else [None], ids=lambda b: b or "app.run"
)
def test_sigterm_with_hundreds_of_open_sockets(backend: str | None) -> None:
    with served(backend) as (proc, port):
        codes, started = asyncio.run(hold_then_sigterm(f"ws://127.0.0.1:{port}/hold", proc))
        returncode = proc.wait(GRACEFUL_TIMEOUT + 5)
        exited_after = time.monotonic() - started
        assert proc.stdout is not None
        output = proc.stdout.read()
    name = backend or "app.run"
    print(f"\nshutdown [{name}] {OPEN_AT_SHUTDOWN} sockets: exit in {exited_after:.2f} s")
    assert codes == [1001] * OPEN_AT_SHUTDOWN
    assert output.count("handler returned: 1001") == OPEN_AT_SHUTDOWN, output[-2000:]
    assert returncode in (0, -signal.SIGTERM)
    assert exited_after < GRACEFUL_TIMEOUT


# ----------------------------------------------------------------- checksummed soak


ALPHABET = "abcxyz 019 éß ☃ 中文 \U0001f600\U0001f3b5 \u200d"


def soak_message(rng: random.Random, seq: int) -> tuple[str | bytes, bytes]:
    """A random text or binary soak message and its body."""
    if rng.random() < 0.5:
        text = "".join(rng.choices(ALPHABET, k=rng.randint(0, 300)))
        body = text.encode()
        return f"{seq} {zlib.crc32(body):08x} {text}", body
    body = rng.randbytes(rng.randint(0, 3000))
    return BINARY_HEADER.pack(seq, zlib.crc32(body)) + body, body


def reply_body(reply: str | bytes, seq: int) -> bytes:
    """Check a server reply's sequence number and checksum; its body."""
    if isinstance(reply, str):
        seq_text, crc_text, text = reply.split(" ", 2)
        got, crc, body = int(seq_text), int(crc_text, 16), text.encode()
    else:
        got, crc = BINARY_HEADER.unpack_from(reply)
        body = reply[BINARY_HEADER.size :]
    assert got == seq, f"reply {got} arrived where {seq} was due"
    assert zlib.crc32(body) == crc, f"reply {seq} is corrupted"
    return body


async def soak_one(url: str, n: int, messages: int) -> int:
    """One connection: send every message without waiting, read every reply in order."""
    rng = random.Random(n)
    sent = [soak_message(rng, seq) for seq in range(messages)]
    async with aconnect(url, open_timeout=30, max_size=None) as client:

        async def send_all() -> None:
            for message, _ in sent:
                await client.send(message)

        sender = asyncio.create_task(send_all())
        for seq, (message, body) in enumerate(sent):
            reply = await asyncio.wait_for(client.recv(), 60)
            expected = body.decode()[::-1].encode() if isinstance(message, str) else body[::-1]
            assert reply_body(reply, seq) == expected
        await sender
        await client.send("done")
        summary = await asyncio.wait_for(client.recv(), 60)
    digest = hashlib.sha256(b"".join(body for _, body in sent)).hexdigest()
    assert summary == f'{{"received":{messages},"sha256":"{digest}"}}'
    return messages


@over_runs
def test_checksummed_soak_loses_nothing(backend: str) -> None:
    async def run(url: str) -> list[int]:
        return await asyncio.gather(
            *(soak_one(url, n, SOAK_MESSAGES) for n in range(SOAK_CONNECTIONS))
        )

    with served(backend) as (_proc, port):
        started = time.monotonic()
        counts = asyncio.run(run(f"ws://127.0.0.1:{port}/soak"))
        elapsed = time.monotonic() - started
    total = sum(counts)
    print(
        f"\nsoak [{backend}] {SOAK_CONNECTIONS} connections x {SOAK_MESSAGES} messages each way:"
        f" {2 * total} messages in {elapsed:.1f} s, none lost, duplicated or reordered"
    )
    assert counts == [SOAK_MESSAGES] * SOAK_CONNECTIONS
