"""Config schema of the restore method's prior (values in configs/restore_*.yaml)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from brainsynth.config.schema import StepsEta, TrainConfig
from brainsynth.inverse.daps import DAPSConfig
from brainsynth.nn.presets import UNET_PRESETS, Preset


@dataclass(frozen=True)
class RestoreData:
    downsample: int = 1  # average-pool the cache by this factor (2: a 2 mm cache trains at 4 mm)
    # Also learn the left-right mirror of every training image: twice the shapes for the same
    # subjects, and a prior that does not prefer one hemisphere's asymmetries.
    mirror: bool = True
    # Keep the (downsampled) training images in memory: the prior reads every image many times,
    # and decoding a 2 mm NIfTI costs about as much as a CPU training step at 4 mm.
    preload: bool = True
    # Validation: the denoising loss of the EMA model on up to this many val-split images with
    # fixed timesteps and noise (0, or a cache without a val split: no validation).
    val_images: int = 8
    # Train on random crops of this size (each side a multiple of the UNet's 2^(levels-1)) instead
    # of whole volumes: the denoiser is convolutional, and at the low and middle noise levels a
    # restoration uses it needs local context, so a step costs a fraction of a whole volume's.
    # None: whole volumes. Validation always uses whole volumes.
    crop: tuple[int, int, int] | None = None
    # A 2D prior (model.spatial_dims 2) trains on this many random slices of each volume of a
    # batch (a random axis and position within the image each; batch = batch_size x slices).
    slices: int = 4

    def __post_init__(self) -> None:
        if self.slices < 1:
            raise ValueError(f"slices must be >= 1, got {self.slices}")
        if self.downsample < 1:
            raise ValueError(f"downsample must be >= 1, got {self.downsample}")
        if self.crop is not None and (len(self.crop) != 3 or min(self.crop) < 1):
            raise ValueError(f"crop must be three positive sizes, got {self.crop}")
        if self.val_images < 0:
            raise ValueError(f"val_images must be >= 0, got {self.val_images}")


@dataclass(frozen=True)
class RestoreModel:
    """An unconditional 3D UNet, 1 channel in and out: a preset of ``nn.presets`` with optional
    overrides of its levels (``channels`` and ``attention_levels`` must then have one entry per
    level; ``norm_num_groups`` must divide every width).

    ``spatial_dims`` 2: a 2D UNet on slices, used on volumes slice by slice along the three axes
    (their estimates averaged; ``nn.slicewise.SliceWise``); the prior's grid is then a cube."""

    preset: Preset = "tiny"
    spatial_dims: Literal[2, 3] = 3
    channels: tuple[int, ...] | None = None
    attention_levels: tuple[bool, ...] | None = None
    num_res_blocks: int | None = None
    norm_num_groups: int | None = None

    def __post_init__(self) -> None:
        if self.preset not in UNET_PRESETS:
            raise ValueError(
                f"unknown preset {self.preset!r}; choose one of {sorted(UNET_PRESETS)}"
            )
        if self.spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {self.spatial_dims}")
        p = UNET_PRESETS[self.preset]
        channels = self.channels or p["channels"]
        attention = self.attention_levels or p["attention_levels"]
        groups = self.norm_num_groups or p["norm_num_groups"]
        if len(channels) != len(attention):
            raise ValueError(
                f"channels {list(channels)} and attention_levels {list(attention)} need one "
                "entry per level each (set both to change the number of levels)"
            )
        if any(c % groups for c in channels):
            raise ValueError(f"norm_num_groups {groups} must divide every width {list(channels)}")


