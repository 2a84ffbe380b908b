"""What the demo shows, one function per method, each calling the library as a user's command would
(``sample ldm``, ``atrophy``, ``sample deform``, ``degrade`` + ``restore``, ``evaluate``) and
returning a :class:`Shown`: the pictures and figures of its section of the report.

Inputs that need no data: the cortex scan comes from the fsaverage5 surfaces that nilearn ships
(fitted to the MNI152 2009 template, in its world mm: ``data.phantom_template``), and the restore
example is that template itself, skull-stripped with its brain mask, as the clean scan.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from brainsynth.errors import InputError

# folder -> the covariates its ldm samples ask for (natural units: years, mm^3); 2 samples each
LDM_REQUESTS: dict[str, dict[str, float | None]] = {
    "age30": {"age": 30.0},
    "age75": {"age": 75.0},  # well inside the phantoms' U(20, 85) ages
    "ventricles15ml": {"ventricle_volume": 15_000.0},
    "ventricles40ml": {"ventricle_volume": 40_000.0},
}
LDM_PER_REQUEST = 2
LDM_DRAWN = 4  # samples with covariates drawn from the training set: what the evaluation compares
ATROPHY_MM = 1.0
DEFORM_SAMPLES = 3
THICK = 3  # slice spacing of the restore example in prior voxels: the benchmark's "x3" setting
THICK_GAP_MM, THICK_NOISE = 2.0, 0.01  # as benchmarks/restore_eval.py
EVAL_KEYS = (  # the figures of an evaluation's metrics.json shown in the report
    ("fid.fid", "FID (random-ResNet features)"),
    ("mmd.mmd2_rbf_unbiased", "MMD^2 (RBF, unbiased)"),
    ("mmd.permutation_pvalue", "MMD permutation p-value"),
    ("diversity_ms_ssim.synthetic.mean", "diversity: MS-SSIM within samples"),
    ("diversity_ms_ssim.real.mean", "diversity: MS-SSIM within the reference"),
    ("intensity.wasserstein1_pooled_histogram", "intensity W1 (pooled, in the brain)"),
)


@dataclass
class Shown:
    """A section of the report: pictures (caption, PNG), figures (what, value) and notes."""

    images: list[tuple[str, Path]] = field(default_factory=list)
    figures: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# --- ldm ------------------------------------------------------------------------------------------


def ldm_samples(ckpt: Path, out: Path, device, drawn: int = 0) -> Shown:
    """Samples at two ages and two ventricle volumes (``LDM_REQUESTS``; the other covariates drawn
    from training subjects close to them), each folder with its montage; with ``drawn``, also
    that many with all covariates drawn (``out/samples``, for the evaluation)."""
    from brainsynth.methods.ldm.sample import sample_ldm

    shown = Shown()
    # (folder, covariates, how many, seed): a folder's seed does not depend on ``drawn``
    plan: list[tuple[str, dict, int, int]] = [("samples", {}, drawn, 0)] if drawn else []
    for seed, (folder, covariates) in enumerate(LDM_REQUESTS.items(), start=1):
        plan.append((folder, covariates, LDM_PER_REQUEST, seed))
    for folder, covariates, n, seed in plan:
        sample_ldm(ckpt, covariates, n, out / folder, device=device, seed=seed)
        asked = ", ".join(_covariate(k, v) for k, v in covariates.items() if v is not None)
        caption = f"{folder}: {asked or 'covariates drawn from the training set'}"
        shown.images.append((caption, out / folder / "montage.png"))
    shown.notes.append(
        "Each row: one sample (sagittal, coronal, axial mid-slices), titled with the covariates it "
        "was generated with (requested ones exact, the others drawn from training subjects close "
        "to them)."
    )
    return shown


def _covariate(name: str, value: float) -> str:
    return f"ventricles {value / 1000:g} ml" if name == "ventricle_volume" else f"{name} {value:g}"


# --- cortex ---------------------------------------------------------------------------------------


def fsaverage5_surfaces(folder: Path) -> Path:
    """nilearn's fsaverage5 pial and white surfaces, fitted to the MNI152 2009 template (world mm),
    written as GIfTI in ``folder`` under the names ``sample cortex --surfaces`` looks for."""
    from brainsynth.data.phantom_template import fitted_surfaces
    from brainsynth.geometry.extract import write_surfaces
    from brainsynth.io import Surface

    hemi = {"L": "lh", "R": "rh"}
    surfaces = {(hemi[h], k): Surface(v, f) for (h, k), (v, f) in fitted_surfaces().items()}
    write_surfaces(surfaces, folder)
    return folder


def cortex_atrophy(ckpt: Path, out: Path, device) -> Shown:
    """The scan the model generates from the fsaverage5 surfaces and, from the same noise, the scan
    of the same surfaces with the cortex thinned by ``ATROPHY_MM`` (``brainsynth atrophy``: its
    "before" scan is what ``sample cortex --surfaces`` gives with the same seed)."""
    from brainsynth.methods.cortex.atrophy import atrophy_pair

    surfaces = fsaverage5_surfaces(out / "fsaverage5")
    atrophy_pair(ckpt, surfaces, out / "atrophy", ATROPHY_MM, seed=0, device=device)
    body = json.loads((out / "atrophy" / "atrophy.json").read_text())
    shown = Shown()
    caption = f"fsaverage5: the generated scan, with {ATROPHY_MM:g} mm thinner cortex, difference"
    shown.images.append((caption, out / "atrophy" / "montage.png"))
    shown.figures.append(("requested thinning", f"{ATROPHY_MM:g} mm"))
    for hemi, mm in body["mean_thickness_change_mm"].items():
        shown.figures.append((f"mean thickness change {hemi} (on the meshes)", f"{mm:.2f} mm"))
    return shown


# --- deform ---------------------------------------------------------------------------------------


def deform_samples(ckpt: Path, out: Path, device, n: int = DEFORM_SAMPLES) -> Shown:
    """``n`` new anatomies with their label maps (the template warped by sampled fields): the
    sampler's montage, one of the images beside their labels, and the volumes measured on the
    labels (``samples.tsv``)."""
    from brainsynth.demo.figures import label_montage
    from brainsynth.io import read_tsv, read_volume
    from brainsynth.methods.deform import sample

    folder = out / "samples"
    paths = sample(ckpt, folder, n=n, seed=0, device=device)
    images = [read_volume(p).data for p in paths]
    labels = [read_volume(_labels_of(p), dtype=None).data for p in paths]
    names = [p.name.removesuffix("_T1w.nii.gz") for p in paths]
    label_montage(images, labels, out / "labels.png", names)
    shown = Shown()
    shown.images.append(("template and samples", folder / "montage.png"))
    shown.images.append(("samples and their label maps", out / "labels.png"))
    for row in read_tsv(folder / "samples.tsv"):
        brain, vent = (float(row[k]) / 1000 for k in ("brain_volume", "ventricle_volume"))
        field = read_volume(folder / f"{row['sample']}_field.nii.gz", ndim=4).data
        moved = float(np.linalg.norm(field, axis=-1).max())
        shown.figures.append(
            (f"{row['sample']}: brain / ventricles / folding voxels / largest displacement",
             f"{brain:.0f} ml / {vent:.1f} ml / {row['folding_voxels']} / {moved:.1f} mm")
        )  # fmt: skip
    shown.notes.append(
        "Volumes measured on each sample's label map (samples.tsv); the displacement is the "
        "sampled field's (the template moves this far at most)."
    )
    return shown


def _labels_of(t1: Path) -> Path:
    return t1.with_name(t1.name.replace("_T1w.nii.gz", "_dseg.nii.gz"))


# --- restore --------------------------------------------------------------------------------------


def clean_scan():
    """The MNI152 2009 T1w at 1 mm (nilearn's, in [0, 1]) skull-stripped with its brain mask
    (``T1 > 0.2``, nilearn's definition): (scan, mask) Volumes."""
    from brainsynth.data.phantom_template import BRAIN_THRESHOLD, mni_1mm
    from brainsynth.io import Volume

    t1, _, _, affine = mni_1mm()
    brain = t1 > BRAIN_THRESHOLD
    scan = Volume(np.where(brain, t1, 0).astype(np.float32), affine)
    return scan, Volume(brain.astype(np.float32), affine)


def thick_slice_input(clean, spacing: float, folder: Path):
    """The clean scan with axial slices every ``THICK`` prior voxels (``spacing`` mm) with a 2 mm
    gap and 1 % noise (``degrade``), written with its sidecar (``SliceThickness``) as
    ``folder/mni152_thick.nii.gz``: (its path, the degradation)."""
    from brainsynth.io import write_text_atomic, write_volume
    from brainsynth.methods.restore.degrade import Degradation, degrade

    d = Degradation(slice_spacing=THICK * spacing, gap=THICK_GAP_MM, noise=THICK_NOISE)
    thick = degrade(clean, d)
    path = write_volume(thick.image, folder / "mni152_thick.nii.gz")
    write_text_atomic(folder / "mni152_thick.json", json.dumps(thick.sidecar, indent=1) + "\n")
    return path, d


def restore_thick_slices(ckpt: Path, out: Path, device) -> Shown:
    """A thick-slice scan simulated from the clean one (``thick_slice_input``), restored by the
    prior (``restore``) and by cubic B-spline interpolation along the slices; both scored against
    the clean scan box-averaged onto the prior's grid: PSNR and SSIM inside its brain, data range
    1 (as ``benchmarks/restore_eval.py``)."""
    from brainsynth.evaluation.image import grid_ssim_kernel, psnr, ssim
    from brainsynth.io import read_volume, write_text_atomic
    from brainsynth.methods.restore.geometry import to_grid
    from brainsynth.methods.restore.prior import load_prior
    from brainsynth.methods.restore.restore import restore
    from brainsynth.methods.restore.scan import ScanOptions, prepare_scan
    from brainsynth.viz import montage

    info = load_prior(ckpt)[3]
    clean, mask = clean_scan()
    scan, d = thick_slice_input(clean, info.spacing, out / "input")
    opts = ScanOptions(task="superres")
    row = restore(ckpt, scan, out / "restored", opts, seed=0, device=device)[0]
    if row["status"] != "ok":
        raise InputError(scan, f"restoration failed: {row['message']}")
    prep = prepare_scan(scan, info, opts)  # the grid and the measurement restore() used
    crop = tuple(slice(0, s) for s in info.shape)
    truth = to_grid(clean, prep.prior_affine, info.padded_shape).data[crop]
    brain = to_grid(mask, prep.prior_affine, info.padded_shape).data[crop] > 0.5
    results = {
        "cubic B-spline": prep.to_scan_units(prep.baseline(3))[crop],
        "restored": read_volume(out / "restored" / "mni152_thick_restored_prior.nii.gz").data,
    }
    kernel = grid_ssim_kernel(truth.shape)
    scores = {
        name: {
            "psnr": psnr(truth, x, 1.0, brain),
            "ssim": ssim(truth, x, 1.0, brain, kernel_size=kernel),
        }
        for name, x in results.items()
    }
    body = {"degradation": asdict(d), "prior_spacing_mm": info.spacing, "data_range": 1.0,
            "region": "the clean scan's brain mask on the prior's grid", "scores": scores}  # fmt: skip
    write_text_atomic(out / "metrics.json", json.dumps(body, indent=1) + "\n")
    acquired = prep.to_scan_units(prep.baseline(0))[crop]  # nearest: the slices as acquired
    titles = ["clean (MNI152 2009)", "thick-slice input"]
    titles += [f"{k}: PSNR {v['psnr']:.1f} dB" for k, v in scores.items()]
    montage([truth, acquired, *results.values()], out / "montage.png", titles, 1.0)
    shown = Shown()
    thickness = f"{d.slice_spacing:g} mm apart, {d.thickness:g} mm thick, {THICK_NOISE:.0%} noise"
    shown.figures.append(("thick-slice input (axial slices)", thickness))
    for name, v in scores.items():
        shown.figures.append((f"{name}: PSNR / SSIM", f"{v['psnr']:.2f} dB / {v['ssim']:.3f}"))
    shown.images.append(
        ("clean / thick-slice input / cubic B-spline / restored", out / "montage.png")
    )
    shown.notes.append(
        f"Scored on the prior's {info.spacing:g} mm grid inside the brain, against the clean scan "
        "averaged onto that grid (restore/metrics.json)."
    )
    return shown


# --- evaluation -----------------------------------------------------------------------------------


def evaluate_phantom_ldm(cache: Path, samples: Path, out: Path, factor: int) -> Shown:
    """The evaluation suite on the ldm samples against the phantom cohort at the samples'
    resolution (``out/real_at_training_resolution``, the report in ``out/eval``)."""
    from brainsynth.evaluation.run import run_evaluation

    real = pooled_real(cache, out / "real_at_training_resolution", factor)
    metrics = run_evaluation(real, samples, out / "eval")
    shown = Shown()
    shown.figures += [(what, _fmt(_get(metrics, key))) for key, what in EVAL_KEYS]
    shown.notes.append(
        f"{_get(metrics, 'inputs.n_synthetic')} samples (covariates drawn from the cohort) against "
        f"the {_get(metrics, 'inputs.n_real')} phantoms; the full report: eval/report.html."
    )
    return shown


def shipped_eval(model: Path) -> Shown:
    """The figures of a shipped model's ``eval.json`` (``brainsynth export --eval``)."""
    shown = Shown()
    path = model / "eval.json"
    if not path.is_file():
        shown.notes.append(f"the model ships no eval.json ({path})")
        return shown
    try:
        body = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise InputError(path, f"unreadable evaluation of the shipped model ({e})") from e
    shown.figures += [(k, _fmt(v)) for k, v in flatten(body)]
    shown.notes.append(
        f"The figures shipped with the model ({path}), measured when it was exported on the data "
        "it was trained for; the phantoms are no fair reference for it, so none are measured here."
    )
    return shown


def flatten(body, prefix: str = "", limit: int = 40) -> list[tuple[str, object]]:
    """The numbers (and short strings) of a JSON document as (dotted key, value), at most
    ``limit``; lists are left out."""
    out: list[tuple[str, object]] = []
    items = body.items() if isinstance(body, dict) else []
    for k, v in items:
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict):
            out += flatten(v, key, limit - len(out))
        elif isinstance(v, (int, float)) or (isinstance(v, str) and len(v) <= 80):
            out.append((key, v))
        if len(out) >= limit:
            return out[:limit]
    return out


def _get(body: dict, dotted: str):
    for k in dotted.split("."):
        if not isinstance(body, dict) or k not in body:
            return None
        body = body[k]
    return body


def _fmt(v) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def pooled_real(cache: Path, dest: Path, factor: int) -> Path:
    """The cache images average-pooled like the ldm training data, on the samples' grid."""
    import torch.nn.functional as F

    from brainsynth.data.cache import CacheDataset
    from brainsynth.data.prepare import reference_affine
    from brainsynth.io import Volume, write_volume

    ds = CacheDataset(cache, split=None, with_labels=False)
    spacing = float(ds.info["spacing"]) * factor
    for i in range(len(ds)):
        item = ds[i]
        x = F.avg_pool3d(item["image"][None], factor)[0, 0].numpy()
        write_volume(
            Volume(x, reference_affine(spacing, x.shape)), dest / f"{item['subject']}_T1w.nii.gz"
        )
    return dest
