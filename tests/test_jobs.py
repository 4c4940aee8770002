"""The job machine shared by the pools of worker processes (``executors/_jobs.py``):
batching, one report per job whatever the threads do, and finding the call that
will not pickle."""

from __future__ import annotations

import threading
import time

import cloudpickle
import pytest

import dispatcher as dp
from dispatcher.engine import Task
from dispatcher.executors._jobs import PENDING, REPORTED, SENT, Job, JobQueue


def job(func=abs, *args, timeout=None) -> Job:
    """A job whose reports the engine would get are kept in ``job.done.reports``."""

    def done(task, ok, payload):
        done.reports.append((ok, payload))

    done.reports = []
    return Job(Task(dp.Op(func, *args), func, args, None, 1, timeout), done)


def test_quick_calls_go_together_and_unknown_or_timed_ones_alone():
    jobs = JobQueue("auto")
    first, second, third = job(abs, -1), job(abs, -2), job(abs, -3)
    jobs.add([first, second, third])
    assert jobs.take(share=1) == [first]  # abs has not run yet: alone
    now = time.time()
    jobs.learn([first], [(now - 0.0001, now)], "pid 7")
    assert jobs.take(share=1) == [second, third]  # known to be quick: together
    task = first.task  # told where and when its call ran, on the engine's clock
    assert task.where == "pid 7" and task.finished - task.started == pytest.approx(0.0001, abs=1e-6)
    assert abs(task.finished - time.monotonic()) < 1.0
    timed = job(abs, -4, timeout=1.0)
    jobs.add([timed, job(abs, -5)])
    assert jobs.take(share=1) == [timed]


def test_a_job_reported_before_it_is_sent_stays_reported_and_is_told_once():
    jobs = JobQueue(1)
    j = job(abs, -1)
    jobs.add([j])
    batch = jobs.take(share=1)
    jobs.report(j, False, (RuntimeError("cancelled"), ""))  # from another thread, say
    jobs.sent(batch)
    jobs.requeue(batch, alone=True)
    assert j.state == REPORTED and not jobs.pending
    jobs.finished(batch, [(True, 1)])
    assert len(j.done.reports) == 1 and j.done.reports[0][0] is False


def test_a_batch_that_will_not_pickle_goes_back_one_by_one_and_the_culprit_fails():
    jobs = JobQueue("auto")
    good, bad = job(abs, -1), job(len, [threading.Lock()])
    batch = [good, bad]
    assert jobs.encode(batch, cloudpickle.dumps) is None
    assert [j.state for j in batch] == [PENDING, PENDING] and list(jobs.pending) == batch
    assert all(j.alone for j in batch)
    assert jobs.encode([good], cloudpickle.dumps) is not None
    assert jobs.encode([bad], cloudpickle.dumps) is None
    ((ok, (exc, _)),) = bad.done.reports
    assert not ok and "argument 0" in str(exc) and "_thread.lock" in str(exc)


def test_reports_from_many_threads_reach_the_engine_once():
    jobs = JobQueue("auto")
    j = job(abs, -1)
    jobs.sent([j])
    assert j.state == SENT
    threads = [threading.Thread(target=jobs.report, args=(j, True, i)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(j.done.reports) == 1
