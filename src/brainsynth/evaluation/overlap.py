"""Overlap of anatomical structures between two label maps (Dice), e.g. a template's labels warped
onto a subject vs the subject's own labels.

``MAJOR_STRUCTURES[scheme]`` maps a structure name to its leaf label values (left + right together),
for both numbering schemes of :mod:`brainsynth.data.labels`. The eight structures are pairwise
disjoint, so one label map gives one mask per structure:

``ventricles``
    the ventricle set of :mod:`brainsynth.data.labels` (the ``ventricle_volume`` definition).
    DLMUSE: ROI 509 Ventricles = 4, 11, 49, 50, 51, 52. FreeSurfer: 4, 5, 14, 15, 43, 44.
``grey_matter``
    *cortical* GM only: :mod:`brainsynth.evaluation.anatomy`'s GM minus its subcortical and
    cerebellar GM. DLMUSE: the cortical parcels 100-207, which are exactly the leaves of ROIs 404
    Frontal_GM + 406 Limbic_GM + 407 Occipital_GM + 409 Parietal_GM + 411 Temporal_GM (their leaf sum
    equals those ROI volumes on all 160 IXI subjects). FreeSurfer: cortex 3/42 and the cortical
    parcels (aparc 1000s/2000s, a2009s 11100s/12100s).
``white_matter``
    *cerebral* WM: anatomy's WM minus the cerebellar WM (and, for DLMUSE, minus the ventral DC
    61/62, which ROI 604 WM counts but FreeSurfer does not). DLMUSE: 81-95 (lobar WM, fornix,
    internal capsule, corpus callosum). FreeSurfer: 2/41, corpus callosum 251-255, WM
    hypointensities 77-79, wmparc 3000s/4000s, 5001/5002.
``hippocampus``, ``thalamus``, ``caudate``, ``putamen``
    DLMUSE 47/48, 59/60, 36/37, 57/58; FreeSurfer 17/53, 10/49, 11/50, 12/51.
``cerebellum``
    GM + WM. DLMUSE: ROI 502 Cerebellum = 38, 39, 40, 41, 71, 72, 73 (its leaf sum equals ROI 502 on
    the IXI set). FreeSurfer: 7, 8, 46, 47.

Dice (``dice``) of two empty masks is undefined: NaN. ``structure_dice`` adds ``mean``, the mean
over the structures present in either map (NaN when none is).
"""

from __future__ import annotations

import numpy as np

from brainsynth.data import labels as lab
from brainsynth.evaluation import anatomy as an

STRUCTURES: tuple[str, ...] = (
    "ventricles",
    "grey_matter",
    "white_matter",
    "hippocampus",
    "thalamus",
    "caudate",
    "putamen",
    "cerebellum",
)

# --- DLMUSE (leaf codes and names from derivatives/dlmuse/muse_rois.csv) -------------------------
DLMUSE_HIPPOCAMPUS = frozenset({47, 48})  # Hippocampus_R, Hippocampus_L
DLMUSE_THALAMUS = frozenset({59, 60})  # ThalamusProper_R, ThalamusProper_L
DLMUSE_CAUDATE = frozenset({36, 37})  # Caudate_R, Caudate_L
DLMUSE_PUTAMEN = frozenset({57, 58})  # Putamen_R, Putamen_L
# ROI 502 Cerebellum: CerebellumExterior_R/L 38/39, Cerebellum_WM_R/L 40/41, vermal lobules 71-73
DLMUSE_CEREBELLUM_GM = frozenset({38, 39, 71, 72, 73})
DLMUSE_CEREBELLUM_WM = frozenset({40, 41})
DLMUSE_CEREBELLUM = DLMUSE_CEREBELLUM_GM | DLMUSE_CEREBELLUM_WM
DLMUSE_VENTRAL_DC = frozenset({61, 62})  # VentralDC_R/L: in ROI 604 WM
# GM leaves of ROI 601 that are not cortex: accumbens 23/30, amygdala 31/32, pallidum 55/56, basal
# forebrain 75/76, the four structures above and the cerebellar GM.
DLMUSE_NONCORTICAL_GM = (
    frozenset({23, 30, 31, 32, 55, 56, 75, 76})
    | DLMUSE_HIPPOCAMPUS
    | DLMUSE_THALAMUS
    | DLMUSE_CAUDATE
    | DLMUSE_PUTAMEN
    | DLMUSE_CEREBELLUM_GM
)
# = the cortical parcels 100-207 (ROIs 404 + 406 + 407 + 409 + 411)
DLMUSE_CORTEX = an.DLMUSE_GM - DLMUSE_NONCORTICAL_GM
# = 81-95: lobar WM, fornix, internal capsule, corpus callosum
DLMUSE_CEREBRAL_WM = an.DLMUSE_WM - DLMUSE_CEREBELLUM_WM - DLMUSE_VENTRAL_DC

