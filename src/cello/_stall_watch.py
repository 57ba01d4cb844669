"""Report a greenlet handler that holds the event loop: a blocking call in the wrong place.

A handler on the greenlet runner shares its loop's thread with every other connection on
that loop: `time.sleep(1)` there, or a blocking database driver, stalls all of them. The
runner times each stretch a handler runs between two waits (`StallWatch.enter`, `leave`); past
the threshold it logs a warning, once per route, with the handler's stack and the fix.

Two observers, so the report is both certain and useful: a watch thread samples the
running handler while it still holds the loop, so the stack shows the blocking call
itself (`sys._current_frames` gives the loop thread's frame, which is the handler's while
its greenlet runs); and the runner checks the time each stretch took when it ends, so a
stall is reported even if the watch thread was not scheduled in time (the stack then
shows where the handler waits next).

A garbage collection that runs during a stretch is not the handler's doing (it pauses
every thread, wherever it is triggered; with 10,000 connections a full collection takes
hundreds of milliseconds): its time is taken out (`GcClock`), so the warning names only
handlers that block.

Thread safety: each loop thread has its own `LoopStretches`, whose `running` only that
thread writes and the watch thread reads: an attribute stored in a slot is loaded and
stored whole (one pointer) on CPython, with the GIL and on free-threaded builds, and an
entry is a tuple replaced whole, never changed in place. `_lock` guards the rest (the
loop threads' table, the warned routes, the watch thread's life).
"""

from __future__ import annotations

import gc
import logging
import sys
import threading
import time
import traceback
from types import FrameType
from typing import Any, Final

logger = logging.getLogger("cello")

#: Seconds with no greenlet handler after which the watch thread exits (it starts again
#: with the next handler).
IDLE_EXIT: Final = 1.0

#: (the handler's greenlet, its route's name, when the stretch began, `GcClock.total` then)
Running = tuple[Any, str, float, float]


class GcClock:
    """Seconds this process has spent in garbage collections, from `gc.callbacks`.

    The callback runs in the thread that collects, while the collection holds every other
    Python thread (the GIL; a stop-the-world pause on free-threaded builds), so only one
    writes at a time; readers see a float attribute replaced whole. A handler's step reads
    `total` between collections (a collection never runs inside Python code), so only the
    watch thread, sampling from outside, needs `spent` and its collection under way.
    """

    def __init__(self) -> None:
        #: Seconds of finished collections.
        self.total = 0.0
        self._since: float | None = None  # when the running collection began

    def spent(self) -> float:
        """Seconds collected so far, a collection under way included."""
        since = self._since
        ongoing = time.perf_counter() - since if since is not None else 0.0
        return self.total + ongoing

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._since = time.perf_counter()
        elif self._since is not None:
            self.total += time.perf_counter() - self._since
            self._since = None


#: The process's one clock, installed with the first `StallWatch`.
_gc_clock = GcClock()

_perf_counter = time.perf_counter


class LoopStretches:
    """The handler stretches on one loop thread: the one under way (`running`), timed.

    One per thread, not one table keyed by thread for every stretch: a thread's id is a
    new integer object on each `threading.get_ident()`, and two of them plus two dict
    stores per message cost more than the rest of the watch (bench/instructions.py).
    """

    __slots__ = ("_watch", "running")

    def __init__(self, watch: StallWatch) -> None:
        self._watch = watch
        #: The stretch under way on this thread, `None` between stretches.
        self.running: Running | None = None

    def enter(self, handler: Any, route: str) -> Running:
        """A stretch of `handler` on the loop begins (visible to the watch thread); pass
        what this returns to `leave` when it next waits.

        Two calls around the runner's own switch, not a function wrapping it: the switch
        then happens at a shallower C stack, which greenlet copies on every switch.
        """
        entry = (handler, route, _perf_counter(), _gc_clock.total)
        self.running = entry
        return entry

    def leave(self, entry: Running) -> None:
        """The stretch `enter` began has ended: report it if it held the loop too long."""
        self.running = None
        held = _perf_counter() - entry[2]
        watch = self._watch
        if held > watch.threshold:  # rare: only then take the collections out
            handler, route, _, collected = entry
            held -= _gc_clock.total - collected
            if held > watch.threshold:
                watch.report(route, held, handler.gr_frame, finished=True)


