"""The sharded, endless, resumable batch stream."""

from __future__ import annotations

from itertools import islice

import numpy as np

from brainsynth.training.distributed import ShardedBatchSampler, derive_seed


def _take(s: ShardedBatchSampler, k: int) -> list[list[int]]:
    return list(islice(iter(s), k))


def test_ranks_partition_each_epoch():
    n, world, b = 12, 3, 2
    per_rank = [
        _take(ShardedBatchSampler(n, b, seed=5, rank=r, world_size=world), 2) for r in range(3)
    ]
    epoch0 = [i for batches in per_rank for batch in batches for i in batch]
    assert sorted(epoch0) == list(range(n))  # disjoint shards covering the epoch


def test_epochs_reshuffle_deterministically():
    s = ShardedBatchSampler(10, 5, seed=1)
    a = _take(s, 6)
    assert a == _take(ShardedBatchSampler(10, 5, seed=1), 6)
    epochs = [sum(a[2 * e : 2 * e + 2], []) for e in range(3)]
    assert all(sorted(e) == list(range(10)) for e in epochs)
    assert epochs[0] != epochs[1] != epochs[2]
    assert _take(ShardedBatchSampler(10, 5, seed=2), 2) != a[:2]


def test_start_batch_continues_the_stream_across_epochs():
    full = _take(ShardedBatchSampler(7, 3, seed=0, rank=1, world_size=2), 9)
    for k in (1, 4, 7):
        assert (
            _take(ShardedBatchSampler(7, 3, seed=0, rank=1, world_size=2, start_batch=k), 9 - k)
            == full[k:]
        )


def test_tiny_dataset_and_no_shuffle():
    assert _take(ShardedBatchSampler(1, 3), 2) == [[0, 0, 0], [0, 0, 0]]
    assert _take(ShardedBatchSampler(5, 2, shuffle=False, rank=0, world_size=2), 3) == [
        [0, 2],
        [4, 0],
        [2, 4],
    ]


def test_derived_seeds_differ():
    seeds = {derive_seed(0, r, s) for r in range(4) for s in range(3)}
    assert len(seeds) == 12 and all(0 <= x < 2**63 for x in seeds)
    assert derive_seed(0, 1) == derive_seed(0, 1) and derive_seed(0) != 0
    assert np.random.default_rng(derive_seed(3, 0)).integers(10**9) >= 0
