"""torchrun support: process group from the environment, per-rank seeds, rank-sharded data.

Under ``torchrun --nproc_per_node N`` every process reads RANK, WORLD_SIZE and LOCAL_RANK from the
environment; :func:`init_distributed` joins the group (NCCL on GPU, gloo on CPU). Without those
variables everything here degrades to a single process and no collective is ever called.

Seeds: the network is initialised from ``seed`` on every rank (DDP also broadcasts rank 0's
weights), while noise, timesteps and dropout use streams derived from ``(seed, rank)`` so the ranks
do not draw the same noise. Derived seeds go through numpy's SeedSequence, so the noise stream
never replays the stream that initialised the weights.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Sampler


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def pick_device(name: str | torch.device = "auto") -> torch.device:
    """``auto`` -> CUDA when available else CPU; under torchrun the GPU is ``cuda:LOCAL_RANK``."""
    if isinstance(name, torch.device):
        if name.type == "cuda" and name.index is None:
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return name
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            from brainsynth.errors import InputError

            raise InputError(None, "--device cuda asked for, but CUDA is not available")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if name != "cpu" and not name.startswith("cuda:"):
        from brainsynth.errors import InputError

        raise InputError(None, f"device must be auto, cpu or cuda, got {name!r}")
    return torch.device(name)


def init_distributed(device: torch.device | str | None = None, timeout_s: float = 1800) -> DistInfo:
    """Join the torchrun process group when WORLD_SIZE > 1 (idempotent); return this rank's info."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or not dist.is_available():
        return DistInfo()
    device = pick_device(device or "auto")
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
    return get_dist_info()


def get_dist_info() -> DistInfo:
    if dist.is_available() and dist.is_initialized():
        return DistInfo(
            dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0"))
        )
    return DistInfo()


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo | None = None) -> None:
    info = info or get_dist_info()
    if info.enabled:
        dist.barrier()


def all_reduce_mean(x: torch.Tensor, info: DistInfo | None = None) -> torch.Tensor:
    """Mean over ranks (a copy; the input is untouched). Identity without a process group."""
    info = info or get_dist_info()
    if not info.enabled:
        return x.detach().clone()
    y = x.detach().clone()
    dist.all_reduce(y, op=dist.ReduceOp.SUM)
    return y / info.world_size


def all_gather_objects(obj: object, info: DistInfo | None = None) -> list:
    """Every rank's ``obj`` (picklable), in rank order, on every rank."""
    info = info or get_dist_info()
    if not info.enabled:
        return [obj]
    out: list = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def derive_seed(seed: int, *keys: int) -> int:
    """A 63-bit seed for the stream named by ``keys`` (e.g. ``(rank, NOISE)``), independent of
    ``seed``'s own stream and of other keys."""
    state = np.random.SeedSequence([int(seed) % 2**63, *map(int, keys)]).generate_state(
        2, np.uint32
    )
    return int((int(state[0]) << 31) ^ int(state[1])) & (2**63 - 1)


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), numpy's legacy global RNG and python's ``random``."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - third-party code draws from the global RNG
    random.seed(seed)


class ShardedBatchSampler(Sampler[list[int]]):
    """An endless, resumable stream of index batches for one rank (DistributedSampler-style).

    Epoch ``e`` is a permutation of ``range(n)`` seeded by ``(seed, e)`` (identity without
    ``shuffle``), padded by wrapping to a multiple of ``world_size``; rank ``r`` takes every
    ``world_size``-th index from position ``r``. Batches are consecutive runs of that stream and may
    straddle an epoch boundary, so any dataset size and batch size works and every rank yields the
    same number of batches (DDP needs it). ``start_batch`` skips batches without loading them:
    position ``k`` is fully determined by ``k``, which is all a checkpoint has to store.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        *,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
        start_batch: int = 0,
    ):
        if n < 1:
            raise ValueError("the dataset is empty")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world of {world_size}")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world_size, self.shuffle = rank, world_size, shuffle
        self.start_batch = start_batch
        self.per_rank = -(-n // world_size)  # ceil: the padded shard length

    def epoch_indices(self, epoch: int) -> np.ndarray:
        """This rank's indices in epoch ``epoch`` (length ``per_rank``)."""
        if self.shuffle:
            perm = np.random.default_rng([self.seed % 2**63, epoch]).permutation(self.n)
        else:
            perm = np.arange(self.n)
        total = self.per_rank * self.world_size
        padded = np.resize(perm, total)  # wraps around: the first indices repeat
        return padded[self.rank :: self.world_size]

    def position(self, batch: int) -> tuple[int, int]:
        """(epoch, offset within the epoch) of the first sample of batch number ``batch``."""
        return divmod(batch * self.batch_size, self.per_rank)

    def __iter__(self) -> Iterator[list[int]]:
        epoch, offset = self.position(self.start_batch)
        current = self.epoch_indices(epoch)
        while True:
            out: list[int] = []
            while len(out) < self.batch_size:
                take = current[offset : offset + self.batch_size - len(out)]
                out.extend(int(i) for i in take)
                offset += len(take)
                if offset >= self.per_rank:
                    epoch, offset = epoch + 1, 0
                    current = self.epoch_indices(epoch)
            yield out
