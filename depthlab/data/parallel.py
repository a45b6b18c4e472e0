"""Run independent tasks here, in a pool of local processes, or as Ray tasks on a cluster.

`data prepare` hands its shards to `run_tasks`; `depthlab.data.shards` keeps the data
format. Ray is imported only here (lazily, when a cluster address is given) and in
`study.py`. Tasks and the task function travel to other processes by pickling, so the
function must be module-level and the tasks plain data (readers are `functools.partial`s
of module functions, see readers.py).

A failing task fails the whole run with its own exception (type and message, e.g. a
reader's ValueError naming the file); tasks not yet started are cancelled, and in the
local pool those already running finish first, so their output is kept for a rerun.
"""

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any


def run_tasks(fn: Callable[[Any], Any], tasks: Sequence[Any], *, workers: int | None = 1,
              address: str | None = None,
              on_done: Callable[[Any], None] = lambda result: None) -> list[Any]:
    """`[fn(t) for t in tasks]` on `workers` processes (None: one per core; 1: in this one),
    or as Ray tasks when `address` is given; `on_done(result)` runs here as each ends."""
    if not tasks:
        return []
    if address is not None:
        return _on_ray(fn, tasks, workers, address, on_done)
    workers = min(workers or os.cpu_count() or 1, len(tasks))
    if workers <= 1:
        return [_done(fn(task), on_done) for task in tasks]
    return _on_pool(fn, tasks, workers, on_done)


def _done(result: Any, on_done: Callable[[Any], None]) -> Any:
    on_done(result)
    return result


def _on_pool(fn: Callable[[Any], Any], tasks: Sequence[Any], workers: int,
             on_done: Callable[[Any], None]) -> list[Any]:
    # spawn, not fork: a forked child of a process that imported torch can deadlock on
    # locks other threads held at fork time.
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(
        "spawn"))
    results: list[Any] = [None] * len(tasks)
    try:
        futures = {pool.submit(fn, task): i for i, task in enumerate(tasks)}
        pending = set(futures)
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                # .result() re-raises the task's own exception (the worker's traceback
                # rides along as its __cause__)
                results[futures[future]] = _done(future.result(), on_done)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return results


def _on_ray(fn: Callable[[Any], Any], tasks: Sequence[Any], workers: int | None, address: str,
            on_done: Callable[[Any], None]) -> list[Any]:
    """One Ray task per item (at most `workers` in flight, None: as the cluster allows)."""
    import ray

    started = not ray.is_initialized()  # a session this process holds is used as it is
    if started:
        ray.init(address=address, log_to_driver=False, logging_level="WARNING")
    try:
        remote = ray.remote(num_cpus=1)(fn)
        results: list[Any] = [None] * len(tasks)
        queue, running = iter(enumerate(tasks)), {}

        def submit_next() -> None:
            if (item := next(queue, None)) is not None:
                running[remote.remote(item[1])] = item[0]

        for _ in range(workers or len(tasks)):
            submit_next()
        try:
            while running:
                [ready], _ = ray.wait(list(running), num_returns=1)
                index = running.pop(ready)
                results[index] = _done(ray.get(ready), on_done)
                submit_next()
        except ray.exceptions.RayTaskError as error:
            if isinstance(error.cause, Exception):
                raise error.cause from error  # the task's own error, not Ray's wrapper
            raise
        finally:
            for ref in running:  # after a failure: the rest is not wanted any more
                ray.cancel(ref)
        return results
    finally:
        if started:
            ray.shutdown()
