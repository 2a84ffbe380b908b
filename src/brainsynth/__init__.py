"""brainsynth: anatomically grounded 3D brain MRI synthesis and restoration with diffusion models."""

__version__ = "0.1.0"
