"""Training the cortex bridge: shape channels from the cache's label maps (``data``), then the
Brownian bridge from y = S_c to x0 = T1w with [S_c, S_p, S_w, E, R] concatenated to x_t at every
step, the paper's L1 loss on y - x0 (the shared ``diffusion_loss``), EMA, checkpoints."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from brainsynth.config import to_dict
from brainsynth.data.cache import read_cache_info, read_cache_manifest
from brainsynth.diffusion.base import Cond
from brainsynth.errors import InputError
from brainsynth.methods.cortex.config import CortexConfig
from brainsynth.methods.cortex.data import SHAPES, Pairs, build_shapes
from brainsynth.methods.cortex.networks import NAME, build_model, build_process, spatial_multiple
from brainsynth.training.distributed import seed_everything
from brainsynth.training.losses import LossFn, diffusion_loss
from brainsynth.training.trainer import Trainer, ValFn


def _cond(batch: dict) -> Cond:
    return Cond(concat=batch["shape"])


def bridge_loss(cfg: CortexConfig) -> LossFn:
    """The denoising loss of the bridge with y = the batch's S_c (its first shape channel)."""
    inner = diffusion_loss(build_process(cfg), y_key="y", cond_fn=_cond, kind=cfg.bridge.loss)

    def fn(model: nn.Module, batch: dict, generator: torch.Generator) -> torch.Tensor:
        return inner(model, {**batch, "y": batch["shape"][:, :1]}, generator)

    return fn


def val_fn(cfg: CortexConfig, data: Pairs | None, device: torch.device) -> ValFn | None:
    """The loss of the EMA model on up to ``data.val_images`` val pairs with fixed timesteps and
    noise (values compare across steps); None without them."""
    if data is None or cfg.data.val_images == 0:
        return None
    n = min(cfg.data.val_images, len(data.ids))
    batch = {k: torch.stack([data[i][k] for i in range(n)]) for k in ("image", "shape")}
    loss = bridge_loss(cfg)

    def fn(ema_model: nn.Module, step: int) -> dict:
        g = torch.Generator().manual_seed(1234)
        total = 0.0
        for s in range(0, n, cfg.train.batch_size):
            part = {k: v[s : s + cfg.train.batch_size].to(device) for k, v in batch.items()}
            total += float(loss(ema_model, part, g)) * len(part["image"])
        return {"loss": total / n}

    return fn


def train(
    cfg: CortexConfig,
    data: Path | None,
    out: Path,
    device: torch.device | str | None = None,
    resume: bool = False,
    jobs: int = 1,
) -> Path:
    """Shape channels into ``out/shapes`` (once), then the bridge into ``out`` (checkpoints/,
    log.jsonl, config.yaml)."""
    if data is None:
        raise InputError(None, "method cortex trains on a cache with label maps: pass --data CACHE")
    out = Path(out)
    failures = build_shapes(data, out, cfg, jobs=jobs)
    if failures:
        print(f"{len(failures)} subject(s) without surfaces: see {out / SHAPES / 'failures.tsv'}")
    seed_everything(cfg.train.seed)
    m = spatial_multiple(cfg)
    pairs = Pairs(data, out, "train", cfg, m)
    has_val = cfg.data.val_images > 0 and bool(read_cache_manifest(data, "val"))
    val = Pairs(data, out, "val", cfg, m) if has_val else None
    run_cfg = {
        "method": NAME,
        "cache": str(Path(data).resolve()),
        "grid": {
            "shape": list(pairs.shape),
            "padded": list(pairs.padded),
            "spacing": float(read_cache_info(data)["spacing"]) * cfg.data.downsample,
            "cortex_centre": pairs.cortex_centre(),
        },
        **to_dict(cfg),
    }
    trainer = Trainer(
        build_model(cfg),
        bridge_loss(cfg),
        pairs,
        cfg.train,
        out,
        config_dict=run_cfg,
        device=device,
        meta={"method": NAME},
    )
    trainer.val_fn = val_fn(cfg, val, trainer.device)
    if resume:
        trainer.resume()
    trainer.fit()
    return out
