"""Label schemes and the volumes derived from them.

Two numbering schemes are recognised, by the set of labels present:
- ``freesurfer`` (FreeSurfer aseg / SynthSeg; also the phantom cohort): ventricles are
  4, 5, 14, 15, 43, 44 (lateral, inferior lateral, 3rd, 4th); extra-cerebral CSF is 24.
- ``dlmuse`` (MUSE ROIs as in the IXI set's DLMUSE maps): ventricles are 4, 11, 49, 50, 51, 52;
  cortical CSF is 1; labels 46 and 69 carry no MUSE ROI name and are not brain.

Brain volume, in both, is every labelled voxel except CSF outside the brain (and, for dlmuse, the
unnamed labels): it includes the ventricles, like DLMUSE's TotalBrain (ROI 701), which it matches
to the voxel on the IXI set.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

LabelScheme = Literal["freesurfer", "dlmuse"]

VENTRICLES: dict[str, tuple[int, ...]] = {
    "freesurfer": (4, 5, 14, 15, 43, 44),
    "dlmuse": (4, 11, 49, 50, 51, 52),
}
NOT_BRAIN: dict[str, tuple[int, ...]] = {
    "freesurfer": (0, 24),
    "dlmuse": (0, 1, 46, 69),
}
# Labels that exist in MUSE but never in FreeSurfer's aseg/SynthSeg tables (cortical MUSE ROIs >= 100).
_DLMUSE_ONLY = set(range(100, 208))


def detect_scheme(labels: np.ndarray) -> LabelScheme:
    """Guess the numbering: MUSE cortical ROIs (100-207) or label 1 (CSF) mean dlmuse."""
    present = set(np.unique(labels).tolist())
    if present & _DLMUSE_ONLY or 1 in present:
        return "dlmuse"
    return "freesurfer"


def voxel_volume(affine: np.ndarray) -> float:
    return round(float(abs(np.linalg.det(np.asarray(affine)[:3, :3]))), 9)


def ventricle_mask(labels: np.ndarray, scheme: LabelScheme | None = None) -> np.ndarray:
    scheme = scheme or detect_scheme(labels)
    return np.isin(labels, VENTRICLES[scheme])


def brain_mask(labels: np.ndarray, scheme: LabelScheme | None = None) -> np.ndarray:
    scheme = scheme or detect_scheme(labels)
    return ~np.isin(labels, NOT_BRAIN[scheme])


def label_volumes(
    labels: np.ndarray, affine: np.ndarray, scheme: LabelScheme | None = None
) -> dict[str, float]:
    """Brain and ventricle volume in mm^3 from a label map."""
    scheme = scheme or detect_scheme(labels)
    vv = voxel_volume(affine)
    return {
        "brain_volume": float(brain_mask(labels, scheme).sum() * vv),
        "ventricle_volume": float(ventricle_mask(labels, scheme).sum() * vv),
    }
