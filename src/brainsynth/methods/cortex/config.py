"""Config schema of the cortex method (Cor2Vox; values in configs/cortex_*.yaml)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from brainsynth.config.schema import TrainConfig
from brainsynth.nn.presets import UNET_PRESETS, Preset


@dataclass(frozen=True)
class CortexData:
    """Training pairs from a cache: the T1w (average-pooled by ``downsample``) and the shape
    channels rasterised on that grid from surfaces extracted from the subject's label map
    (``geometry.extract``), clipped at ``clip_mm`` (``geometry.channels``)."""

    downsample: int = 1
    clip_mm: float = 5.0
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
    """The bridge's network: an engine UNet preset (optionally other channels) that sees
    ``[x_t, S_c, S_p, S_w, E, R]`` (x_t plus 5 concatenated shape channels)."""

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
class CortexSample:
    """Skip-step sampling: the paper's 10 steps with eta 1."""

    steps: int = 10
    eta: float = 1.0
    spacing: Literal["uniform", "quadratic"] = "uniform"

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if not 0.0 <= self.eta <= 1.0:
            raise ValueError(f"eta must be in [0, 1], got {self.eta}")


@dataclass(frozen=True)
class CortexConfig:
    data: CortexData = field(default_factory=CortexData)
    model: CortexModel = field(default_factory=CortexModel)
    bridge: CortexBridge = field(default_factory=CortexBridge)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: CortexSample = field(default_factory=CortexSample)


Config = CortexConfig
