"""The cortex method's shape model: vertex-corresponded surfaces of the training subjects from the
deform method's registration, their PCA (``geometry.shape_model``), and new surfaces from it.

Correspondence: white and pial surfaces of the deform run's (affine) template labels
(``geometry.extract``), carried into each training subject through the trained registration's
inverse map (``methods.deform.correspond.carry_vertices``), in the affinely aligned space (the
template's world space: the subjects' pose and size relative to the template are removed by the
affine alignment, so the model holds the non-linear shape). Vertex k is the same template point
in every subject.

A model folder holds ``shape_model.safetensors``, ``codes.json`` (the whitened code of every
training subject, for ``--slerp A B``) and ``template/`` (the template surfaces, GIfTI). New
surfaces are written as ``hemi-{L,R}_{white,pial}.surf.gii`` folders that ``sample cortex
--surfaces`` reads.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from brainsynth.errors import InputError
from brainsynth.geometry.extract import surfaces_from_labels, write_surfaces
from brainsynth.geometry.shape_model import ShapeModel, fit_shape_model, load_shape_model, slerp
from brainsynth.io import Surface, write_text_atomic
from brainsynth.methods.deform.correspond import carry_vertices
from brainsynth.methods.deform.networks import OFFSET, SCALE, load_network
from brainsynth.methods.deform.template import FOLDER, Aligned, load_template
from brainsynth.training.checkpoint import find_in_run

MODEL, CODES = "shape_model.safetensors", "codes.json"


def _key(name: str) -> tuple[str, str]:
    hemi, kind = name.split("_")
    return hemi, kind


@torch.no_grad()
def corresponded_surfaces(
    deform_run: str | Path, subdivide: int = 0, device: torch.device | str = "cpu"
) -> tuple[dict[str, Surface], list[str], list[dict[str, Surface]]]:
    """(template surfaces, subject ids, each training subject's corresponded surfaces), names
    ``lh_white``, ``lh_pial``, ... (module docstring)."""
    _, model, _ = load_network(deform_run, "register", device)
    template, tdseg = load_template(deform_run)
    if tdseg is None:
        raise InputError(deform_run, "the deform run's template has no label map")
    found = find_in_run(deform_run, Path(FOLDER) / "aligned_train.pt")
    if found is None:
        raise InputError(deform_run, f"no aligned training subjects ({FOLDER}/aligned_train.pt)")
    aligned = Aligned.load(found)
    surf, _ = surfaces_from_labels(tdseg.data.astype(np.int64), tdseg.affine, subdivide=subdivide)
    names = [f"{h}_{k}" for (h, k) in surf]
    tmpl = {f"{h}_{k}": s for (h, k), s in surf.items()}
    verts = np.concatenate([tmpl[n].vertices for n in names])
    cuts = np.cumsum([tmpl[n].n_vertices for n in names])[:-1]
    t = (torch.from_numpy(template.data)[None, None].float() * SCALE + OFFSET).to(device)
    subjects = []
    for i in tqdm(range(len(aligned.ids)), desc="correspondence", unit="subject"):
        f = (aligned.images[i : i + 1] * SCALE + OFFSET).to(device)
        moved = carry_vertices(model, t, f, verts, template.affine)
        parts = np.split(moved, cuts)
        subjects.append({n: Surface(p, tmpl[n].faces) for n, p in zip(names, parts)})
    return tmpl, list(aligned.ids), subjects


def fit(
    deform_run: str | Path,
    out: str | Path,
    n_components: int | float | None = None,
    subdivide: int = 0,
    device: torch.device | str = "cpu",
) -> ShapeModel:
    """Fit and write a shape model folder (module docstring) from a trained deform run."""
    tmpl, ids, subjects = corresponded_surfaces(deform_run, subdivide, device)
    model = fit_shape_model(subjects, n_components)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save(out / MODEL)
    codes = {sid: model.encode(s).round(6).tolist() for sid, s in zip(ids, subjects)}
    write_text_atomic(out / CODES, json.dumps(codes) + "\n")
    write_surfaces({_key(n): s for n, s in tmpl.items()}, out / "template")
    return model


def new_shapes(
    model_dir: str | Path,
    out: str | Path,
    *,
    n: int = 1,
    pair: tuple[str, str] | None = None,
    phi: float = 0.5,
    seed: int = 0,
    temperature: float = 1.0,
) -> list[Path]:
    """Surface folders ``OUT/shape_###/``: ``n`` draws from the model's prior, or (``pair``) the
    slerp at ``phi`` between two training subjects' codes."""
    model_dir, out = Path(model_dir), Path(out)
    model = load_shape_model(model_dir / MODEL)
    if pair is not None:
        try:
            codes = json.loads((model_dir / CODES).read_text())
        except (OSError, ValueError) as e:
            raise InputError(model_dir / CODES, f"unreadable subject codes ({e})") from e
        unknown = [s for s in pair if s not in codes]
        if unknown:
            raise InputError(
                model_dir / CODES, f"unknown subject(s) {unknown}; known: {sorted(codes)[:5]}..."
            )
        z = slerp(np.asarray(codes[pair[0]]), np.asarray(codes[pair[1]]), phi)[None]
    else:
        if n < 1:
            raise InputError(None, f"-n must be at least 1, got {n}")
        z = model.sample_codes(n, np.random.default_rng(seed), temperature)
    folders = []
    for k, code in enumerate(z):
        shapes = model.decode(code)
        folder = out / f"shape_{k:03d}"
        write_surfaces({_key(name): s for name, s in shapes.items()}, folder)
        folders.append(folder)
    return folders
