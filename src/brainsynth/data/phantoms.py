"""Phantom cohort: a BIDS dataset made from nilearn's MNI152 2009 template and fsaverage5 surfaces.

The embedded default for a machine without real data: it needs nothing but the package's own
dependencies, and it is deterministic per seed. Each subject is the template warped by a random
smooth diffeomorphism (stationary velocity field, scaling and squaring), with age-driven ventricle
enlargement and cortical atrophy, sex-driven brain size, contrast jitter, a bias field and Rician
noise (model: :mod:`brainsynth.data.phantom_subject`). Written:

    out/participants.tsv               participant_id age sex brain_mm3 ventricles_mm3
    out/dataset_description.json, participants.json, README
    out/sub-phXXX/anat/sub-phXXX_T1w.nii.gz
    out/derivatives/phantom/sub-phXXX/anat/sub-phXXX_dseg.nii.gz         FreeSurfer label numbers
    out/derivatives/phantom/sub-phXXX/anat/sub-phXXX_hemi-{L,R}_{pial,white}.surf.gii  (surfaces)
    out/derivatives/phantom/dseg.tsv   label index -> name

``brain_mm3`` and ``ventricles_mm3`` are measured on the written label map
(:func:`brainsynth.data.labels.label_volumes`), so they agree with it to the voxel.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from brainsynth import __version__
from brainsynth.data.labels import label_volumes
from brainsynth.data.phantom_field import Deformation
from brainsynth.data.phantom_subject import (
    LABELS,
    PhantomOptions,
    Traits,
    bias_field,
    contrast_curve,
    gm_loss,
    label_map,
    rician,
    sample_traits,
    subject_deformation,
    subject_maps,
    thin_pial,
    warp,
)
from brainsynth.data.phantom_template import fitted_surfaces, load_template
from brainsynth.errors import InputError
from brainsynth.io import Surface, Volume, write_surface, write_text_atomic, write_volume
from brainsynth.io.outdir import claim_output_dir

__all__ = ["PhantomOptions", "PhantomSubject", "make_cohort", "make_subject", "subject_surfaces"]

T1_SCALE = 1000.0  # stored as int16: template white matter ~ 850
_GENERATED_BY = {"Name": "brainsynth", "Description": "brainsynth phantoms"}


@dataclass(frozen=True)
class PhantomSubject:
    """One phantom: T1w image (int16), label map (FreeSurfer numbers), traits and the deformation
    (subject world -> template world) that made it."""

    id: str
    t1: Volume
    labels: Volume
    traits: Traits
    deformation: Deformation


def _image(rng: np.random.Generator, t1: np.ndarray, mu: dict, opts: PhantomOptions) -> np.ndarray:
    xk, yk = contrast_curve(rng, mu, opts.contrast)
    img = np.interp(t1, xk, yk).astype(np.float32) * bias_field(rng, t1.shape, opts.bias)
    sigma = float(rng.uniform(*opts.noise)) * float(yk[3])
    img = rician(rng, img, sigma)
    return np.clip(np.rint(img * T1_SCALE), 0, np.iinfo(np.int16).max).astype(np.int16)


def make_subject(
    index: int, seed: int = 0, spacing: float = 2.0, options: PhantomOptions | None = None
) -> PhantomSubject:
    """Phantom number ``index`` (1-based) of the cohort with ``seed``; independent of the cohort size."""
    opts = options or PhantomOptions()
    rng = np.random.default_rng([seed, index])
    tmpl = load_template(spacing)
    traits = sample_traits(rng, opts)
    deformation = subject_deformation(rng, traits, opts)
    maps, t1 = subject_maps(tmpl, traits.atrophy)
    coords = deformation.voxel_map(tmpl.shape, tmpl.affine)
    warped = {k: warp(m, coords) for k, m in maps.items()}
    regions = {"cerebrum": warp(tmpl.cerebrum, coords), "deep": warp(tmpl.deep, coords)}
    a = tmpl.affine
    xw = a[0, 0] * coords[0] + a[0, 1] * coords[1] + a[0, 2] * coords[2] + a[0, 3]
    yw = a[1, 0] * coords[0] + a[1, 1] * coords[1] + a[1, 2] * coords[2] + a[1, 3]
    labels = label_map(warped, regions, xw, yw)
    image = _image(rng, warp(t1, coords), tmpl.mu, opts)
    sid = f"sub-ph{index:03d}"
    return PhantomSubject(sid, Volume(image, a), Volume(labels, a), traits, deformation)


def subject_surfaces(subject: PhantomSubject) -> dict[tuple[str, str], Surface]:
    """fsaverage5 pial/white meshes of the subject, in its world mm.

    In the template, each pial vertex first moves towards its white vertex by the subject's cortical
    thinning; then the vertices go through the *inverse* of the subject's deformation (template ->
    subject), found by fixed-point iteration on the displacement field.
    """
    tmpl = load_template(float(subject.t1.spacing[0]))
    loss = gm_loss(tmpl, subject.traits.atrophy)
    meshes = fitted_surfaces()
    out = {}
    for hemi in ("L", "R"):
        (pial, faces), (white, _) = meshes[hemi, "pial"], meshes[hemi, "white"]
        moved = {"pial": thin_pial(pial, white, loss, tmpl.affine), "white": white}
        for kind, v in moved.items():
            out[hemi, kind] = Surface(subject.deformation.to_subject(v), faces)
    return out


def _dataset_files(out: Path, n: int, spacing: float, seed: int, opts: PhantomOptions) -> None:
    """BIDS top-level files (raw dataset + the ``phantom`` derivative and its label table)."""
    gen = {**_GENERATED_BY, "Version": __version__}
    params = {"n": n, "spacing_mm": spacing, "seed": seed, "options": asdict(opts)}
    desc = {
        "Name": "brainsynth phantom cohort (MNI152 2009 template, random diffeomorphic warps)",
        "BIDSVersion": "1.9.0",
        "DatasetType": "raw",
        "License": "Synthetic data derived from the ICBM 2009 MNI152 template and fsaverage5",
        "GeneratedBy": [{**gen, "Parameters": params}],
    }
    deriv = {**desc, "Name": "phantom labels and surfaces", "DatasetType": "derivative"}
    deriv["GeneratedBy"] = [gen]
    write_text_atomic(out / "dataset_description.json", json.dumps(desc, indent=2) + "\n")
    write_text_atomic(
        out / "derivatives" / "phantom" / "dataset_description.json",
        json.dumps(deriv, indent=2) + "\n",
    )
    columns = {
        "age": {"Description": "synthetic age", "Units": "year"},
        "sex": {"Description": "synthetic sex", "Levels": {"F": "female", "M": "male"}},
        "brain_mm3": {
            "Description": "brain volume on the dseg map (all labels but 0, 24)",
            "Units": "mm^3",
        },
        "ventricles_mm3": {
            "Description": "lateral ventricles on the dseg map (4, 43)",
            "Units": "mm^3",
        },
    }
    write_text_atomic(out / "participants.json", json.dumps(columns, indent=2) + "\n")
    names = {v: f"{'Left' if v == lr[0] else 'Right'}-{k}" for k, lr in LABELS.items() for v in lr}
    names.update({16: "Brain-Stem", 24: "CSF"})
    rows = "".join(f"{k}\t{names[k]}\n" for k in sorted(names))
    write_text_atomic(out / "derivatives" / "phantom" / "dseg.tsv", "index\tname\n" + rows)
    write_text_atomic(out / "README", _README.format(n=n, spacing=spacing, seed=seed))


_README = """Phantom cohort written by `brainsynth phantoms` (n={n}, {spacing} mm, seed {seed}).

