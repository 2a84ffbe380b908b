"""Training the cortex method: shape channels from the cache's label maps (``data``), then the
network of ``model.kind`` with the selected shape channels (``data.select_channels``: [S_c, S_p,
S_w, E, R] or S_c alone) concatenated to its input, EMA, checkpoints:

* ``bridge``: the Brownian bridge from y = S_c to x0 = T1w, the paper's L1 loss on y - x0 (the
  shared ``diffusion_loss`` with ``y_key``);
* ``ddpm``: the Gaussian process from x_T ~ N(0, I) (``diffusion_loss`` without y);
* ``regression``: L1 between the network's output (zeros in the x_t slot, t = 0) and the T1w
  (``regression_loss``)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from brainsynth.config import to_dict
from brainsynth.data.cache import read_cache_info, read_cache_manifest
from brainsynth.diffusion.base import Cond
from brainsynth.errors import InputError
from brainsynth.methods.cortex.config import CortexConfig
from brainsynth.methods.cortex.data import (
    SHAPES,
    Pairs,
    build_shapes,
    select_channels,
    write_failures,
)
from brainsynth.methods.cortex.networks import (
    NAME,
    build_bridge,
    build_gaussian,
    build_model,
    regression_input,
    spatial_multiple,
)
from brainsynth.training.checkpoint import has_checkpoint
from brainsynth.training.distributed import (
    all_gather_objects,
    init_distributed,
    seed_everything,
)
from brainsynth.training.losses import LossFn, diffusion_loss
from brainsynth.training.trainer import Trainer, ValFn


def _cond_fn(cfg: CortexConfig):
    def cond(batch: dict) -> Cond:
        return Cond(concat=select_channels(batch["shape"], cfg))

    return cond


def bridge_loss(cfg: CortexConfig) -> LossFn:
    """The denoising loss of the bridge with y = the batch's S_c (its first shape channel)."""
    inner = diffusion_loss(
        build_bridge(cfg), y_key="y", cond_fn=_cond_fn(cfg), kind=cfg.bridge.loss
    )

    def fn(model: nn.Module, batch: dict, generator: torch.Generator) -> torch.Tensor:
        return inner(model, {**batch, "y": batch["shape"][:, :1]}, generator)

    return fn


def regression_loss(cfg: CortexConfig) -> LossFn:
    """Mean |model(0, 0, channels) - T1w| (model units); the generator is unused."""
    cond = _cond_fn(cfg)

    def fn(model: nn.Module, batch: dict, generator: torch.Generator) -> torch.Tensor:
        x, t = regression_input(batch["shape"])
        out = model(x, t, cond(batch))
        return F.l1_loss(out.float(), batch["image"].float())

    return fn


def model_loss(cfg: CortexConfig) -> LossFn:
    """The training loss of ``cfg.model.kind`` (module docstring)."""
    if cfg.model.kind == "bridge":
        return bridge_loss(cfg)
    if cfg.model.kind == "ddpm":
        return diffusion_loss(build_gaussian(cfg), cond_fn=_cond_fn(cfg), kind=cfg.ddpm.loss)
    return regression_loss(cfg)


def val_fn(cfg: CortexConfig, data: Pairs | None, device: torch.device) -> ValFn | None:
    """The loss of the EMA model on up to ``data.val_images`` val pairs with fixed timesteps and
    noise (values compare across steps); None without them."""
    if data is None or cfg.data.val_images == 0:
        return None
    n = min(cfg.data.val_images, len(data.ids))
    batch = {k: torch.stack([data[i][k] for i in range(n)]) for k in ("image", "shape")}
    loss = model_loss(cfg)

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
    """Shape channels into ``out/shapes`` (once), then the network of ``cfg.model.kind`` into
    ``out`` (checkpoints/, log.jsonl, config.yaml)."""
    if data is None:
        raise InputError(None, "method cortex trains on a cache with label maps: pass --data CACHE")
    out = Path(out)
    # under torchrun the ranks share the extraction (each its slice of the missing subjects), then
    # wait for each other; rank 0 writes the merged failures
    info = init_distributed(device)
    failures = build_shapes(data, out, cfg, jobs=jobs, progress=info.is_main,
                            shard=(info.rank, info.world_size))  # fmt: skip
    if info.enabled:
        failures = {k: v for part in all_gather_objects(failures, info) for k, v in part.items()}
        if info.is_main:
            write_failures(out, failures)
    if failures and info.is_main:
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
        model_loss(cfg),
        pairs,
        cfg.train,
        out,
        config_dict=run_cfg,
        device=device,
        meta={"method": NAME},
    )
    trainer.val_fn = val_fn(cfg, val, trainer.device)
    # a run stopped during the shape extraction has no checkpoint yet: --resume starts its training
    if resume and has_checkpoint(out):
        trainer.resume()
    trainer.fit()
    return out
