"""Label schemes and the volumes derived from them.

Two numbering schemes are supported and told apart automatically (``detect_scheme``):

``freesurfer``
    FreeSurfer aseg / aparc+aseg, SynthSeg (also the whole-head SynthSeg training maps, whose extra
    labels are head tissue) and the phantom cohort. Ventricles: 4, 5, 14, 15, 43, 44 (left/right
    lateral and inferior lateral, 3rd, 4th). CSF outside the brain: 24.
``dlmuse``
    DLMUSE/MUSE leaf labels, as in the IXI set (``derivatives/dlmuse``). Maps hold leaf labels only;
    the derived ROIs (509 Ventricles, 701 TotalBrain, 702 ICV) are sums of leaves. Ventricles
    (= ROI 509): 4, 11, 49, 50, 51, 52 (3rd, 4th, inferior lateral R/L, lateral R/L). Cortical CSF: 1.

Definitions, identical in meaning for both schemes so that covariates from different datasets agree:

* ``ventricle_volume`` (mm^3): voxels with a ventricle label.
* ``brain_volume`` (mm^3): voxels with a *brain* label (tissue + ventricles), excluding CSF outside
  the brain, background and anything that is not a known brain label (head tissue in whole-head
  maps; DLMUSE's unnamed labels 46 and 69). For DLMUSE this is ROI 701 TotalBrain (it includes the
  ventricles): on the IXI set it equals ``volumes.tsv``/``participants.tsv`` to the voxel.
* the intracranial mask used for skull stripping (``intracranial_mask``): brain labels + CSF
  (+ every non-zero label for DLMUSE, whose maps are intracranial by construction).
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np

from brainsynth.errors import InputError

LabelScheme = Literal["freesurfer", "dlmuse"]
SCHEMES: tuple[str, ...] = get_args(LabelScheme)


def _ranges(*spans: tuple[int, int]) -> frozenset[int]:
    return frozenset(v for a, b in spans for v in range(a, b + 1))


# --- FreeSurfer / SynthSeg --------------------------------------------------------------------
FS_VENTRICLES = frozenset({4, 5, 14, 15, 43, 44})
FS_CSF = frozenset({24})
# SynthSeg structures, aseg extras (lesions 25/57, vessel 30/62, choroid plexus 31/63, 5th
# ventricle 72, WM/non-WM hypointensities 77-82, corpus callosum 251-255) and cortical parcels
# (aparc 1000s/2000s, a2009s 11100s/12100s, wmparc 3000s/4000s, unsegmented WM 5001/5002).
FS_BRAIN = (
    frozenset({2, 3, 7, 8, 10, 11, 12, 13, 16, 17, 18, 26, 28})
    | frozenset({41, 42, 46, 47, 49, 50, 51, 52, 53, 54, 58, 60})
    | frozenset({25, 57, 30, 62, 31, 63, 72, 77, 78, 79, 80, 81, 82, 5001, 5002})
    | _ranges((251, 255), (1000, 1035), (2000, 2035), (3000, 3035), (4000, 4035))
    | _ranges((11100, 11175), (12100, 12175))
    | FS_VENTRICLES
)

# --- DLMUSE -----------------------------------------------------------------------------------
DLMUSE_CSF = frozenset({1})
DLMUSE_VENTRICLES = frozenset({4, 11, 49, 50, 51, 52})
DLMUSE_LEAVES = (
    frozenset({1, 4, 11, 23, 30, 31, 32, 47, 48, 49, 50, 51, 52, 71, 72, 73, 75, 76})
    | _ranges((35, 41), (55, 62), (81, 95), (100, 207))
) - frozenset({110, 111, 126, 127, 130, 131, 158, 159, 188, 189})
DLMUSE_BRAIN = DLMUSE_LEAVES - DLMUSE_CSF

VENTRICLES: dict[str, frozenset[int]] = {"freesurfer": FS_VENTRICLES, "dlmuse": DLMUSE_VENTRICLES}
BRAIN: dict[str, frozenset[int]] = {"freesurfer": FS_BRAIN, "dlmuse": DLMUSE_BRAIN}
CSF: dict[str, frozenset[int]] = {"freesurfer": FS_CSF, "dlmuse": DLMUSE_CSF}

# A scheme wins when it knows this much more of the (known) labelled voxels than the other.
_MARGIN = 0.3


def label_counts(labels: np.ndarray) -> dict[int, int]:
    """Voxel count per label value (non-negative integers; fast bincount)."""
    flat = np.asarray(labels).ravel()
    if flat.size and np.issubdtype(flat.dtype, np.floating):
        if not np.all(np.mod(flat, 1) == 0):
            raise InputError(None, "label map holds non-integer values")
    flat = flat.astype(np.int64, copy=False)
    if flat.size and flat.min() < 0:
        raise InputError(None, f"label map holds negative values (min {flat.min()})")
    counts = np.bincount(flat) if flat.size else np.zeros(0, np.int64)
    nz = np.flatnonzero(counts)
    return {int(k): int(counts[k]) for k in nz}


def scheme_scores(counts: dict[int, int]) -> dict[str, float]:
    """Per scheme: the share of voxels it knows among the labelled voxels either scheme knows.

    Normalising by the union (not by all labelled voxels) keeps whole-head maps, whose head-tissue
    labels neither scheme knows, as clear-cut as brain-only maps.
    """
    known = {"freesurfer": FS_BRAIN | FS_CSF, "dlmuse": DLMUSE_LEAVES}
    union = known["freesurfer"] | known["dlmuse"]
    total = sum(c for k, c in counts.items() if k in union)
    if total == 0:
        return dict.fromkeys(SCHEMES, 0.0)
    return {s: sum(c for k, c in counts.items() if k in known[s]) / total for s in SCHEMES}


def detect_scheme(labels: np.ndarray | dict[int, int]) -> LabelScheme:
    """Tell FreeSurfer/SynthSeg from DLMUSE numbering by which knows more of the labelled voxels.

    The two overlap in label values (e.g. 49-52 are thalamus..pallidum in FreeSurfer, ventricles in
    DLMUSE) but not in where most voxels sit: FreeSurfer's cerebral WM/cortex are 2/3/41/42, which
    DLMUSE never uses; DLMUSE's cortex and WM are 81-95 and 100-207. Ambiguous maps are an error.
    """
    counts = labels if isinstance(labels, dict) else label_counts(labels)
    scores = scheme_scores(counts)
    best, other = sorted(SCHEMES, key=lambda s: -scores[s])
    if scores[best] < 0.6 or scores[best] - scores[other] < _MARGIN:
        shown = ", ".join(f"{s} {scores[s]:.0%}" for s in SCHEMES)
        raise InputError(
            None,
            f"cannot tell the label scheme (share of known labelled voxels: {shown}); "
            "pass the scheme explicitly (freesurfer or dlmuse)",
        )
    return best  # type: ignore[return-value]


def resolve_scheme(counts: dict[int, int], scheme: str | None = None) -> LabelScheme:
    """The scheme of a label map (``scheme``, or detected when None/"auto"), checked to leave
    something after skull stripping: an all-zero map, or one without any of the scheme's brain or
    CSF labels, is an InputError (without a file: the caller names the label map)."""
    present = sorted(k for k in counts if k > 0)
    if not present:
        raise InputError(None, "the label map is all zero (no labelled voxel)")
    resolved = check_scheme(scheme) or detect_scheme(counts)
    kept = BRAIN[resolved] | CSF[resolved]
    if resolved != "dlmuse" and not any(k in kept for k in present):  # DLMUSE: all intracranial
        shown = ", ".join(map(str, present[:8])) + (", ..." if len(present) > 8 else "")
        raise InputError(
            None, f"no brain or CSF label of the {resolved} scheme (labels present: {shown})"
        )
    return resolved


def check_scheme(scheme: str | None) -> LabelScheme | None:
    if scheme is None or scheme == "auto":
        return None
    if scheme not in SCHEMES:
        raise InputError(
            None, f"unknown label scheme {scheme!r}; known: auto, {', '.join(SCHEMES)}"
        )
    return scheme  # type: ignore[return-value]


def in_labels(labels: np.ndarray, values: frozenset[int]) -> np.ndarray:
    """Boolean mask of voxels whose label is in ``values`` (positive labels; a lookup table, fast
    on 256^3 maps where ``np.isin`` with hundreds of values is not)."""
    arr = np.asarray(labels)
    idx = arr if arr.dtype.kind == "u" else np.clip(arr.astype(np.int64), 0, None)
    lut = np.zeros(max(int(idx.max(initial=0)), max(values, default=0)) + 1, dtype=bool)
    lut[[v for v in values if v > 0]] = True
    return lut[idx]


def voxel_volume(affine: np.ndarray) -> float:
    """Voxel volume in mm^3 (rounded to 1e-9 so 2 mm voxels give exactly 8)."""
    return round(float(abs(np.linalg.det(np.asarray(affine)[:3, :3]))), 9)


def ventricle_mask(labels: np.ndarray, scheme: LabelScheme | None = None) -> np.ndarray:
    scheme = scheme or detect_scheme(labels)
    return in_labels(labels, VENTRICLES[scheme])


def brain_mask(labels: np.ndarray, scheme: LabelScheme | None = None) -> np.ndarray:
    """Brain tissue + ventricles (see the module docstring)."""
    scheme = scheme or detect_scheme(labels)
    return in_labels(labels, BRAIN[scheme])


def intracranial_mask(labels: np.ndarray, scheme: LabelScheme | None = None) -> np.ndarray:
    """Brain + CSF: what skull stripping keeps. DLMUSE maps are intracranial: every label > 0."""
    scheme = scheme or detect_scheme(labels)
    if scheme == "dlmuse":
        return np.asarray(labels) > 0
    return in_labels(labels, BRAIN[scheme] | CSF[scheme])


def label_volumes(
    labels: np.ndarray, affine: np.ndarray, scheme: LabelScheme | None = None
) -> dict[str, float]:
    """``brain_volume`` and ``ventricle_volume`` in mm^3 (definitions in the module docstring)."""
    counts = label_counts(labels)
    scheme = check_scheme(scheme) or detect_scheme(counts)
    vv = voxel_volume(affine)
    return {
        "brain_volume": float(sum(c for k, c in counts.items() if k in BRAIN[scheme]) * vv),
        "ventricle_volume": float(
            sum(c for k, c in counts.items() if k in VENTRICLES[scheme]) * vv
        ),
    }
