"""Config schema of the latent diffusion method (values in configs/ldm_*.yaml)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from brainsynth.config.schema import StepsEta, TrainConfig
from brainsynth.nn.presets import Preset


@dataclass(frozen=True)
class LDMData:
    downsample: int = 1  # average-pool the cache by this factor (2: a 2 mm cache trains at 4 mm)
    # Stage diffusion also learns the left-right mirror of every training image (encoded by the
    # autoencoder, same covariates): twice the shapes for the same number of subjects.
    mirror: bool = False


@dataclass(frozen=True)
class AEConfig:
    preset: Preset = "tiny"
    latent_channels: int = 3
    kl_weight: float = 1e-6
    # KL is summed over latent elements while L1 is a voxel mean: its pull per element grows with the
    # latent size (1e-6 suits 8-64x compression; the CPU config's 1:1 latents use 1e-8).
    # Decode a posterior sample (the VAE) or the posterior mean (KL still applied). With few steps,
    # Adam drives sigma to ~1 under any KL weight and the decoder learns the mean brain: the CPU
    # config decodes the mean (measured: sigma 0.02 -> 0.65 in 150 steps from a log-var of -8).
    sample_posterior: bool = True
    adv_weight: float = 0.0  # patch-adversarial loss; 0 disables it
    adv_start: int = 0  # warm-up: no adversarial term before this step
    disc_channels: int = 32
    # Perceptual term (training.perceptual: LPIPS-style distance on a 3D MedicalNet ResNet), only
    # with local weights: a MedicalNet .pth given by the user; nothing is downloaded.
    perceptual_weight: float = 0.0
    perceptual_weights: str | None = None

    def __post_init__(self) -> None:
        if self.perceptual_weight < 0:
            raise ValueError(f"perceptual_weight must be >= 0, got {self.perceptual_weight}")
        if self.perceptual_weight > 0 and not self.perceptual_weights:
            raise ValueError(
                "perceptual_weight > 0 needs perceptual_weights: a local MedicalNet .pth "
                "(no weights are downloaded)"
            )


@dataclass(frozen=True)
class LDMDiffusionConfig:
    preset: Preset = "tiny"
    num_timesteps: int = 1000
    schedule: Literal["linear", "scaled_linear", "cosine"] = "scaled_linear"
    beta_start: float = 0.0015
    beta_end: float = 0.0195
    prediction: Literal["eps", "x0", "v"] = "v"
    conditioning: Literal["crossattn", "concat", "both"] = "crossattn"
    cond_dropout: float = 0.15  # probability of training a row unconditionally (for guidance)
    # Also add the covariates to the timestep embedding (nn.unet, embed_context): they then shift
    # every residual block, not only the attention levels. Needs crossattn or both (the guided path).
    embed: bool = False
    # Min-SNR-gamma loss weighting (Hang et al. 2023; 5 in the paper); None: plain MSE (L_simple).
    min_snr_gamma: float | None = None
    # Diffuse the deviations from the voxelwise mean training latent (methods.ldm.data.LatentNorm).
    center: bool = False
    # Extra loss weight where the ventricles lie (methods.ldm.data.region_weight): the latent loss
    # is weighted 1 + region_weight x (fraction of training label maps with ventricle there),
    # rescaled to mean 1. Ventricle size is a small part of the whole-volume denoising loss, so an
    # unweighted model can learn brain volume from its covariate long before ventricle volume.
    region_weight: float = 0.0

    def __post_init__(self) -> None:
        if self.region_weight < 0:
            raise ValueError(f"region_weight must be >= 0, got {self.region_weight}")
        if self.embed and self.conditioning == "concat":
            raise ValueError(
                "embed needs conditioning crossattn or both (it embeds the context vector)"
            )


@dataclass(frozen=True)
class LDMSample(StepsEta):
    """DDIM with classifier-free guidance (``brainsynth sample ldm``)."""

    guidance: float = 1.5


@dataclass(frozen=True)
class LDMConfig:
    data: LDMData = field(default_factory=LDMData)
    ae: AEConfig = field(default_factory=AEConfig)
    diffusion: LDMDiffusionConfig = field(default_factory=LDMDiffusionConfig)
    train_ae: TrainConfig = field(default_factory=TrainConfig)
    train_diffusion: TrainConfig = field(default_factory=TrainConfig)
    sample: LDMSample = field(default_factory=LDMSample)
