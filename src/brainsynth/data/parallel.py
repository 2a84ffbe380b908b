"""Batch jobs over worker processes that survive a worker's death.

A worker killed abruptly (out of memory, a segfault in a library) breaks a
``ProcessPoolExecutor``: every task still pending or running then fails with
``BrokenProcessPool``, although only one of them was at fault. ``run_tasks`` gives those tasks a
second chance, each alone in a fresh single-worker pool, so that only the task that kills its
worker again is reported, and the others still finish.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import Any

KILLED = "its worker process was killed (out of memory?)"


def run_tasks(
    worker: Callable[[Any], Any], tasks: Sequence[Any], jobs: int
) -> Iterator[tuple[Any, Any, BaseException | None]]:
    """``(task, worker(task), None)`` for every task, or ``(task, None, error)`` when the worker
    raised or its process died (twice: see the module notes). In order of completion; ``jobs``
    <= 1 runs in this process."""
    if jobs <= 1 or len(tasks) <= 1:
        for t in tasks:
            try:
                yield t, worker(t), None
            except Exception as e:  # noqa: BLE001 - a batch job reports every failure and goes on
                yield t, None, e
        return
    retry = []
    with ProcessPoolExecutor(max_workers=min(jobs, len(tasks))) as pool:
        futures = {pool.submit(worker, t): t for t in tasks}
        for fut in as_completed(futures):
            try:
                yield futures[fut], fut.result(), None
            except BrokenProcessPool:
                retry.append(futures[fut])
            except Exception as e:  # noqa: BLE001
                yield futures[fut], None, e
    for t in retry:  # alone, so a second death names its task
        with ProcessPoolExecutor(max_workers=1) as pool:
            try:
                yield t, pool.submit(worker, t).result(), None
            except BrokenProcessPool:
                yield t, None, RuntimeError(KILLED)
            except Exception as e:  # noqa: BLE001
                yield t, None, e
