"""Config schema of the cortex method (Cor2Vox; values in configs/cortex_*.yaml).

Defaults are the paper's method: a Brownian bridge from the fused cortex SDF to the T1w with all
five shape channels concatenated. Two switches turn the same method into the issue's baselines and
ablation, trained, sampled and evaluated by the same code:

* ``model.kind``: ``bridge`` (the paper), ``ddpm`` (a Gaussian DDPM from x_T ~ N(0, I) with the
  shape channels concatenated at every step, sampled with DDIM: ``CortexDDPM``) or ``regression``
  (the same UNet as a plain function of the shape channels, one forward pass, L1 to the T1w);
* ``data.channels``: ``all`` (``[S_c, S_p, S_w, E, R]`` concatenated) or ``fused`` (``S_c`` alone:
  the ablation "fused SDF only").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from brainsynth.config.schema import StepsEta, TrainConfig
from brainsynth.nn.presets import UNET_PRESETS, Preset

ModelKind = Literal["bridge", "ddpm", "regression"]
ChannelSet = Literal["all", "fused"]


@dataclass(frozen=True)
class CortexData:
    """Training pairs from a cache: the T1w (average-pooled by ``downsample``) and the shape
    channels rasterised on that grid from surfaces extracted from the subject's label map
    (``geometry.extract``), clipped at ``clip_mm`` (``geometry.channels``). ``channels``: which
    of them the network sees (``data.select_channels``): ``all`` five or ``fused`` (S_c alone);
    the cache keeps all five either way."""

    downsample: int = 1
    clip_mm: float = 5.0
    channels: ChannelSet = "all"
    # Also learn the left-right mirror of every subject (image and channels together).
    mirror: bool = True
    val_images: int = 4

    def __post_init__(self) -> None:
        if self.downsample < 1:
            raise ValueError(f"downsample must be >= 1, got {self.downsample}")
        if not self.clip_mm > 0:
            raise ValueError(f"clip_mm must be > 0, got {self.clip_mm}")
        if self.val_images < 0:
            raise ValueError(f"val_images must be >= 0, got {self.val_images}")


@dataclass(frozen=True)
class CortexModel:
    """The network: an engine UNet preset (optionally other channels) that sees ``[x_t, S_c, S_p,
    S_w, E, R]`` (x_t plus 5 concatenated shape channels; ``[x_t, S_c]`` with ``data.channels:
    fused``). ``kind``: what it is trained as (module docstring); ``regression`` feeds zeros in
    the x_t slot and t = 0."""

    kind: ModelKind = "bridge"
    preset: Preset = "tiny"
    channels: tuple[int, ...] | None = None
    attention_levels: tuple[bool, ...] | None = None

    def __post_init__(self) -> None:
        if self.preset not in UNET_PRESETS:
            raise ValueError(
                f"unknown preset {self.preset!r}; choose one of {sorted(UNET_PRESETS)}"
            )


@dataclass(frozen=True)
class CortexBridge:
    """The Brownian bridge (``diffusion.bridge``) from y = S_c (t = T) to x0 = T1w (t = 0). The
    paper: T = 1000, m_t linear, s = 1, the network predicts y - x0 ("ysubx"), L1 loss."""

    num_timesteps: int = 1000
    m_schedule: Literal["linear", "sin"] = "linear"
    s: float = 1.0
    objective: Literal["grad", "noise", "ysubx"] = "ysubx"
    loss: Literal["l1", "mse"] = "l1"


@dataclass(frozen=True)
class CortexDDPM:
    """The Gaussian process of the ``ddpm`` baseline (``diffusion.gaussian``): cosine schedule and
    v prediction, the engine's choice for few-step DDIM from pure noise (x0 estimates bounded at
    every noise level, ``methods.restore.config.RestoreDiffusion``), MSE on v."""

    num_timesteps: int = 1000
    schedule: Literal["linear", "scaled_linear", "cosine"] = "cosine"
    prediction: Literal["eps", "x0", "v"] = "v"
    loss: Literal["l1", "mse"] = "mse"

    def __post_init__(self) -> None:
        if self.num_timesteps < 2:
            raise ValueError(f"num_timesteps must be >= 2, got {self.num_timesteps}")


@dataclass(frozen=True)
class CortexSample(StepsEta):
    """Sampling: the bridge's skip-step sampler (the paper's 10 steps with eta 1) or, for
    ``model.kind: ddpm``, DDIM with the same ``steps``/``eta``/``spacing`` (eta 0: deterministic,
    1: ancestral). The regression ignores them (one forward pass)."""

    steps: int = 10
    eta: float = 1.0
    spacing: Literal["uniform", "quadratic"] = "uniform"


@dataclass(frozen=True)
class CortexConfig:
    data: CortexData = field(default_factory=CortexData)
    model: CortexModel = field(default_factory=CortexModel)
    bridge: CortexBridge = field(default_factory=CortexBridge)
    ddpm: CortexDDPM = field(default_factory=CortexDDPM)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: CortexSample = field(default_factory=CortexSample)


Config = CortexConfig
