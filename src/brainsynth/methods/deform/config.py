"""Config schema of the deform method (values in configs/deform_*.yaml)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from brainsynth.config.schema import StepsEta, TrainConfig
from brainsynth.data.covariates import Covariate
from brainsynth.nn.presets import UNET_PRESETS, Preset


def _check_preset(preset: str) -> None:
    if preset not in UNET_PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(UNET_PRESETS)}")


@dataclass(frozen=True)
class DeformData:
    downsample: int = 1  # average-pool the cache by this factor (2: a 2 mm cache works at 4 mm)
    # Rounds of the affine template: start from the mean of the (brain-centred) training images,
    # register every training image affinely to it and average again, this many times.
    affine_iterations: int = 1
    # Also learn the left-right mirror of every aligned training image.
    mirror: bool = True
    # The template: "built" (the affine mean of the training split, labels by majority vote),
    # "mni152" (nilearn's MNI152 2009 with tissue labels) or a skull-stripped T1w NIfTI path (its
    # *_dseg beside it if any): methods/deform/given.py.
    template: str = "built"

    def __post_init__(self) -> None:
        if self.template not in ("built", "mni152") and not self.template.endswith(
            (".nii", ".nii.gz")
        ):
            raise ValueError(
                f"template must be built, mni152 or a .nii/.nii.gz path, got {self.template!r}"
            )
        if self.downsample < 1:
            raise ValueError(f"downsample must be >= 1, got {self.downsample}")
        if self.affine_iterations < 0:
            raise ValueError(f"affine_iterations must be >= 0, got {self.affine_iterations}")


@dataclass(frozen=True)
class RegisterModel:
    """The two DiffuseMorph networks (``registration.diffusemorph``): the diffusion network (an
    engine UNet preset, optionally with other ``channels``/``attention_levels``) and the
    deformation network (a MONAI UNet of these ``deform_channels``)."""

    preset: Preset = "tiny"
    channels: tuple[int, ...] | None = None
    attention_levels: tuple[bool, ...] | None = None
    deform_channels: tuple[int, ...] = (16, 32, 32, 32)
    integration_steps: int = 7
    # Integrate the velocity on a grid this many times coarser (VoxelMorph's int_downsize):
    # scaling and squaring through grid_sample is the costly part of a CPU step.
    integration_downsample: int = 1

    def __post_init__(self) -> None:
        _check_preset(self.preset)
        if self.integration_downsample < 1:
            raise ValueError("integration_downsample must be >= 1")
        if len(self.deform_channels) < 2:
            raise ValueError("deform_channels needs at least two levels")
        if self.integration_steps < 0:
            raise ValueError(f"integration_steps must be >= 0, got {self.integration_steps}")


@dataclass(frozen=True)
class RegisterLoss:
    """``diffusion * L_diffusion + lam * (L_NCC + smooth * ||grad u||^2)`` (the paper's eq. 7;
    the authors' 3D settings: lambda 20, NCC window 9 at 1-1.5 mm). ``diffusion`` 0 is the
    VoxelMorph-style ablation (the same networks without the diffusion term)."""

    diffusion: float = 1.0
    lam: float = 20.0
    ncc_window: int = 9
    smooth: float = 1.0

    def __post_init__(self) -> None:
        if min(self.diffusion, self.lam, self.smooth) < 0:
            raise ValueError("loss weights must be >= 0")
        if self.ncc_window < 3 or self.ncc_window % 2 == 0:
            raise ValueError(f"ncc_window must be odd and >= 3, got {self.ncc_window}")


@dataclass(frozen=True)
class RegisterDiffusion:
    """The registration's diffusion process (the authors': linear betas 1e-6 .. 1e-2, T 2000)."""

    num_timesteps: int = 2000
    schedule: Literal["linear", "scaled_linear", "cosine"] = "linear"
    beta_start: float | None = 1e-6
    beta_end: float | None = 1e-2


@dataclass(frozen=True)
class FieldsModel:
    """The generative model of velocity fields: an engine UNet (3 channels) with a Gaussian
    process on the fields average-pooled by ``downsample`` (they are smooth), in units of their
    global standard deviation.

    ``conditioning``: the covariates (``data.covariates``, e.g. ``[age, sex]``) the model is
    conditioned on, each field by its subject's (a mirror by its original's), trained with
    condition dropout for classifier-free guidance as ldm is (``methods.conditioning``); empty,
    the default, is the unconditional model (runs from before this option load as such)."""

    downsample: int = 4
    preset: Preset = "tiny"
    channels: tuple[int, ...] | None = None
    attention_levels: tuple[bool, ...] | None = None
    num_timesteps: int = 1000
    schedule: Literal["linear", "scaled_linear", "cosine"] = "cosine"
    prediction: Literal["eps", "x0", "v"] = "v"
    conditioning: tuple[Covariate, ...] = ()
    cond_dropout: float = 0.15  # probability of training a field unconditionally (for guidance)
    # The covariates also enter the timestep embedding (nn.unet, embed_context): they then shift
    # every residual block, not only the attention levels.
    embed: bool = True

    def __post_init__(self) -> None:
        _check_preset(self.preset)
        if self.downsample < 1:
            raise ValueError(f"downsample must be >= 1, got {self.downsample}")
        if len(set(self.conditioning)) != len(self.conditioning):
            raise ValueError(f"conditioning names a covariate twice: {list(self.conditioning)}")
        if not 0.0 <= self.cond_dropout < 1.0:  # also NaN; 1 would never see a covariate
            raise ValueError(f"cond_dropout must be in [0, 1), got {self.cond_dropout}")


@dataclass(frozen=True)
class DeformSample(StepsEta):
    """DDIM over the velocity fields (``brainsynth sample deform``), with classifier-free
    guidance of strength ``guidance`` when the fields model is conditioned (1: none, 0: the
    unconditional model)."""

    guidance: float = 1.5

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.guidance < float("inf"):  # also NaN
            raise ValueError(f"guidance must be a finite number >= 0, got {self.guidance}")


@dataclass(frozen=True)
class DeformConfig:
    data: DeformData = field(default_factory=DeformData)
    model: RegisterModel = field(default_factory=RegisterModel)
    diffusion: RegisterDiffusion = field(default_factory=RegisterDiffusion)
    loss: RegisterLoss = field(default_factory=RegisterLoss)
    train_register: TrainConfig = field(default_factory=TrainConfig)
    fields: FieldsModel = field(default_factory=FieldsModel)
    train_fields: TrainConfig = field(default_factory=TrainConfig)
    sample: DeformSample = field(default_factory=DeformSample)


Config = DeformConfig