# --- FreeSurfer (FreeSurferColorLUT) -------------------------------------------------------------
FS_HIPPOCAMPUS = frozenset({17, 53})
FS_THALAMUS = frozenset({10, 49})
FS_CAUDATE = frozenset({11, 50})
FS_PUTAMEN = frozenset({12, 51})
FS_CEREBELLUM_GM = frozenset({8, 47})  # Left/Right-Cerebellum-Cortex
FS_CEREBELLUM_WM = frozenset({7, 46})  # Left/Right-Cerebellum-White-Matter
FS_CEREBELLUM = FS_CEREBELLUM_GM | FS_CEREBELLUM_WM
# pallidum 13/52, amygdala 18/54, accumbens 26/58, ventral DC 28/60 + the structures above
FS_NONCORTICAL_GM = (
    frozenset({13, 52, 18, 54, 26, 58, 28, 60})
    | FS_HIPPOCAMPUS
    | FS_THALAMUS
    | FS_CAUDATE
    | FS_PUTAMEN
    | FS_CEREBELLUM_GM
)
FS_CORTEX = an.FS_GM - FS_NONCORTICAL_GM  # 3/42 + cortical parcels
FS_CEREBRAL_WM = an.FS_WM - FS_CEREBELLUM_WM

MAJOR_STRUCTURES: dict[str, dict[str, frozenset[int]]] = {
    "dlmuse": {
        "ventricles": lab.DLMUSE_VENTRICLES,
        "grey_matter": DLMUSE_CORTEX,
        "white_matter": DLMUSE_CEREBRAL_WM,
        "hippocampus": DLMUSE_HIPPOCAMPUS,
        "thalamus": DLMUSE_THALAMUS,
        "caudate": DLMUSE_CAUDATE,
        "putamen": DLMUSE_PUTAMEN,
        "cerebellum": DLMUSE_CEREBELLUM,
    },
    "freesurfer": {
        "ventricles": lab.FS_VENTRICLES,
        "grey_matter": FS_CORTEX,
        "white_matter": FS_CEREBRAL_WM,
        "hippocampus": FS_HIPPOCAMPUS,
        "thalamus": FS_THALAMUS,
        "caudate": FS_CAUDATE,
        "putamen": FS_PUTAMEN,
        "cerebellum": FS_CEREBELLUM,
    },
}


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """``2 |A & B| / (|A| + |B|)`` of two boolean masks of the same shape; NaN when both are empty
    (overlap is undefined, not perfect)."""
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"mask shapes differ: {a.shape} vs {b.shape}")
    total = int(a.sum()) + int(b.sum())
    if total == 0:
        return float("nan")
    return 2.0 * int(np.logical_and(a, b).sum()) / total


def structure_dice(
    labels_a: np.ndarray, labels_b: np.ndarray, scheme: str | None = None
) -> dict[str, float]:
    """Dice per major structure (``MAJOR_STRUCTURES``) between two label maps on the same grid,
    plus ``mean`` over the structures present in either map. ``scheme`` (``dlmuse``,
    ``freesurfer``) is detected from ``labels_a`` when None or ``auto``."""
    a = np.asarray(labels_a)
    b = np.asarray(labels_b)
    if a.shape != b.shape:
        raise ValueError(f"label map shapes differ: {a.shape} vs {b.shape}")
    sch = lab.check_scheme(scheme) or lab.detect_scheme(a)
    out = {
        name: dice(lab.in_labels(a, values), lab.in_labels(b, values))
        for name, values in MAJOR_STRUCTURES[sch].items()
    }
    present = [v for v in out.values() if not np.isnan(v)]
    out["mean"] = float(np.mean(present)) if present else float("nan")
    return out