class StallWatch:
    """Times greenlet handlers' stretches on the loop and warns about long ones."""

    def __init__(self, threshold: float) -> None:
        #: Seconds a handler may hold the loop before it is reported.
        self.threshold = threshold
        #: Each loop thread's stretches, by thread id (under `_lock`).
        self.loops: dict[int, LoopStretches] = {}
        self._lock = threading.Lock()
        self._warned: set[str] = set()  # routes already reported (under `_lock`)
        self._thread: threading.Thread | None = None  # the watch thread (under `_lock`)
        self._active = False  # whether handlers are running (under `_lock`)
        self._idle_since = 0.0  # when the last handler ended (under `_lock`)
        self._stop = threading.Event()
        if _gc_clock not in gc.callbacks:
            gc.callbacks.append(_gc_clock)

    # ----------------------------------------------------------------- the runner's side

    def on_this_thread(self) -> LoopStretches:
        """The stretches of the loop running on the calling thread (made on first need)."""
        thread = threading.get_ident()
        with self._lock:
            stretches = self.loops.get(thread)
            if stretches is None:
                stretches = self.loops[thread] = LoopStretches(self)
        return stretches

    def report(self, route: str, held: float, frame: FrameType | None, *, finished: bool) -> None:
        """Warn that `route`'s handler held the loop `held` seconds; once per route."""
        with self._lock:
            if route in self._warned:
                return
            self._warned.add(route)
        where = "".join(traceback.format_stack(frame)) if frame is not None else "  (unknown)\n"
        logger.warning(
            "WebSocket handler %s held the event loop for %s%.0f ms (greenlet runner, "
            "threshold %.0f ms): every connection on this loop waited meanwhile. %s:\n%s"
            'Run this route on a thread (@app.websocket(..., runner="thread")) or call '
            "the blocking code through cello.blocking(func, *args).",
            route,
            "" if finished else "more than ",
            held * 1000,
            self.threshold * 1000,
            "It is now waiting here" if finished else "It was here",
            where,
        )

    # ----------------------------------------------------------------- the watch thread

    def start(self) -> None:
        """A handler is running: make sure the watch thread is."""
        with self._lock:
            self._active = True
            if self._thread is not None or self._stop.is_set():
                return
            self._thread = threading.Thread(
                target=self._watch, name="cello-stall-watch", daemon=True
            )
            thread = self._thread
        thread.start()

    def idle(self) -> None:
        """No handler is running any more (the thread exits if none comes back soon)."""
        with self._lock:
            self._active = False
            self._idle_since = time.monotonic()

    def stop(self) -> None:
        """End the watch thread (the app is shutting down); `start` restarts nothing."""
        self._stop.set()
        with self._lock:
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def restart(self) -> None:
        """Allow the watch thread to start again after `stop` (the app starts again)."""
        self._stop.clear()

    def _watch(self) -> None:
        interval = self.threshold / 4
        try:
            while not self._stop.wait(interval):
                with self._lock:
                    if not self._active and time.monotonic() - self._idle_since > IDLE_EXIT:
                        return
                self._sample()
        finally:
            with self._lock:
                self._thread = None

    def _sample(self) -> None:
        now, collected_now = time.perf_counter(), _gc_clock.spent()
        with self._lock:
            loops = list(self.loops.items())
        for thread, stretches in loops:
            entry = stretches.running
            if entry is None:
                continue
            _, route, started, collected = entry
            held = now - started - (collected_now - collected)
            if held <= self.threshold or route in self._warned:
                continue
            frame = sys._current_frames().get(thread)
            if stretches.running is entry:  # still the same stretch: the frame is its
                self.report(route, held, frame, finished=False)
