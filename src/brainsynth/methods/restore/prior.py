"""The prior: its network and noise process, its grid and intensity units, and loading a run.

The prior is an unconditional 3D UNet of a Gaussian (VP) process on the cache images, average-
pooled by ``data.downsample``, in model units ``x = scale * image + offset`` (the cache's [0, 1]
-> [-1, 1]: the range the DAPS defaults were tuned in). :class:`PriorInfo` says where that grid
lies and how to map intensities into and out of it, so that a scan can be brought to the prior
and a result taken back.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from brainsynth.config import config_from_meta as _config_from_meta
from brainsynth.config import to_dict
from brainsynth.data.cache import read_cache_info
from brainsynth.data.prepare import reference_affine
from brainsynth.diffusion.gaussian import GaussianProcess
from brainsynth.errors import InputError
from brainsynth.methods.ldm.data import padded_shape
from brainsynth.methods.restore.config import RestoreConfig
from brainsynth.nn.layout import set_memory_format
from brainsynth.nn.presets import UNET_PRESETS, resolve_preset
from brainsynth.nn.slicewise import SliceWise
from brainsynth.nn.unet import UNetDenoiser, build_unet
from brainsynth.training.checkpoint import find_in_run, load_model_for_inference

NAME = "restore"
# Model units: the cache's [0, 1] (background 0) -> [-1, 1] (background -1).
SCALE, OFFSET = 2.0, -1.0


def unet_overrides(cfg: RestoreConfig) -> dict[str, Any]:
    """The preset entries the config replaces (its fields that are not None)."""
    m = cfg.model
    fields = {
        "channels": m.channels,
        "attention_levels": m.attention_levels,
        "num_res_blocks": m.num_res_blocks,
        "norm_num_groups": m.norm_num_groups,
    }
    return {k: v for k, v in fields.items() if v is not None}


def spatial_multiple(cfg: RestoreConfig) -> int:
    """Every side of the network's grid must be a multiple of this (2^(levels - 1))."""
    channels = resolve_preset(UNET_PRESETS, cfg.model.preset, **unet_overrides(cfg))["channels"]
    return 2 ** (len(channels) - 1)


def build_model(cfg: RestoreConfig) -> nn.Module:
    """``model(x_t (B, 1, D, H, W), t (B,)) -> (B, 1, D, H, W)``: unconditional; a 3D UNet, or
    (``model.spatial_dims`` 2) a 2D UNet applied slice-wise, which also takes (B, 1, H, W)."""
    net: UNetDenoiser = build_unet(
        cfg.model.preset,
        cfg.model.spatial_dims,
        1,
        1,
        grad_checkpointing=cfg.train.grad_checkpointing,
        **unet_overrides(cfg),
    )
    return net if cfg.model.spatial_dims == 3 else SliceWise(net)


def build_process(cfg: RestoreConfig) -> GaussianProcess:
    d = cfg.diffusion
    return GaussianProcess(d.num_timesteps, d.schedule, d.prediction, d.beta_start, d.beta_end)


