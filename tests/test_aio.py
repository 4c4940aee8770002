"""AsyncExecutor: concurrency limits, worker threads, coroutines awaited together,
and a blocking run inside a running loop."""

from __future__ import annotations

import asyncio
import threading
import time

import dispatcher as dp


def test_blocking_run_of_async_executor_inside_a_running_loop():
    async def coro(x):
        await asyncio.sleep(0.01)
        return x * 2

    async def notebook_cell():
        return dp.execute(dp.Op(coro, 21), dp.AsyncExecutor())

    assert asyncio.run(notebook_cell()) == 42


def test_async_executor_concurrency_and_threads():
    active = []
    peak = []

    async def job(i):
        active.append(i)
        peak.append(len(active))
        await asyncio.sleep(0.02)
        active.remove(i)
        return i

    with dp.AsyncExecutor(max_concurrency=3) as ex:
        assert dp.execute([dp.Op(job, i) for i in range(12)], ex) == list(range(12))
    assert max(peak) == 3

    with dp.AsyncExecutor(sync="threads", max_workers=2) as ex:
        names = dp.execute([dp.Op(lambda: threading.current_thread().name) for _ in range(4)], ex)
    assert all(n.startswith("dispatcher-async") for n in names)


def test_async_executor_awaits_many_coroutines_concurrently():
    async def wait(x):
        await asyncio.sleep(0.2)
        return x

    start = time.monotonic()
    assert dp.execute(dp.CollectNode([dp.Op(wait, i) for i in range(50)]), dp.AsyncExecutor()) == list(
        range(50)
    )
    assert time.monotonic() - start < 5  # 50 sequential sleeps would take 10 s
