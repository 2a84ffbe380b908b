"""Endless batch streams the trainer draws from, with a checkpointable position.

A ``Dataset`` is read through :class:`~brainsynth.training.distributed.ShardedBatchSampler`
(:class:`_DatasetStream`): an endless stream of batches, reshuffled every epoch from the seed,
sharded over ranks. Its position is the number of batches consumed, so resuming needs no replay. A
ready ``DataLoader`` also works (:class:`_LoaderStream`; under torchrun it must shard itself, e.g.
with a ``DistributedSampler``); its epochs call ``set_epoch`` when the sampler has it, and resuming
skips the batches already seen (loading them).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from brainsynth.errors import InputError
from brainsynth.training.distributed import ShardedBatchSampler, derive_seed
from brainsynth.training.utils import _EPOCH, _WORKERS

if TYPE_CHECKING:
    from brainsynth.training.trainer import Trainer


def _seed_worker(_: int) -> None:
    s = torch.initial_seed() % 2**32
    np.random.seed(s)  # noqa: NPY002 - torch seeds its own RNG per worker, not numpy's
    random.seed(s)


class _DatasetStream:
    """Endless batches of a Dataset via ShardedBatchSampler; position = batches consumed."""

    def __init__(self, trainer: Trainer, dataset: Dataset, collate_fn: Callable | None):
        self.t, self.dataset = trainer, dataset
        self.collate = collate_fn or default_collate
        try:
            self.n = len(dataset)  # type: ignore[arg-type]
        except TypeError as e:
            raise TypeError("the training dataset needs __len__ (or pass a DataLoader)") from e
        if self.n == 0:
            raise InputError(None, "the training dataset is empty")
        self.consumed = 0
        self._it: Iterator | None = None

    def state(self) -> dict:
        return {"kind": "dataset", "batches": self.consumed}

    def load(self, state: dict) -> None:
        if state.get("kind") != "dataset":
            raise InputError(
                None, "checkpoint was written with a DataLoader, resumed with a Dataset"
            )
        self.consumed, self._it = int(state["batches"]), None

    def _iterator(self) -> Iterator:
        cfg, d = self.t.cfg, self.t.dist
        sampler = ShardedBatchSampler(
            self.n,
            cfg.batch_size,
            seed=cfg.seed,
            rank=d.rank,
            world_size=d.world_size,
            start_batch=self.consumed,
        )
        if cfg.num_workers == 0:
            return (self.collate([self.dataset[i] for i in idx]) for idx in sampler)
        gen = torch.Generator().manual_seed(derive_seed(cfg.seed, d.rank, _WORKERS, self.consumed))
        loader = DataLoader(
            self.dataset,
            batch_sampler=sampler,
            num_workers=cfg.num_workers,
            collate_fn=self.collate,
            pin_memory=self.t.device.type == "cuda",
            worker_init_fn=_seed_worker,
            generator=gen,
        )
        return iter(loader)

    def next(self) -> Any:
        if self._it is None:
            self._it = self._iterator()
        batch = next(self._it)
        self.consumed += 1
        return batch


class _LoaderStream:
    """Endless batches of a user DataLoader: epochs call ``set_epoch``; resume skips batches.

    Each epoch's iterator is created (and its first batch drawn, when samplers without their own
    generator pick their permutation) under a forked global RNG seeded from (seed, rank, epoch):
    epoch order is reproducible and the global stream (dropout, ...) is untouched, so resuming
    mid-epoch replays exactly."""

    _END = object()

    def __init__(self, loader: DataLoader, seed: int, rank: int):
        self.loader, self.seed, self.rank = loader, seed, rank
        self.epoch, self.index = 0, 0
        self._it: Iterator | None = None
        self._pending: Any = self._END

    def state(self) -> dict:
        return {"kind": "loader", "epoch": self.epoch, "index": self.index}

    def load(self, state: dict) -> None:
        if state.get("kind") != "loader":
            raise InputError(
                None, "checkpoint was written with a Dataset, resumed with a DataLoader"
            )
        self.epoch, self.index, self._it = int(state["epoch"]), int(state["index"]), None

    def _start_epoch(self, skip: int) -> None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.seed, self.rank, _EPOCH, self.epoch))
            for obj in (self.loader.sampler, getattr(self.loader, "batch_sampler", None)):
                set_epoch = getattr(obj, "set_epoch", None)
                if callable(set_epoch):
                    set_epoch(self.epoch)
            self._it = iter(self.loader)
            for _ in range(skip):
                next(self._it, None)
            self._pending = next(self._it, self._END)

    def next(self) -> Any:
        if self._it is None:
            self._start_epoch(self.index)
        for _ in range(2):
            if self._pending is not self._END:
                batch, self._pending = self._pending, self._END
            else:
                batch = next(self._it, self._END)  # type: ignore[arg-type]
            if batch is not self._END:
                self.index += 1
                return batch
            self.epoch, self.index = self.epoch + 1, 0
            self._start_epoch(0)
        raise InputError(None, "the training DataLoader yields no batches")
