"""Deterministic, resumable, rank-sharded batch order: a seeded permutation per epoch."""

from __future__ import annotations

import torch


class BatchOrder:
    """Yields lists of dataset indices. Epoch e uses permutation(seed, e); rank r takes every
    world-th index. ``state()``/``load()`` record the exact position, so resume continues it."""

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world: int = 1):
        if n < 1:
            raise ValueError("empty dataset")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world = rank, world
        self.epoch, self.pos = 0, 0

    def _indices(self) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        perm = torch.randperm(self.n, generator=g).tolist()
        per_rank = max(len(perm) // self.world, 1)  # equal shards: DDP needs equal step counts
        shard = perm[self.rank :: self.world][:per_rank] if self.n >= self.world else perm
        reps = -(-self.batch_size // len(shard))  # tiny datasets: repeat to fill a batch
        return (shard * reps) if len(shard) < self.batch_size else shard

    def next(self) -> list[int]:
        idx = self._indices()
        if self.pos + self.batch_size > len(idx):
            self.epoch, self.pos = self.epoch + 1, 0
            idx = self._indices()
        batch = idx[self.pos : self.pos + self.batch_size]
        self.pos += self.batch_size
        return batch

    def state(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos}

    def load(self, state: dict) -> None:
        self.epoch, self.pos = int(state["epoch"]), int(state["pos"])
