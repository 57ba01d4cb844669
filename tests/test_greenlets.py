"""The greenlet runner's parts on their own: switching, the budget, the stall watch, and
`cello.blocking` / `cello.sleep`. Each test runs in milliseconds on a plain asyncio loop."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import logging
import threading
import time

import pytest
from greenlet import getcurrent

import cello
from cello import _stall_watch
from cello._greenlets import GreenletRun, HandlerGreenlets, await_, current_handler
from cello._stall_watch import LoopStretches, StallWatch, _gc_clock
from cello.runners import check_runner, default_runner
from servers import wait_until

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="none")


async def _value(value: object) -> object:
    await asyncio.sleep(0)
    return value


async def _fail() -> None:
    await asyncio.sleep(0)
    raise KeyError("from the loop")


def test_a_handler_waits_for_awaitables_as_plain_calls() -> None:
    seen: list[object] = []

    def handler() -> None:
        seen.append(current_handler() is not None)
        seen.append(await_(_value(1)))
        seen.append(await_(_value(None)))
        seen.append(threading.current_thread() is threading.main_thread())

    asyncio.run(GreenletRun(handler, object(), route="t").run())
    assert seen == [True, 1, None, True]


def test_an_awaitable_that_raises_raises_in_the_handler() -> None:
    caught: list[BaseException] = []

    def handler() -> None:
        try:
            await_(_fail())
        except KeyError as exc:
            caught.append(exc)

    asyncio.run(GreenletRun(handler, object(), route="t").run())
    assert [type(e) for e in caught] == [KeyError]


def test_what_the_handler_raises_reaches_its_task() -> None:
    def handler() -> None:
        await_(_value(1))
        raise ValueError("handler failed")

    with pytest.raises(ValueError, match="handler failed"):
        asyncio.run(GreenletRun(handler, object(), route="t").run())


def test_cancelling_the_task_unwinds_the_handler_where_it_waits() -> None:
    unwound = threading.Event()

    def handler() -> None:
        try:
            await_(asyncio.sleep(3600))
        finally:
            unwound.set()

    async def main() -> None:
        task = asyncio.create_task(GreenletRun(handler, object(), route="t").run())
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert unwound.is_set()


def test_the_handler_sees_its_tasks_context_variables() -> None:
    seen: list[str] = []

    def handler() -> None:
        seen.append(request_id.get())
        request_id.set("set in the handler")

    async def main() -> None:
        request_id.set("abc")
        await GreenletRun(handler, object(), route="t").run()
        seen.append(request_id.get())

    asyncio.run(main())
    assert seen == ["abc", "set in the handler"]


def test_await_outside_a_handler_is_refused_and_leaves_no_warning() -> None:
    # filterwarnings=error: an un-awaited coroutine would fail the test.
    with pytest.raises(RuntimeError, match="greenlet runner"):
        await_(_value(1))
    assert current_handler() is None
    assert getcurrent() is not None


def test_the_budget_refuses_past_its_limit_and_returns_on_release() -> None:
    greenlets = HandlerGreenlets(2, stall_threshold=None)
    assert greenlets.reserve()
    assert greenlets.reserve()
    assert not greenlets.reserve()
    assert greenlets.busy == 2
    greenlets.release()
    assert greenlets.reserve()
    greenlets.shutdown()


@pytest.mark.parametrize(("limit", "threshold"), [(0, 0.1), (1, 0.0), (1, -1.0)])
def test_the_budget_checks_its_settings(limit: int, threshold: float) -> None:
    with pytest.raises(ValueError, match="must be"):
        HandlerGreenlets(limit, threshold)


# ----------------------------------------------------------------- the stall watch


def test_a_long_stretch_is_reported_once_per_route(caplog: pytest.LogCaptureFixture) -> None:
    watch = StallWatch(threshold=0.01)

    def blocks() -> None:
        time.sleep(0.05)  # what the watch is for: a handler that holds the loop
        await_(_value(None))
        time.sleep(0.05)

    async def main() -> None:
        await GreenletRun(blocks, object(), route="app.blocks", watch=watch).run()
        await GreenletRun(blocks, object(), route="app.blocks", watch=watch).run()

    with caplog.at_level(logging.WARNING, logger="cello"):
        asyncio.run(main())
    reports = [r.getMessage() for r in caplog.records if "held the event loop" in r.getMessage()]
    assert len(reports) == 1
    assert "app.blocks" in reports[0]
    assert 'runner="thread"' in reports[0]
    assert "cello.blocking" in reports[0]
    watch.stop()


def test_a_garbage_collection_is_not_the_handlers_stall(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A full collection that happens to run in a handler's stretch pauses every thread,
    wherever it was triggered: it is not reported as the handler holding the loop (it was,
    with 10,000 connections open)."""
    watch = StallWatch(threshold=0.002)
    garbage = [[[] for _ in range(4)] for _ in range(300_000)]  # a collection to walk

    def collects() -> None:
        gc.collect()  # stands for a collection an allocation triggers

    started = time.perf_counter()
    gc.collect()
    assert time.perf_counter() - started > 0.002, "the collection must outlast the threshold"
    with caplog.at_level(logging.WARNING, logger="cello"):
        asyncio.run(GreenletRun(collects, object(), route="app.collects", watch=watch).run())
    del garbage
    assert not [r for r in caplog.records if "held the event loop" in r.getMessage()]
    watch.stop()


