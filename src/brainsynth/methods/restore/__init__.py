"""Method ``restore``: an unconditional diffusion prior on healthy T1w volumes, used with DAPS
posterior sampling (``brainsynth.inverse``) to undo thick slices, bias fields and lesions; one prior
serves every task, nothing is retrained per task.

    config.py     the config schema (RestoreConfig: data, model, diffusion, train, sample, daps,
                  restore)
    prior.py      the network and process, the prior's grid and units (PriorInfo), load_prior,
                  the template (mean training image) for affine alignment
    train.py      cache images -> pooled, mirrored (optionally cropped) batches -> the Trainer
    sample.py     unconditional DDIM samples (NIfTI + montage), to check a prior by eye
    geometry.py   the prior's grid placed on a scan, the measurement grid, box resampling
    scan.py       a scan brought to the prior: checks, normalisation, y and the task's operator
    restore.py    DAPS posterior samples -> mean, std, bias field; outputs; the batch
    baselines.py  linear / cubic B-spline along the slice axis, N4, biharmonic inpainting
    degrade.py    simulated inputs from clean scans (brainsynth degrade)
"""

from brainsynth.methods.restore.config import Config, RestoreConfig
from brainsynth.methods.restore.prior import (
    PriorInfo,
    build_model,
    build_process,
    config_from_meta,
    load_prior,
)
from brainsynth.methods.restore.sample import sample
from brainsynth.methods.restore.train import PriorImages, train

__all__ = [
    "Config",
    "PriorImages",
    "PriorInfo",
    "RestoreConfig",
    "build_model",
    "build_process",
    "config_from_meta",
    "load_prior",
    "sample",
    "train",
]