@dataclass(frozen=True)
class PriorInfo:
    """The prior's grid and intensity units.

    ``shape``: the image grid (the cache's shape // ``downsample``) at ``spacing`` mm (the cache's
    spacing x ``downsample``), RAS, world coordinates ``affine`` (4 x 4; the cache's reference
    grid pooled: voxel k covers cache voxels d k .. d k + d - 1). ``padded_shape``: the network's
    grid, ``shape`` zero-padded at the end (same affine) to the UNet's multiple; the padding is
    background. Intensities: the cache maps each scan's ``cache_low``/``cache_high`` brain
    percentiles to 0/1 (skull-stripped, background 0); the network sees
    ``to_model(x) = scale * x + offset``."""

    spacing: float
    shape: tuple[int, int, int]
    padded_shape: tuple[int, int, int]
    affine: tuple[tuple[float, ...], ...]
    downsample: int
    cache_spacing: float
    cache_shape: tuple[int, int, int]
    cache_low: float
    cache_high: float
    scale: float = SCALE
    offset: float = OFFSET

    @property
    def affine_array(self) -> np.ndarray:
        return np.asarray(self.affine, dtype=np.float64)

    @property
    def background(self) -> float:
        """The model-units value of background (cache 0)."""
        return self.offset

    def to_model(self, x: torch.Tensor) -> torch.Tensor:
        """Cache units ([0, 1]) -> model units."""
        return x * self.scale + self.offset

    def from_model(self, x: torch.Tensor) -> torch.Tensor:
        """Model units -> cache units ([0, 1] for in-range values; not clipped)."""
        return (x - self.offset) / self.scale

    def to_dict(self) -> dict:
        return to_dict(self)

    @classmethod
    def from_dict(cls, d: dict) -> PriorInfo:
        aff = tuple(tuple(float(v) for v in row) for row in d["affine"])
        return cls(
            spacing=float(d["spacing"]),
            shape=_triple(d["shape"]),
            padded_shape=_triple(d["padded_shape"]),
            affine=aff,
            downsample=int(d["downsample"]),
            cache_spacing=float(d["cache_spacing"]),
            cache_shape=_triple(d["cache_shape"]),
            cache_low=float(d["cache_low"]),
            cache_high=float(d["cache_high"]),
            scale=float(d.get("scale", SCALE)),
            offset=float(d.get("offset", OFFSET)),
        )

    @classmethod
    def from_cache(cls, cache: str | Path, cfg: RestoreConfig) -> PriorInfo:
        """The grid a prior of ``cfg`` trained on ``cache`` works on."""
        info = read_cache_info(cache)
        spacing, cache_shape = float(info["spacing"]), _triple(info["shape"])
        d = cfg.data.downsample
        shape = _triple([s // d for s in cache_shape])
        if min(shape) < 1:
            raise InputError(
                cache, f"cache shape {list(cache_shape)} is smaller than data.downsample {d}"
            )
        ref = np.asarray(info.get("reference_affine") or reference_affine(spacing, cache_shape))
        pool = np.diag([d, d, d, 1.0])
        pool[:3, 3] = (d - 1) / 2  # the centre of the d voxels a pooled voxel averages
        params = info.get("params", {})
        return cls(
            spacing=spacing * d,
            shape=shape,
            padded_shape=_triple(grid_shape(shape, cfg)),
            affine=tuple(tuple(float(v) for v in row) for row in ref @ pool),
            downsample=d,
            cache_spacing=spacing,
            cache_shape=cache_shape,
            cache_low=float(params.get("low", 0.5)),
            cache_high=float(params.get("high", 99.5)),
        )


def grid_shape(shape: tuple[int, ...], cfg: RestoreConfig) -> tuple[int, ...]:
    """The network's grid for images of ``shape``: each side padded to the UNet's multiple; for a
    slice-wise (2D) prior, a cube of the largest side (every slice one square size)."""
    padded = padded_shape(shape, spatial_multiple(cfg))
    return padded if cfg.model.spatial_dims == 3 else (max(padded),) * len(padded)


def _triple(v: Any) -> tuple[int, int, int]:
    a, b, c = (int(x) for x in v)
    return (a, b, c)


def config_from_meta(meta: dict) -> RestoreConfig:
    """The RestoreConfig stored in a checkpoint's resolved config (``brainsynth.config``)."""
    return _config_from_meta(RestoreConfig, meta)


def load_prior(
    ckpt: str | Path, device: torch.device | str = "cpu"
) -> tuple[RestoreConfig, nn.Module, GaussianProcess, PriorInfo]:
    """(config, EMA network in eval mode without parameter gradients, process, grid) of a restore
    run (its latest intact checkpoint) or one of its step folders. A checkpoint of another method
    is an InputError naming it. Wrap for DAPS with ``inverse.denoiser.VPDenoiser(model, process)``;
    inputs go in ``info.to_model`` units on ``info.padded_shape``."""
    meta, weights = load_model_for_inference(ckpt, method=NAME)
    if not isinstance(meta.get("prior"), dict):
        raise InputError(ckpt, "not a restore prior: its config has no prior grid ('prior')")
    cfg = config_from_meta(meta)
    info = PriorInfo.from_dict(meta["prior"])
    model = build_model(cfg)
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise InputError(ckpt, f"weights do not fit the network of its config ({first})") from e
    model.requires_grad_(False)  # inference only; gradients w.r.t. the input still flow
    set_memory_format(model.to(device).eval(), device, cfg.train.memory_format)
    return cfg, model, build_process(cfg), info


TEMPLATE = "template.nii.gz"


def write_template(cache: str | Path, cfg: RestoreConfig, info: PriorInfo, run: Path) -> Path:
    """``run/template.nii.gz``: the mean of the training split's images on the prior's grid
    (cache units), the fixed image of ``brainsynth restore --align affine``."""
    from brainsynth.io import Volume, write_volume
    from brainsynth.methods.ldm.data import ImageSet

    images = ImageSet(cache, "train", cfg.data.downsample, 1)
    total = torch.zeros(info.shape, dtype=torch.float64)
    for i in range(len(images)):
        total += images[i]["image"][0].double()[tuple(slice(0, n) for n in info.shape)]
    mean = (total / max(len(images), 1)).float().numpy()
    return write_volume(Volume(mean, info.affine_array), Path(run) / TEMPLATE)


def load_template(ckpt: str | Path):
    """The run's template (a Volume) for a run folder or one of its step folders; None if absent."""
    from brainsynth.io import read_volume

    found = find_in_run(ckpt, TEMPLATE, levels=2)
    return None if found is None else read_volume(found)
