"""Method cortex (Cor2Vox): a Brownian bridge from the fused cortex SDF of given pial and white
surfaces to a T1w volume, with the shape channels concatenated at every step. The same method
with ``model.kind: ddpm`` / ``regression`` and ``data.channels: fused`` gives the issue's baselines
(a Gaussian DDPM, a direct regression UNet) and its ablation (S_c alone): ``config``;
``benchmarks/cortex_eval.py`` compares them."""

from brainsynth.methods.cortex.config import Config, CortexConfig
from brainsynth.methods.cortex.data import build_shapes, subject_shapes
from brainsynth.methods.cortex.networks import build_model, load_model
from brainsynth.methods.cortex.sample import generate, read_surfaces, sample
from brainsynth.methods.cortex.train import train

__all__ = [
    "Config",
    "CortexConfig",
    "build_model",
    "build_shapes",
    "generate",
    "load_model",
    "read_surfaces",
    "sample",
    "subject_shapes",
    "train",
]
