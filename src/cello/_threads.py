"""The worker threads that run synchronous WebSocket handlers.

A sync handler holds its thread for the whole life of its connection, so the pool must
hold as many threads as there are connections: anyio's shared limiter (40 tokens) would
leave the 41st client hanging. `HandlerThreads` has its own budget, refuses work past it
at once (the caller then closes the connection with 1013), and reuses idle threads so a
burst of short connections does not pay for a new thread each. Idle threads exit after
`idle_timeout` seconds, and all of them on `shutdown`.

On Linux the pool's threads run under the `SCHED_BATCH` scheduling policy (see
`batch_scheduling`): woken by the event loop with a message, a handler thread waits for
the loop to block instead of preempting it, which it could not use anyway while the loop
holds the interpreter lock. On one core that halves the context switches per echo.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import queue
import threading
import time
from collections.abc import Callable

Job = Callable[[], None]

logger = logging.getLogger("cello")

_counter = itertools.count(1)


def batch_scheduling() -> None:
    """Put the calling thread under Linux's `SCHED_BATCH` policy, where there is one.

    The same share of the CPU as the default policy (and the same nice value); only a
    wake-up no longer preempts the thread that is running. A handler thread is woken by
    the event loop's thread, which goes on holding the interpreter lock until it next
    blocks: preempting it only switches to a thread that at once waits for the lock, and
    back (measured: 7.4 context switches per echo on one core, 4.3 with this; on several
    cores the woken thread takes an idle one as before). No privilege is needed. A
    handler that wants the default policy back for its thread can call
    `os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))`.
    """
    policy = getattr(os, "SCHED_BATCH", None)
    if policy is not None:
        with contextlib.suppress(OSError):  # a seccomp profile may refuse it: no matter
            os.sched_setscheduler(0, policy, os.sched_param(0))


class HandlerThreads:
    """A bounded, elastic pool of daemon threads, one job (connection) per thread at a time."""

    def __init__(self, limit: int, *, idle_timeout: float = 5.0, name: str = "cello-ws") -> None:
        if limit < 1:
            raise ValueError("the thread limit must be at least 1")
        self.limit = limit
        self.idle_timeout = idle_timeout
        self._name = name
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._busy = 0  # threads running a job
        self._idle = 0  # threads waiting for one
        self._threads: set[threading.Thread] = set()
        self._closed = False

    @property
    def closed(self) -> bool:
        """Whether `shutdown` has been called."""
        return self._closed

    @property
    def busy(self) -> int:
        """How many jobs are running now."""
        return self._busy

    def submit(self, job: Job) -> bool:
        """Run `job` on a pool thread; `False` (and nothing runs) when the budget is spent
        or the system refuses a new thread (the limit on processes, memory)."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the handler thread pool has been shut down")
            if self._busy >= self.limit:
                return False
            self._busy += 1
            if self._idle:
                self._idle -= 1
                self._jobs.put(job)
                return True
            thread = threading.Thread(
                target=self._work, args=(job,), name=f"{self._name}-{next(_counter)}", daemon=True
            )
            self._threads.add(thread)
        try:
            thread.start()
        except RuntimeError as exc:  # "can't start new thread": RLIMIT_NPROC, memory
            with self._lock:
                self._busy -= 1
                self._threads.discard(thread)
            logger.error("Could not start a WebSocket handler thread: %s", exc)
            return False
        return True

    def _work(self, job: Job | None) -> None:
        """Run jobs until none comes within `idle_timeout`, or the pool closes.

        A thread counts as idle only while it waits in `_next_job`, so a job that raises
        anything (even `SystemExit`) ends its thread without leaving a ghost idle count
        behind that `submit` would hand the next job to.
        """
        batch_scheduling()
        try:
            while job is not None:
                try:
                    job()
                except BaseException:
                    logger.exception("A WebSocket handler thread's job raised; the thread ends")
                    return
                finally:
                    with self._lock:
                        self._busy -= 1
                job = self._next_job()
        finally:
            with self._lock:
                self._threads.discard(threading.current_thread())

    def _next_job(self) -> Job | None:
        with self._lock:
            if self._closed:
                return None
            self._idle += 1
        try:
            return self._jobs.get(timeout=self.idle_timeout)
        except queue.Empty:
            with self._lock:
                # A job may have been handed to this thread between the timeout and the lock.
                try:
                    return self._jobs.get_nowait()
                except queue.Empty:
                    self._idle -= 1
                    return None

    def shutdown(self, timeout: float | None = None) -> None:
        """Close the pool: idle threads exit now, busy ones when their job returns.

        Waits up to `timeout` seconds in all (not per thread) for every thread to end. A
        closed pool takes no jobs.
        """
        with self._lock:
            self._closed = True
            for _ in range(self._idle):
                self._jobs.put(None)
            self._idle = 0
            threads = list(self._threads)
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in threads:
            if thread is threading.current_thread():
                continue
            if deadline is None:
                thread.join()
            else:
                thread.join(max(0.0, deadline - time.monotonic()))