@dataclass(frozen=True)
class RestoreDiffusion:
    """The Gaussian (VP) process of the prior.

    v prediction: DAPS needs x0 estimates at every noise level. From eps, x0 = (x_t - sqrt(1 -
    abar) eps) / sqrt(abar) multiplies the network's error by sigma = sqrt((1 - abar) / abar), up
    to ~100 at DAPS's first levels; from v, x0 = sqrt(abar) x_t - sqrt(1 - abar) v is a bounded
    combination at every level (it tends to x0 prediction at high noise and to eps prediction at
    low noise, where each of those is the well-conditioned one; Salimans & Ho 2022, sec. 4).
    Cosine schedule: its sigma_t = sqrt((1 - abar) / abar) runs from 0.006 to 2e4 and puts 88 % of
    the training timesteps in sigma 0.1-10, where DAPS spends its annealing levels (linear DDPM
    betas: 65 %, and x_T would keep sqrt(abar_T) = 0.6 % of the image, a leak a 130 k-voxel
    volume's mean shows); it covers DAPS's default sigma 100 -> 0.1. ``beta_start``/``beta_end``
    apply to the linear schedules only (None: the schedule's defaults).
    """

    num_timesteps: int = 1000
    schedule: Literal["linear", "scaled_linear", "cosine"] = "cosine"
    prediction: Literal["eps", "x0", "v"] = "v"
    beta_start: float | None = None
    beta_end: float | None = None
    # Min-SNR-gamma loss weighting (Hang et al. 2023; 5 in the paper); None: plain MSE.
    min_snr_gamma: float | None = 5.0

    def __post_init__(self) -> None:
        if self.num_timesteps < 2:
            raise ValueError(f"num_timesteps must be >= 2, got {self.num_timesteps}")
        if self.min_snr_gamma is not None and not self.min_snr_gamma > 0:
            raise ValueError(f"min_snr_gamma must be > 0 or empty, got {self.min_snr_gamma}")


@dataclass(frozen=True)
class RestoreSample(StepsEta):
    """Unconditional DDIM samples of the prior (``brainsynth sample restore``), to check it by eye."""


@dataclass(frozen=True)
class RestoreRun:
    """``brainsynth restore`` defaults: posterior samples per scan (their mean is the result, their
    voxel-wise std the uncertainty map) and DAPS's start: "baseline" (the cubic B-spline
    interpolation of the scan plus sigma_max noise) or "zeros" (the paper's x_T ~ N(0, sigma_max^2))."""

    samples: int = 4
    init: Literal["baseline", "zeros"] = "baseline"
    # A slice-wise (2D) prior on a thick-slice scan: "all" slices along the three axes; "across"
    # only along the two whose planes contain the slice direction (the planes in which the
    # missing detail lies). Other tasks and 3D priors: no effect.
    slice_axes: Literal["all", "across"] = "all"

    def __post_init__(self) -> None:
        if self.slice_axes not in ("all", "across"):
            raise ValueError(f"slice_axes must be all or across, got {self.slice_axes!r}")
        if self.samples < 1:
            raise ValueError(f"samples must be >= 1, got {self.samples}")
        if self.init not in ("baseline", "zeros"):
            raise ValueError(f"init must be baseline or zeros, got {self.init!r}")


@dataclass(frozen=True)
class RestoreConfig:
    data: RestoreData = field(default_factory=RestoreData)
    model: RestoreModel = field(default_factory=RestoreModel)
    diffusion: RestoreDiffusion = field(default_factory=RestoreDiffusion)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: RestoreSample = field(default_factory=RestoreSample)
    # Posterior sampling with this prior (``brainsynth restore``): DAPS's values, stored with the
    # run so that a prior travels with the settings it was checked with. Schema defaults: the
    # paper's pixel-space DAPS-1K (200 levels x 5 ODE steps); the configs set smaller budgets.
    daps: DAPSConfig = field(default_factory=DAPSConfig)
    restore: RestoreRun = field(default_factory=RestoreRun)


def with_sampling(cfg: RestoreConfig, path) -> RestoreConfig:
    """``cfg`` with the ``daps`` and ``restore`` sections of the YAML at ``path`` (a run's prior
    restored with other posterior-sampling settings); None: ``cfg`` itself."""
    if path is None:
        return cfg
    from dataclasses import replace

    from brainsynth.config import load_config

    own = load_config(RestoreConfig, path)
    return replace(cfg, daps=own.daps, restore=own.restore)


Config = RestoreConfig
