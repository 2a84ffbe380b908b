"""Config schemas: frozen dataclasses shared by every method.

YAML files hold values only; the types, defaults and allowed choices live here. A method composes
these blocks into its own top-level config (``methods/<name>.py`` defines ``Config``), so adding a
method never touches this file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from brainsynth.nn.layout import MemoryFormat
from brainsynth.nn.presets import Preset

Amp = Literal["auto", "bf16", "off"]
DeviceName = Literal["auto", "cpu", "cuda"]


@dataclass(frozen=True)
class TrainConfig:
    """The training engine's knobs (see ``training.trainer.Trainer``).

    ``batch_size`` is per process and per micro-batch: the optimiser sees
    ``batch_size * grad_accum * world_size`` samples per step. ``amp="auto"`` means bf16 autocast on
    CUDA and fp32 on CPU (bf16 on a CPU without hardware support is ~280x slower). EMA: the EMA
    weights copy the model for the first ``ema_start`` steps, then follow
    ``ema = ema_decay * ema + (1 - ema_decay) * p`` after every optimiser step. ``*_every = 0``
    disables that event; a checkpoint is always written at the last step. ``memory_format="auto"``
    keeps 3D convolution weights channels-last on a single CPU process (``nn.layout``: ~30 %
    faster there), contiguous elsewhere.
    """

    steps: int = 1000
    batch_size: int = 4
    lr: float = 1e-4
    weight_decay: float = 0.0
    lr_warmup: int = 0
    lr_schedule: Literal["constant", "cosine"] = "constant"
    betas: tuple[float, float] = (0.9, 0.999)
    ema_decay: float = 0.999
    ema_start: int = 0
    grad_accum: int = 1
    grad_clip: float = 1.0
    amp: Amp = "auto"
    grad_checkpointing: bool = False
    log_every: int = 10
    val_every: int = 0
    ckpt_every: int = 500
    keep_last: int = 3
    seed: int = 0
    num_workers: int = 0
    device: DeviceName = "auto"
    memory_format: MemoryFormat = "auto"

    def __post_init__(self) -> None:
        _positive(self, "steps", "batch_size", "grad_accum", "keep_last")
        _non_negative(
            self,
            "lr",
            "weight_decay",
            "lr_warmup",
            "ema_start",
            "grad_clip",
            "log_every",
            "val_every",
            "ckpt_every",
            "num_workers",
        )
        if not 0.0 <= self.ema_decay <= 1.0:
            raise ValueError(f"ema_decay must be in [0, 1], got {self.ema_decay}")


@dataclass(frozen=True)
class ModelConfig:
    """The denoising network: a size preset of ``nn.build_unet``."""

    preset: Preset = "tiny"


@dataclass(frozen=True)
class DiffusionConfig:
    """A Gaussian noise process (``diffusion.gaussian.GaussianProcess``)."""

    num_timesteps: int = 1000
    schedule: Literal["linear", "cosine", "scaled_linear"] = "linear"
    prediction: Literal["eps", "x0", "v"] = "eps"
    beta_start: float = 1e-4
    beta_end: float = 2e-2

    def __post_init__(self) -> None:
        _positive(self, "num_timesteps", "beta_start", "beta_end")


@dataclass(frozen=True)
class SampleConfig:
    """Sampling defaults; the ``brainsynth sample`` options override them."""

    sampler: Literal["ddim", "ddpm"] = "ddim"
    steps: int = 50
    eta: float = 0.0
    guidance: float = 1.0

    def __post_init__(self) -> None:
        _positive(self, "steps")
        _non_negative(self, "eta")


@dataclass(frozen=True)
class StepsEta:
    """The sampler budget every method's ``sample`` section shares: ``steps`` (>= 1) and DDIM's
    ``eta`` in [0, 1] (0 deterministic, 1 ancestral). A method's section subclasses it, restating
    a field to change its default."""

    steps: int = 50
    eta: float = 0.0

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if not 0.0 <= self.eta <= 1.0:  # also NaN
            raise ValueError(f"eta must be in [0, 1], got {self.eta}")


def _positive(obj: object, *names: str) -> None:
    for n in names:
        v = getattr(obj, n)
        if not v > 0:  # also NaN
            raise ValueError(f"{n} must be > 0, got {v}")


def _non_negative(obj: object, *names: str) -> None:
    for n in names:
        v = getattr(obj, n)
        if not v >= 0:  # also NaN
            raise ValueError(f"{n} must be >= 0, got {v}")
