"""A quick check that a model folder (``brainsynth export``) loads and samples: the smallest real
sampling run of its method, on CPU, through the method's own public sampler, so that the model's
weights and every file its sampler reads are used:

- ldm: one DDIM step in the latent space, decoded by the autoencoder (``sample_ldm``);
- cortex: one bridge (or DDIM) step from the SDFs of nilearn's fsaverage5 surfaces, fitted to the
  MNI152 template (the demo's ``fsaverage5_surfaces``);
- deform: one DDIM step of the fields model, the template warped by the field;
- restore: one DAPS level (one network evaluation, one Langevin step) on the demo's thick-slice
  MNI152 scan, restored onto the prior's grid.

Each makes one sample (``n = 1``) in a temporary folder and reports its shape and whether it is
finite; the outputs are not kept.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np

from brainsynth.errors import InputError
from brainsynth.models import INFO

METHODS = ("ldm", "cortex", "deform", "restore")
SEED = 0


def model_method(model: Path) -> str:
    """The method ``model.json`` in ``model`` names; an InputError naming the folder when it is
    not a model folder or its method has no check here."""
    try:
        info = json.loads((model / INFO).read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise InputError(model, f"not a model folder: no readable {INFO} ({e})") from e
    method = info.get("method") if isinstance(info, dict) else None
    if method not in METHODS:
        raise InputError(model, f"a model of method {method!r}: checked are {', '.join(METHODS)}")
    return str(method)


def _ldm(model: Path, out: Path) -> Path:
    from brainsynth.methods.ldm.sample import sample_ldm

    return sample_ldm(model, {}, 1, out, steps=1, seed=SEED)[0]


def _cortex(model: Path, out: Path) -> Path:
    from brainsynth.demo.steps import fsaverage5_surfaces
    from brainsynth.methods.cortex.sample import sample

    surfaces = fsaverage5_surfaces(out / "fsaverage5")
    return sample(model, surfaces, out / "samples", n=1, steps=1, seed=SEED)[0]


def _deform(model: Path, out: Path) -> Path:
    from brainsynth.methods.deform.sample import sample

    return sample(model, out, n=1, steps=1, seed=SEED)[0]


def _restore(model: Path, out: Path) -> Path:
    from brainsynth.demo.steps import clean_scan, thick_slice_input
    from brainsynth.methods.restore.prior import load_prior
    from brainsynth.methods.restore.restore import restore
    from brainsynth.methods.restore.scan import ScanOptions

    spacing = load_prior(model)[3].spacing
    scan, _ = thick_slice_input(clean_scan()[0], spacing, out / "input")
    one_level = {"annealing_steps": 1, "ode_steps": 1, "langevin_steps": 1}
    opts = ScanOptions(task="superres")
    row = restore(model, scan, out / "restored", opts, samples=1, daps_overrides=one_level)[0]
    if row["status"] != "ok":
        raise InputError(model, f"restoring a thick-slice scan failed: {row['message']}")
    return out / "restored" / "mni152_thick_restored_prior.nii.gz"


SAMPLERS = {"ldm": _ldm, "cortex": _cortex, "deform": _deform, "restore": _restore}


def smoke_sample(model: str | Path) -> dict:
    """Load ``model`` and make one sample by the smallest sampling run of its method (module
    notes), on CPU: {"method", "shape" (the sample's grid), "finite" (no NaN/inf in it),
    "seconds"}. An InputError naming the folder when it is not a model folder."""
    from brainsynth.io import read_volume

    model = Path(model)
    method = model_method(model)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="brainsynth-check-") as tmp:
        x = read_volume(SAMPLERS[method](model, Path(tmp))).data
    return {
        "method": method,
        "shape": list(x.shape),
        "finite": bool(np.isfinite(x).all()),
        "seconds": round(time.perf_counter() - start, 2),
    }
