"""A worker killed abruptly fails only its own task; the batch's other tasks still finish."""

from __future__ import annotations

import os

from brainsynth.data.parallel import KILLED, run_tasks


def _work(x: int) -> int:
    if x == 3:
        os._exit(9)  # the process dies as under the OOM killer: no exception, no cleanup
    if x == 5:
        raise ValueError("bad item 5")
    return x * x


def test_a_killed_worker_fails_only_its_task():
    out = {t: (r, e) for t, r, e in run_tasks(_work, list(range(8)), jobs=2)}
    assert sorted(out) == list(range(8))
    for t in (0, 1, 2, 4, 6, 7):
        assert out[t] == (t * t, None)
    assert out[3][0] is None and KILLED in str(out[3][1])
    assert isinstance(out[5][1], ValueError)


def test_in_process_when_one_job():
    out = list(run_tasks(lambda x: x + 1, [1, 2], jobs=1))
    assert [(t, r) for t, r, _ in out] == [(1, 2), (2, 3)]