def test_a_short_stretch_is_not_reported(caplog: pytest.LogCaptureFixture) -> None:
    watch = StallWatch(threshold=60.0)

    def quick() -> None:
        await_(_value(None))

    with caplog.at_level(logging.WARNING, logger="cello"):
        asyncio.run(GreenletRun(quick, object(), route="app.quick", watch=watch).run())
    assert not caplog.records
    assert list(watch.loops) == [threading.get_ident()]
    assert watch.loops[threading.get_ident()].running is None


def test_the_watch_thread_shows_the_blocking_call(caplog: pytest.LogCaptureFixture) -> None:
    """A sample taken while the handler still holds the loop has the blocking call's stack."""
    watch = StallWatch(threshold=0.01)
    release = threading.Event()
    holding = threading.Event()

    def blocking_call_in_the_handler() -> None:
        holding.set()
        release.wait(10)

    loop_thread = threading.Thread(target=blocking_call_in_the_handler)
    loop_thread.start()
    assert holding.wait(10)
    assert loop_thread.ident is not None
    stretch = (None, "app.stuck", time.perf_counter() - 1.0, _gc_clock.spent())
    watch.loops[loop_thread.ident] = LoopStretches(watch)
    watch.loops[loop_thread.ident].running = stretch
    try:
        with caplog.at_level(logging.WARNING, logger="cello"):
            watch._sample()
            watch._sample()  # once per route
    finally:
        release.set()
        loop_thread.join()
    reports = [r.getMessage() for r in caplog.records]
    assert len(reports) == 1
    assert "more than" in reports[0]
    assert "It was here" in reports[0]
    assert "blocking_call_in_the_handler" in reports[0]


def test_the_watch_thread_starts_with_handlers_and_ends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_stall_watch, "IDLE_EXIT", 0.0)
    watch = StallWatch(threshold=0.004)

    def watching() -> bool:
        return any(t.name == "cello-stall-watch" for t in threading.enumerate())

    watch.start()
    assert watching()
    watch.idle()
    assert wait_until(lambda: not watching())  # idle: it exits by itself
    watch.start()
    assert watching()
    watch.stop()  # shutdown: joined
    assert not watching()
    watch.start()  # stopped: nothing starts until `restart`
    assert not watching()
    watch.restart()
    watch.start()
    assert watching()
    watch.stop()


# ----------------------------------------------------------------- blocking() and sleep()


def test_blocking_runs_in_a_worker_thread_from_a_greenlet_handler() -> None:
    seen: list[object] = []

    def handler() -> None:
        request_id.set("ctx")
        seen.append(cello.blocking(lambda a, b=0: (threading.current_thread().name, a + b), 1, b=2))
        seen.append(cello.blocking(request_id.get))
        with pytest.raises(ZeroDivisionError):
            cello.blocking(lambda: 1 / 0)

    asyncio.run(GreenletRun(handler, object(), route="t").run())
    (name, total), context = seen
    assert name != threading.current_thread().name
    assert total == 3
    assert context == "ctx"


def test_sleep_in_a_greenlet_handler_lets_the_loop_run() -> None:
    order: list[str] = []

    def handler() -> None:
        cello.sleep(0.01)
        order.append("handler")

    async def main() -> None:
        task = asyncio.create_task(GreenletRun(handler, object(), route="t").run())
        await asyncio.sleep(0)
        order.append("loop")
        await task

    asyncio.run(main())
    assert order == ["loop", "handler"]


def test_blocking_and_sleep_on_a_plain_thread_just_run() -> None:
    assert cello.blocking(sum, [1, 2]) == 3
    cello.sleep(0)


def test_blocking_and_sleep_refuse_to_block_an_event_loop() -> None:
    async def main() -> None:
        with pytest.raises(RuntimeError, match=r"asyncio\.to_thread"):
            cello.blocking(sum, [1])
        with pytest.raises(RuntimeError, match=r"asyncio\.sleep"):
            cello.sleep(0)

    asyncio.run(main())


def test_runner_names_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    assert check_runner(None) is None
    assert check_runner("greenlet") == "greenlet"
    with pytest.raises(ValueError, match="'thread', 'greenlet'"):
        check_runner("threads")
    monkeypatch.delenv("CELLO_WEBSOCKET_RUNNER", raising=False)
    assert default_runner() == "thread"
    monkeypatch.setenv("CELLO_WEBSOCKET_RUNNER", "greenlet")
    assert default_runner() == "greenlet"
    monkeypatch.setenv("CELLO_WEBSOCKET_RUNNER", "fibers")
    with pytest.raises(ValueError, match="CELLO_WEBSOCKET_RUNNER"):
        default_runner()
