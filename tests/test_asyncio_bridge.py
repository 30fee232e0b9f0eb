"""``probecore.run_asyncio``: the one trio → asyncio bridge (a loop in a worker thread).

Real time throughout (the asyncio side has its own clock, so trio's MockClock cannot drive it);
the slowest test waits about 0.1 s.
"""

from __future__ import annotations

import asyncio
import threading

import pytest
import trio

import probecore
from probecore._asyncio_bridge import THREAD_NAME, bridge_loop


async def _other_tasks() -> list[asyncio.Task[object]]:
    """Every task on the bridge loop except the one asking (runs on the bridge loop)."""
    me = asyncio.current_task()
    return [t for t in asyncio.all_tasks() if t is not me]


async def assert_no_task_left() -> None:
    assert await probecore.run_asyncio(_other_tasks) == []


async def test_result_comes_back_and_runs_on_the_bridge_thread() -> None:
    async def where(a: int, b: int) -> tuple[int, str, bool]:
        await asyncio.sleep(0)
        running = asyncio.get_running_loop()
        return a + b, threading.current_thread().name, running is bridge_loop()

    assert await probecore.run_asyncio(where, 2, 3) == (5, THREAD_NAME, True)
    assert threading.current_thread().name != THREAD_NAME
    # One loop per process: a second call uses the same loop and thread.
    first = bridge_loop()
    assert await probecore.run_asyncio(where, 1, 1) == (2, THREAD_NAME, True)
    assert bridge_loop() is first


async def test_exception_propagates_with_its_type_and_message() -> None:
    class Boom(Exception):
        pass

    async def fail() -> None:
        await asyncio.sleep(0)
        raise Boom("broken on the asyncio side")

    with pytest.raises(Boom, match="broken on the asyncio side"):
        await probecore.run_asyncio(fail)
    await assert_no_task_left()


async def test_os_errors_propagate_unchanged() -> None:
    async def refused() -> None:
        raise ConnectionRefusedError(111, "Connection refused")

    with pytest.raises(ConnectionRefusedError) as info:
        await probecore.run_asyncio(refused)
    assert info.value.errno == 111


async def test_asyncio_side_cancellation_is_not_mistaken_for_trio_cancellation() -> None:
    async def cancels_itself() -> None:
        raise asyncio.CancelledError

    with pytest.raises(RuntimeError, match="cancels_itself was cancelled on the asyncio side"):
        await probecore.run_asyncio(cancels_itself)


async def test_trio_deadline_cancels_asyncio_sleep_promptly_and_cleanup_runs() -> None:
    events: list[str] = []

    async def long_sleep() -> None:
        events.append("started")
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            events.append("cancelled")
            raise
        finally:
            await asyncio.sleep(0.01)  # cleanup may await, within the grace
            events.append("finally")

    started = trio.current_time()
    with trio.move_on_after(0.1) as scope:
        await probecore.run_asyncio(long_sleep)
    elapsed = trio.current_time() - started
    assert scope.cancelled_caught
    assert 0.1 <= elapsed < 0.6, elapsed
    # The asyncio task's cleanup had finished before run_asyncio gave control back.
    assert events == ["started", "cancelled", "finally"]
    await assert_no_task_left()


async def test_cleanup_grace_bounds_the_wait_for_a_task_that_ignores_cancellation() -> None:
    release = threading.Event()

    async def stubborn() -> None:
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                if release.is_set():
                    raise
                continue  # refuses to stop (a badly behaved library)

    started = trio.current_time()
    with trio.move_on_after(0.05):
        await probecore.run_asyncio(stubborn, cleanup_grace=0.1)
    elapsed = trio.current_time() - started
    assert 0.15 <= elapsed < 0.7, elapsed
    # Let it go, so that the loop is clean for the next test.
    release.set()
    for task in await probecore.run_asyncio(_other_tasks):
        bridge_loop().call_soon_threadsafe(task.cancel)
    for _ in range(100):
        if not await probecore.run_asyncio(_other_tasks):
            break
        await trio.sleep(0.005)
    await assert_no_task_left()


async def test_many_concurrent_calls() -> None:
    count = 200
    results: dict[int, int] = {}
    peak = 0
    running = 0

    async def square(n: int) -> int:
        nonlocal running, peak  # only touched on the bridge loop's thread
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.02)
        running -= 1
        return n * n

    async def one(n: int) -> None:
        results[n] = await probecore.run_asyncio(square, n)

    started = trio.current_time()
    async with trio.open_nursery() as nursery:
        for n in range(count):
            nursery.start_soon(one, n)
    elapsed = trio.current_time() - started
    assert results == {n: n * n for n in range(count)}
    assert peak > count // 2  # they really overlapped on the one loop
    assert elapsed < 2.0, elapsed  # 200 × 20 ms one after another would take 4 s
    await assert_no_task_left()


async def test_cancelling_many_calls_leaves_no_task_pending() -> None:
    finished: list[int] = []

    async def slow(n: int) -> None:
        try:
            await asyncio.sleep(30)
        finally:
            finished.append(n)

    with trio.move_on_after(0.05):
        async with trio.open_nursery() as nursery:
            for n in range(50):
                nursery.start_soon(probecore.run_asyncio, slow, n)
    assert sorted(finished) == list(range(50))
    await assert_no_task_left()
    assert not [t for t in asyncio.all_tasks(bridge_loop()) if not t.done()]


async def test_an_already_cancelled_caller_still_cleans_up() -> None:
    started = threading.Event()

    async def work() -> None:
        started.set()
        await asyncio.sleep(30)

    with trio.CancelScope() as scope:
        scope.cancel()
        await probecore.run_asyncio(work)
    assert scope.cancelled_caught
    await assert_no_task_left()


async def test_works_from_a_fresh_trio_run_in_another_thread() -> None:
    """Two trio runs in two threads share the bridge loop; each gets its own answers."""

    async def ident() -> int:
        return threading.get_ident()

    def other_run() -> int:
        return trio.run(probecore.run_asyncio, ident)

    theirs = await trio.to_thread.run_sync(other_run)
    ours = await probecore.run_asyncio(ident)
    assert theirs == ours  # the same bridge thread served both


async def test_blocking_executor_calls_do_not_queue_behind_a_few_slow_ones() -> None:
    """16 blocking calls in the loop's default executor (where asyncio resolves names) all run
    at once: each waits at a barrier for the other 15 (was: asyncio's 6 threads on two cores,
    so the barrier never filled and every later call waited for a thread)."""
    barrier = threading.Barrier(16, timeout=5)

    async def blocking_calls() -> list[int]:
        loop = asyncio.get_running_loop()
        return list(await asyncio.gather(*(loop.run_in_executor(None, barrier.wait)
                                            for _ in range(16))))

    arrivals = await probecore.run_asyncio(blocking_calls)
    assert sorted(arrivals) == list(range(16))
