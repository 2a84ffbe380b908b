"""Method ``ldm``: covariate-conditioned latent diffusion (a package, like every method with more
than one file).

    config.py   the config schema (LDMConfig)
    data.py     cache images -> (latent) batches, latent normalisation, mirroring
    losses.py   autoencoder and conditioned diffusion losses
    train.py    builders and the two training stages (ae, diffusion)
    sample.py   covariates in natural units -> NIfTI volumes, samples.tsv, montage
"""

from brainsynth.methods.ldm.config import LDMConfig
from brainsynth.methods.ldm.sample import sample_ldm
from brainsynth.methods.ldm.train import (
    build_ae,
    build_denoiser,
    build_process,
    config_from_meta,
    latent_shape,
    load_autoencoder,
    load_ldm_config,
    reconstruction_metrics,
    train_autoencoder,
    train_diffusion,
)

__all__ = [
    "LDMConfig",
    "build_ae",
    "build_denoiser",
    "build_process",
    "config_from_meta",
    "latent_shape",
    "load_autoencoder",
    "load_ldm_config",
    "reconstruction_metrics",
    "sample_ldm",
    "train_autoencoder",
    "train_diffusion",
]
