"""Training the prior: cache images -> (pooled, mirrored) batches in model units -> the shared
Trainer with the engine's denoising loss (Min-SNR-weighted), EMA, checkpoints."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from brainsynth.config import to_dict
from brainsynth.data.cache import read_cache_manifest
from brainsynth.errors import InputError
from brainsynth.methods.ldm.data import ImageSet, mirror_lr, pad_to
from brainsynth.methods.restore.config import RestoreConfig
from brainsynth.methods.restore.prior import (
    NAME,
    TEMPLATE,
    PriorInfo,
    build_model,
    build_process,
    spatial_multiple,
    write_template,
)
from brainsynth.training.distributed import seed_everything
from brainsynth.training.losses import LossFn, diffusion_loss
from brainsynth.training.trainer import Trainer, ValFn


class PriorImages(Dataset):
    """Items ``{"image": (1, *info.padded_shape) float32}`` in model units: the cache images of
    ``split``, average-pooled and end-padded (background), then ``info.to_model``. With
    ``mirror``, item ``n + i`` is the left-right mirror of item ``i`` (the cache is RAS: X runs
    left to right), so every item stays a function of its index (exact resume)."""

    def __init__(self, cache: str | Path, split: str, cfg: RestoreConfig, info: PriorInfo):
        self.images = ImageSet(cache, split, cfg.data.downsample, spatial_multiple(cfg))
        self.info = info
        self.mirror = cfg.data.mirror
        self.preload = cfg.data.preload
        self._memory: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.images) * (2 if self.mirror else 1)

    def _image(self, i: int) -> torch.Tensor:
        if i in self._memory:
            return self._memory[i]
        # pad (0) first: it becomes background
        x = self.info.to_model(pad_to(self.images[i]["image"], self.info.padded_shape))
        if self.preload:
            self._memory[i] = x
        return x

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < len(self):
            raise IndexError(i)
        n = len(self.images)
        x = self._image(i % n)
        if i >= n:
            x = mirror_lr(x[None], self.info.shape[0])[0]
        return {"image": x}


def val_fn(
    cfg: RestoreConfig, cache: str | Path, info: PriorInfo, device: torch.device
) -> ValFn | None:
    """The denoising loss of the EMA model on the first ``data.val_images`` val-split images, with
    the same timesteps and noise at every validation (so values compare across steps); None
    without val images."""
    if cfg.data.val_images == 0 or not read_cache_manifest(cache, "val"):
        return None
    data = PriorImages(cache, "val", cfg, info)
    n = min(cfg.data.val_images, len(data.images))  # originals only, not mirrors
    x0 = torch.stack([data[i]["image"] for i in range(n)])
    loss = diffusion_loss(build_process(cfg), min_snr_gamma=cfg.diffusion.min_snr_gamma)
    chunk = cfg.train.batch_size

    def fn(ema_model: nn.Module, step: int) -> dict:
        g = torch.Generator().manual_seed(1234)
        total = 0.0
        for start in range(0, n, chunk):
            batch = x0[start : start + chunk].to(device)
            total += float(loss(ema_model, {"image": batch}, g)) * len(batch)
        return {"loss": total / n}

    return fn


def cropped(loss: LossFn, size: tuple[int, int, int], shape: tuple[int, ...]) -> LossFn:
    """``loss`` on one random crop of ``size`` per batch, placed within ``shape`` (the images'
    unpadded extent); the offsets come from the trainer's generator, so a resume is exact."""

    def fn(model: nn.Module, batch: dict, generator: torch.Generator) -> torch.Tensor:
        x = batch["image"]
        sl = [slice(None), slice(None)]
        for n, c in zip(shape, size):
            start = int(torch.randint(0, max(n - c, 0) + 1, (1,), generator=generator))
            sl.append(slice(start, start + c))
        return loss(model, {**batch, "image": x[tuple(sl)]}, generator)

    return fn


def sliced(loss: LossFn, per_volume: int, shape: tuple[int, ...]) -> LossFn:
    """``loss`` on 2D slices: ``per_volume`` random slices of each (B, C, S, S, S) volume of the
    batch, each along a random axis at a random position within ``shape`` (the images' unpadded
    extent), as one (B * per_volume, C, S, S) batch; drawn from the trainer's generator, so a
    resume is exact."""

    def fn(model: nn.Module, batch: dict, generator: torch.Generator) -> torch.Tensor:
        x = batch["image"]
        b = x.shape[0]
        axes = torch.randint(0, 3, (b, per_volume), generator=generator)
        frac = torch.rand((b, per_volume), generator=generator, dtype=torch.float64)
        slices = []
        for i in range(b):
            for j in range(per_volume):
                a = int(axes[i, j])
                k = min(int(frac[i, j] * shape[a]), shape[a] - 1)
                slices.append(x[i].select(1 + a, k))
        return loss(model, {**batch, "image": torch.stack(slices)}, generator)

    return fn


def train(
    cfg: RestoreConfig,
    data: Path | None,
    out: Path,
    device: torch.device | str | None = None,
    resume: bool = False,
) -> Path:
    """Train the prior on the cache ``data`` into ``out`` (checkpoints/, log.jsonl, config.yaml).
    The checkpoints' config holds the run's config plus ``prior`` (:class:`PriorInfo`)."""
    if data is None:
        raise InputError(None, "method restore trains on a cache: pass --data CACHE")
    out = Path(out)
    info = PriorInfo.from_cache(data, cfg)
    seed_everything(cfg.train.seed)  # the same initial weights on every rank
    process = build_process(cfg)
    run_cfg = {
        "method": NAME,
        "cache": str(Path(data).resolve()),
        "prior": info.to_dict(),
        **to_dict(cfg),
    }
    loss = diffusion_loss(process, min_snr_gamma=cfg.diffusion.min_snr_gamma)
    if cfg.data.crop is not None:
        m = spatial_multiple(cfg)
        if any(c % m or c > n for c, n in zip(cfg.data.crop, info.padded_shape)):
            raise InputError(
                None,
                f"data.crop {list(cfg.data.crop)} must be multiples of {m} within the image grid "
                f"{list(info.padded_shape)}",
            )
        loss = cropped(loss, cfg.data.crop, info.shape)
    if cfg.model.spatial_dims == 2:
        if cfg.data.crop is not None:
            raise InputError(None, "data.crop is for 3D priors; a 2D prior trains on slices")
        loss = sliced(loss, cfg.data.slices, info.shape)
    trainer = Trainer(
        build_model(cfg),
        loss,
        PriorImages(data, "train", cfg, info),
        cfg.train,
        out,
        config_dict=run_cfg,
        device=device,
        meta={"method": NAME},
    )
    trainer.val_fn = val_fn(cfg, data, info, trainer.device)
    if trainer.dist.is_main and not (out / TEMPLATE).exists():
        write_template(data, cfg, info, out)
    if resume:
        trainer.resume()
    trainer.fit()
    return out
