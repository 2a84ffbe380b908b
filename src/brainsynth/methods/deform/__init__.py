"""Method deform: a template registered to every subject by DiffuseMorph (with a stationary
velocity field), a diffusion model of the resulting velocity fields, and new scans with their
label maps made by warping the template with sampled fields."""

from brainsynth.methods.deform.config import Config, DeformConfig
from brainsynth.methods.deform.networks import build_fields_model, build_register, load_network
from brainsynth.methods.deform.sample import sample
from brainsynth.methods.deform.template import build_template, load_template
from brainsynth.methods.deform.train import STAGES, train

__all__ = [
    "STAGES",
    "Config",
    "DeformConfig",
    "build_fields_model",
    "build_register",
    "build_template",
    "load_network",
    "load_template",
    "sample",
    "train",
]
