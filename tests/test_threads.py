"""The handler thread pool: a hard budget, reuse of idle threads, and a clean end."""

from __future__ import annotations

import os
import threading
import time

import pytest

from cello._threads import HandlerThreads


def wait_until(condition: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:  # type: ignore[operator]
        time.sleep(0.01)


def test_budget_refuses_past_the_limit_and_frees() -> None:
    pool = HandlerThreads(2, idle_timeout=0.2)
    release = threading.Event()
    assert pool.submit(release.wait)
    assert pool.submit(release.wait)
    assert not pool.submit(release.wait)
    release.set()
    wait_until(lambda: pool.busy == 0)
    assert pool.submit(lambda: None)
    pool.shutdown(5)


def test_idle_threads_are_reused_then_exit() -> None:
    pool = HandlerThreads(10, idle_timeout=0.3)
    names: list[str] = []
    done = threading.Event()
    pool.submit(lambda: names.append(threading.current_thread().name))
    wait_until(lambda: pool.busy == 0 and names)
    pool.submit(lambda: (names.append(threading.current_thread().name), done.set()))
    assert done.wait(5)
    assert names[0] == names[1]  # the idle thread took the second job
    thread = next(t for t in threading.enumerate() if t.name == names[0])
    thread.join(5)
    assert not thread.is_alive()  # and exited once idle for idle_timeout


def test_shutdown_ends_idle_threads_and_refuses_new_jobs() -> None:
    pool = HandlerThreads(10, idle_timeout=60)
    before = set(threading.enumerate())
    for _ in range(5):
        pool.submit(lambda: time.sleep(0.05))
    pool.shutdown(5)
    assert set(threading.enumerate()) - before == set()
    assert pool.closed
    with pytest.raises(RuntimeError, match="shut down"):
        pool.submit(lambda: None)


def test_a_job_raising_system_exit_leaves_no_ghost_idle_thread() -> None:
    """The thread running it ends; the next job gets a live thread (it used to be handed
    to the dead one, counted as idle, and never run)."""
    pool = HandlerThreads(10, idle_timeout=60)
    pool.submit(lambda: (_ for _ in ()).throw(SystemExit(1)))
    wait_until(lambda: pool.busy == 0)
    ran = threading.Event()
    assert pool.submit(ran.set)
    assert ran.wait(5)
    pool.shutdown(5)


def test_a_thread_the_system_refuses_frees_its_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """`Thread.start` fails (RLIMIT_NPROC, memory): the job is refused, the budget slot is
    returned, and shutdown does not try to join the thread that never started."""
    pool = HandlerThreads(1, idle_timeout=60)

    def refuse(thread: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", refuse)
    assert not pool.submit(lambda: None)
    assert pool.busy == 0
    monkeypatch.undo()
    ran = threading.Event()
    assert pool.submit(ran.set)
    assert ran.wait(5)
    pool.shutdown(5)


def test_shutdown_waits_its_timeout_in_all_not_per_thread() -> None:
    pool = HandlerThreads(10, idle_timeout=60)
    stuck = threading.Event()
    for _ in range(4):
        pool.submit(stuck.wait)
    started = time.monotonic()
    pool.shutdown(1.0)
    waited = time.monotonic() - started
    stuck.set()
    assert waited < 2.5, f"shutdown waited {waited:.1f} s for 4 stuck threads (limit 1 s)"


@pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="Linux's scheduling policies")
def test_handler_threads_run_under_the_batch_policy() -> None:
    """Woken by the loop, a handler thread must not preempt it (see `batch_scheduling`);
    the thread that creates the pool keeps its own policy."""
    own = os.sched_getscheduler(0)
    pool = HandlerThreads(2)
    policies: list[int] = []
    done = threading.Event()

    def job() -> None:
        policies.append(os.sched_getscheduler(0))
        done.set()

    assert pool.submit(job)
    assert done.wait(5)
    pool.shutdown(timeout=5)
    assert policies == [os.SCHED_BATCH]
    assert os.sched_getscheduler(0) == own