Each subject is the ICBM 2009c MNI152 template (nilearn's copy) warped by a random smooth
diffeomorphism with age-driven ventricle enlargement and cortical atrophy, sex-driven brain size,
contrast jitter, a bias field and Rician noise. Labels (derivatives/phantom) use FreeSurfer numbers
(dseg.tsv); brain_mm3 and ventricles_mm3 in participants.tsv are measured on them. Synthetic: no
real person is depicted.
"""


def _write_subject(out: Path, subject: PhantomSubject, surfaces: bool) -> dict[str, float]:
    sid = subject.id
    write_volume(subject.t1, out / sid / "anat" / f"{sid}_T1w.nii.gz")
    deriv = out / "derivatives" / "phantom" / sid / "anat"
    write_volume(subject.labels, deriv / f"{sid}_dseg.nii.gz")
    if surfaces:
        for (hemi, kind), surf in subject_surfaces(subject).items():
            write_surface(surf, deriv / f"{sid}_hemi-{hemi}_{kind}.surf.gii")
    return label_volumes(subject.labels.data, subject.labels.affine, "freesurfer")


def _is_phantom_cohort(out: Path) -> bool:
    try:
        desc = json.loads((out / "dataset_description.json").read_text())
        return desc["GeneratedBy"][0]["Description"] == _GENERATED_BY["Description"]
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return False


# what a cohort consists of, and so what ``overwrite`` replaces
COHORT_FILES = (
    "sub-ph*",
    "derivatives",
    "participants.tsv",
    "participants.json",
    "dataset_description.json",
    "README",
)


def _prepare_out(out: Path, overwrite: bool) -> None:
    """The shared output policy (:func:`claim_output_dir`): an empty folder, or with ``overwrite``
    an earlier phantom cohort, replaced whole (stale subjects or surfaces would not match the new
    participants.tsv). Another non-empty folder is never cleared."""
    if overwrite and out.is_dir() and any(out.iterdir()) and not _is_phantom_cohort(out):
        raise InputError(out, "folder is not empty and not a phantom cohort: pick a new folder")
    claim_output_dir(out, COHORT_FILES, overwrite=overwrite)


def make_cohort(
    out_dir: str | Path,
    n: int = 8,
    spacing: float = 2.0,
    seed: int = 0,
    surfaces: bool = False,
    progress: bool = True,
    options: PhantomOptions | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``n`` phantom subjects as a BIDS dataset in ``out_dir`` (layout in the module doc).

    Deterministic: the same arguments give byte-identical files, and subject ``k`` does not depend
    on ``n``. ``spacing`` (mm) changes the grid, not the anatomy. ``out_dir`` must be empty, or an
    earlier cohort with ``overwrite``. Returns ``out_dir``.
    """
    if n < 1:
        raise InputError(None, f"n must be >= 1, got {n}")
    out = Path(out_dir)
    opts = options or PhantomOptions()
    _prepare_out(out, overwrite)
    load_template(spacing)  # the one-off template preparation (~5 s), before the progress bar
    rows = ["participant_id\tage\tsex\tbrain_mm3\tventricles_mm3"]
    for i in tqdm(range(1, n + 1), desc="phantoms", unit="subject", disable=not progress):
        subject = make_subject(i, seed, spacing, opts)
        vol = _write_subject(out, subject, surfaces)
        t = subject.traits
        rows.append(
            f"{subject.id}\t{t.age:.1f}\t{t.sex}\t{vol['brain_volume']:.0f}\t{vol['ventricle_volume']:.0f}"
        )
    _dataset_files(out, n, spacing, seed, opts)
    write_text_atomic(out / "participants.tsv", "\n".join(rows) + "\n")
    return out
