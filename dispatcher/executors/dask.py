"""Run graphs on a dask.distributed cluster, with the data staying on the workers.

Policy
------
``DaskExecutor`` pipelines: a node is handed to dask as soon as its dependencies
have been handed over, with their dask futures as arguments (the engine's
:mod:`~dispatcher.engine.pipelining`). Each burst of nodes goes to the
scheduler as one graph, so dask sees the whole graph at once, orders it, and moves
intermediate values from worker to worker; nothing comes back to the client but
the outputs' values at the end of the run (one ``gather``), and whatever
``fetch()`` asks for later. The engine still hears of every node as it finishes,
so retries, ``throw_error``, timeouts, callbacks and progress work as on every
executor.

Where it runs: a ``Client`` you pass (left open), a scheduler ``address`` (a client
made and closed here), or, with neither, an embedded ``LocalCluster`` of worker
processes started on first use with ``cluster_options`` and closed by ``close()``.
The dashboard's address is logged (``INFO``) and kept in :attr:`dashboard_link`.
A script that starts the embedded cluster needs dask's ``if __name__ ==
"__main__":`` guard: the cluster's worker processes import the main script.

Every node's call runs inside a small guard on the worker (so the workers import
``dispatcher``: install it where they run): an exception that is not an
``Exception`` (``SystemExit``, ``KeyboardInterrupt``) fails the node as on every
executor instead of taking the worker down; a coroutine an ``async def`` node
returns is run to its end; a node declared ``nout=k`` is checked.

Failures: a node's own exception comes back with its remote traceback. A worker
that dies while it runs a node costs that node one attempt, as on
:class:`~dispatcher.ProcessExecutor`: the executor hears of each lost worker
(dask's ``remove-worker`` event, on the client's ``"all"`` topic), fails the
attempts that were running there with :class:`~dispatcher.WorkerLostError`, and
cancels them (:mod:`~dispatcher.executors._daskevents`), so dask does not retry them on its own
(``distributed.scheduler.allowed-failures``) on top of the executor's
``retries``. dask charges every task assigned to the lost worker, and so does
the executor: a node waiting there behind the one that killed it loses an
attempt too. A dask ``KilledWorker`` that still arrives becomes a
``WorkerLostError`` as well. A node past its ``timeout`` (counted from when its
dependencies have finished) fails with ``TimeoutError`` and its dask task is
cancelled; dask cannot stop a function already running in a worker thread, so
that call runs on in the background. A call that cannot be pickled fails its node
with the same message as :class:`~dispatcher.ProcessExecutor`'s.

The embedded ``LocalCluster`` keeps its workers quiet (``silence_logs=CRITICAL``:
the library reports failures itself), takes a free port for its dashboard, never
reruns a task whose worker died (``allowed_failures=0``: the executor's retries
do) and has its workers declare their threads as their ``cores`` resource, by
which dask places the nodes that ask for cores (:mod:`~dispatcher.engine.cores`).

Nodes keep their values on the cluster: ``node.fetch()`` of an intermediate node
gathers it then, while the executor is open (``release=True`` lets dask free
intermediate values as soon as no remaining node needs them).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import multiprocessing
import pickle
import re
import sys
import threading
import traceback
import uuid
from concurrent.futures import CancelledError
from typing import Any

from ..results import DispatcherError, ExecutorError, WorkerLostError, format_exception, is_worker_lost
from . import _daskcompat as compat
from ._daskevents import SchedulerEvents
from ._daskwork import CORES, NodeExit, by_value, call_node, declare_cores
from .base import Capabilities, Executor
from .codec import decode_outcome, dumps_call

__all__ = ["DaskExecutor"]

logger = logging.getLogger("dispatcher")


def _distributed():
    try:
        import distributed
    except ImportError as exc:  # pragma: no cover - the test environment has it
        raise ExecutorError(
            "DaskExecutor needs dask.distributed: pip install 'dispatcher-graph[dask]'"
        ) from exc
    return distributed


def _key_prefix(label: str) -> str:
    """The start of a dask key: the label, so the dashboard groups by it."""
    return re.sub(r"[^\w.]+", "_", label)[:60] or "node"


class DaskExecutor(Executor):
    """Run nodes on a dask.distributed cluster; intermediate values stay on the workers.

    Args:
        client: a ``distributed.Client`` to use (it stays open after ``close()``);
            an asynchronous client works with :func:`~dispatcher.run_async`.
        address: a scheduler's address (``"tcp://host:8786"``) to connect to.
        cluster_options: with neither ``client`` nor ``address``, the options of
            the ``distributed.LocalCluster`` started on first use (worker
            processes by default) and closed by ``close()``.

    ``retries``, ``retry_on``, ``backoff`` and ``timeout`` are those of every
    :class:`~dispatcher.Executor`; a lost worker (dask's ``KilledWorker``) is
    retried by default.

    On a batch cluster, pass the client of a dask-jobqueue cluster::

        from dask_jobqueue import SLURMCluster
        cluster = SLURMCluster(cores=8, memory="16GB", walltime="02:00:00")
        cluster.scale(jobs=4)
        with Client(cluster) as client:
            dp.run(dp.DaskExecutor(client), outputs)
    """

    # indexing and collecting run where the values are, not in the driver
    capabilities = Capabilities(pipelines=True, inline_light=False, store_on_worker=True)
    default_retry_on = (is_worker_lost,)

    def __init__(
        self,
        client: Any = None,
        address: str | None = None,
        *,
        retries: int = 5,
        retry_on: Any = None,
        backoff: Any = None,
        timeout: float | None = None,
        cores: int | None = None,
        **cluster_options: Any,
    ):
        super().__init__(retries=retries, retry_on=retry_on, backoff=backoff, timeout=timeout, cores=cores)
        if client is not None and address is not None:
            raise ValueError("give DaskExecutor a client or a scheduler address, not both")
        if cluster_options and (client is not None or address is not None):
            raise TypeError(
                f"cluster options {sorted(cluster_options)} are for the embedded LocalCluster; "
                "they do not apply to a given client or address"
            )
        if client is not None and not callable(getattr(client, "submit", None)):
            raise TypeError(f"client must be a distributed.Client, got {type(client).__name__}")
        self.client = client
        self.address = address
        self.cluster_options = cluster_options
        self.cluster = None
        self.dashboard_link: str | None = None
        self._owns_client = client is None
        # the nodes started since the last flush_tasks, as one graph (None: dask's
        # private API is missing, and each node is submitted on its own)
        self._burst = compat.GraphBurst() if compat.internals() else None
        self._new: list = []  # (task, future, done) handed over since the last flush_tasks
        self._cancels: list = []
        self._watchers: set = set()  # asyncio tasks waiting on the futures
        self._running: dict = {}  # dask key -> (task, done) of each attempt not yet reported
        self._events = SchedulerEvents(self)  # lost workers, and where each call ran
        self._lock = threading.Lock()
        self._placed_by_cores = False  # the workers declare their cores: dask places by them

    # -- starting and stopping ---------------------------------------------------------
    def start(self, timeout: float | None = 60.0) -> DaskExecutor:
        """Start the embedded cluster, or connect, now, and wait until the cluster
        has a worker; returns ``self``."""
        self.open()
        try:
            self.client.wait_for_workers(1, timeout=timeout)
        except TimeoutError as exc:
            raise ExecutorError(f"the dask cluster had no worker after {timeout} s") from exc
        return self

    def open(self) -> None:
        super().open()
        if self.client is None:
            self._connect()
        if self._events.client is not self.client:
            self._events.follow(self.client)

    def _connect(self) -> None:
        distributed = _distributed()
        if self.address is not None:
            self.client = distributed.Client(self.address, set_as_default=False)
            return
        if getattr(multiprocessing.current_process(), "_inheriting", False):
            raise ExecutorError(
                "DaskExecutor() was asked to start a LocalCluster while a new worker process "
                "imports the main script: put the code that runs the graph under "
                "'if __name__ == \"__main__\":', as dask requires for a LocalCluster"
            )
        options = {
            "silence_logs": logging.CRITICAL,
            "dashboard_address": ":0",
            **self.cluster_options,
            "scheduler_kwargs": {"allowed_failures": 0, **self.cluster_options.get("scheduler_kwargs", {})},
        }
        try:
            self.cluster = distributed.LocalCluster(**options)
            self.client = distributed.Client(self.cluster, set_as_default=False)
        except TypeError:
            self.stop_workers()
            raise
        except Exception as exc:
            self.stop_workers()
            hint = ""
            if getattr(sys.modules["__main__"], "__file__", None):
                hint = (
                    "; if the main script runs the graph without an "
                    "'if __name__ == \"__main__\":' guard, add one: dask's worker processes import it"
                )
            raise ExecutorError(
                f"the dask LocalCluster could not start: {type(exc).__name__}: {exc}{hint}"
            ) from exc
        except BaseException:
            self.stop_workers()
            raise
        self.dashboard_link = self.client.dashboard_link
        self._declare_cores()
        logger.info(
            "started a dask LocalCluster (%s, %d workers); dashboard at %s",
            self.cluster.scheduler_address,
            len(self.cluster.workers),
            self.dashboard_link,
        )

    def _declare_cores(self) -> None:
        """The embedded cluster's workers count their threads as their cores (a dask
        resource), also when the nanny restarts one."""
        for spec in getattr(self.cluster, "worker_spec", {}).values():
            options = spec.setdefault("options", {})
            if "nthreads" in options:
                options["resources"] = {CORES: options["nthreads"], **options.get("resources", {})}
        self.client.run(declare_cores)

    def _worker_cores(self) -> list:
        """The cores of each worker: the resource they all declare (dask then places
        the nodes that ask for cores), else their threads."""
        info = self.client.scheduler_info(n_workers=-1)["workers"] if self.client is not None else {}
        declared = [(w.get("resources") or {}).get(CORES) for w in info.values()]
        self._placed_by_cores = bool(info) and None not in declared
        return [int(c) for c in declared] if self._placed_by_cores else [w["nthreads"] for w in info.values()]

    def reachable_cores(self) -> int:
        self.open()
        cores = self._worker_cores()
        if cores and not self._placed_by_cores:
            logger.warning(
                "the dask workers do not declare their cores (start them with --resources "
                "'cores=N'): nodes that ask for cores are counted against the cluster's threads, "
                "but dask does not place them by their cores"
            )
        return max(1, sum(cores))

    def cores_per_worker(self) -> int | None:
        return max(self._worker_cores(), default=None)

    def slots(self) -> int | None:
        info = self.client.scheduler_info(n_workers=-1)["workers"] if self.client is not None else {}
        return sum(w["nthreads"] for w in info.values()) or None

    def stop_workers(self) -> None:
        client, cluster = self.client, self.cluster
        if client is not None:
            self._events.unfollow()
        if self._owns_client and client is not None:
            self.client = None
            client.close()
        if cluster is not None:
            self.cluster = None
            cluster.close()

    # -- running nodes ---------------------------------------------------------------
    def start_task(self, task, done) -> None:
        from distributed import Future

        key = f"{_key_prefix(task.node.label)}-{uuid.uuid4().hex}"
        fixed = (by_value(task.func), task.node.nout, task.node.label)
        args, kwargs = list(task.args), task.kwargs or {}
        # task.after: graph edges that pass no value still order the tasks
        resources = None
        if task.cores is not None and self._placed_by_cores:  # a worker with the cores free runs it
            resources = {CORES: task.cores}
            if self._new:
                self.flush_tasks()  # the nodes it may take the handles of go first
        if self._burst is None or resources is not None:
            try:
                future = compat.submit_one(
                    self.client, key, call_node, fixed, args, kwargs, task.after, resources
                )
            except Exception:
                dumps_call(task.node.label, task.func, task.args, task.kwargs)  # names what will not pickle
                raise
            task.handle = future
            self._running[key] = (task, done)
            future.add_done_callback(functools.partial(self._done_callback, task))
            return
        self._burst.add(key, call_node, fixed, args, kwargs, task.after)
        future = Future(key, self.client)
        task.handle = future
        self._running[key] = (task, done)
        self._new.append((task, future, done))

    def flush_tasks(self) -> None:
        if not self._new:
            return
        graph = self._burst.take()
        new, self._new = self._new, []
        try:
            compat.send_graph(self.client, graph)
        except Exception as exc:
            new = self._send_what_pickles(graph, new, exc)
        if new:
            self.client.loop.add_callback(self._watch_all, new)

    def _send_what_pickles(self, graph: dict, new: list, exc: Exception) -> list:
        """The burst could not be sent: fail the calls that cannot be pickled and
        send the rest; if that is not the cause, every node of the burst fails."""
        kept = []
        for task, future, done in new:
            try:
                dumps_call(task.node.label, task.func, task.args, task.kwargs)
            except Exception as err:  # it names the argument and the object that will not pickle
                graph.pop(future.key)
                self._report(future.key, False, (err, format_exception(err)))
            else:
                kept.append((task, future, done))
        try:
            if len(kept) == len(new):
                raise exc
            if graph:
                compat.send_graph(self.client, graph)
        except Exception as err:
            for _, future, _ in kept:
                self._report(future.key, False, (err, format_exception(err)))
            return []
        return kept

    async def _watch_all(self, new: list) -> None:
        watchers = self._watchers
        for task, future, done in new:
            watcher = asyncio.ensure_future(self._watch(task, future, done))
            watchers.add(watcher)  # the loop keeps only weak references to tasks
            watcher.add_done_callback(watchers.discard)

    async def _watch(self, task, future, done) -> None:
        self._finish(task, future, *await compat.status_of(future))

    def _done_callback(self, task, future) -> None:
        """:meth:`_watch` on dask's public API, in distributed's callback thread."""
        status, exc, tb = future.status, None, None
        if status == "error":
            exc, tb = future.exception(), future.traceback()
        self._finish(task, future, status, exc, tb)

    def _finish(self, task, future, status: str, exc, tb) -> None:
        """Report the dask task of ``task``, which ended with ``status``."""
        if status == "finished":
            self._report(future.key, True, future)
            return
        if status == "cancelled" or exc is None:
            self._report(
                future.key, False, (CancelledError(f"node {task.node.label!r} was cancelled: {exc}"), "")
            )
            return
        tb = "".join(traceback.format_exception(type(exc), exc, tb))
        if isinstance(exc, NodeExit) and exc.args:
            _, (exc, tb) = decode_outcome(*pickle.loads(exc.args[0]))
        elif type(exc).__name__ == "KilledWorker":
            lost = WorkerLostError(f"node {task.node.label!r} was lost with its dask workers: {exc}")
            lost.__cause__ = exc
            exc = lost
        self._report(future.key, False, (exc, tb))

    def _report(self, key: str, ok: bool, payload: Any) -> None:
        """Tell the engine how the dask task ``key`` ended, once."""
        entry = self._running.pop(key, None)
        if entry is not None:
            task, done = entry
            done(task, ok, payload)

    def interrupt_run(self) -> None:
        """The nodes started since the last burst was sent are not sent: they are
        reported cancelled (the running ones are cancelled one by one next)."""
        if self._burst is not None:
            self._burst.take()
        new, self._new = self._new, []
        for task, future, _ in new:
            cancelled = CancelledError(f"node {task.node.label!r} was cancelled before it was sent")
            self._report(future.key, False, (cancelled, ""))

    def cancel_task(self, task) -> None:
        future = task.handle
        if future is None or self.client is None:
            return
        with self._lock:
            self._cancels.append(future)
            first = len(self._cancels) == 1
        if first:
            self.client.loop.add_callback(self._cancel_now)

    async def _cancel_now(self) -> None:
        with self._lock:
            futures, self._cancels = self._cancels, []
        if futures and self.client is not None:
            await self.client.cancel(futures, asynchronous=True)

    # -- values coming back ------------------------------------------------------------
    def gather_values(self, futures: list) -> list:
        if not futures:
            return []
        try:
            return [(True, v) for v in self.client.gather(futures)]
        except Exception:
            return [self._gather_one(f) for f in futures]

    def _gather_one(self, future) -> tuple:
        try:
            return True, self.client.gather(future)
        except Exception as exc:
            return False, (exc, format_exception(exc))

    async def gather_values_async(self, futures: list) -> list:
        if not futures or not self.client.asynchronous:
            return await asyncio.to_thread(self.gather_values, futures)
        try:
            return [(True, v) for v in await self.client.gather(futures)]
        except Exception:
            out = []
            for future in futures:
                try:
                    out.append((True, await self.client.gather(future)))
                except Exception as exc:
                    out.append((False, (exc, format_exception(exc))))
            return out

    def fetch_value(self, node, future) -> Any:
        client = self.client
        if self.closed or client is None or client.status not in ("running", "connecting"):
            raise DispatcherError(
                f"the value of node {node.label!r} stayed on the dask cluster, which this "
                "executor no longer reaches; list the node among the outputs to bring it back"
            )
        if client.asynchronous:
            raise DispatcherError(
                f"the value of node {node.label!r} is on the cluster of an asynchronous client: "
                "list the node among the outputs, or await client.gather() on its future"
            )
        return client.gather(future)

    def __repr__(self) -> str:
        where = ""
        if self.client is not None:
            where = f" {self.client.scheduler.address}" if self.client.scheduler else ""
        elif self.address is not None:
            where = f" {self.address}"
        state = " closed" if self.closed else ""
        return f"<DaskExecutor{where}{state}>"
