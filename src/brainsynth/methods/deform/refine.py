"""The sharp template: the affine template refined by the trained registration.

The registration maps the template T to subject S_i with the diffeomorphism phi_i = exp(v_i):
S_i(p) ~ T(phi_i(p)) (``registration.svf.warp``: out(p) = in(p + u(p))). So each subject brought
back into the template's space is S_i(phi_i^-1(q)) = warp(S_i, u of exp(-v_i)), and its labels the
same (nearest). Their mean is a template with the average *shape* of the affine template but the
subjects' sharpness (the affine mean blurs every sulcus away); the majority vote of the
warped labels keeps the thin structures (cortex) that an affinely aligned majority vote thins out.

This is one round of the usual template refinement (Joshi et al. 2004; Avants et al. 2010) without
retraining the registration, whose moving image stays the affine template. Generated scans warp
the sharp template and its labels (``sample``); the registration (``register``, the evaluation's
Dice) keeps the template it was trained with.

Written to ``RUN/template/``: ``sharp_T1w.nii.gz`` (cache units), ``sharp_dseg.nii.gz``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from brainsynth.errors import InputError
from brainsynth.io import Volume, read_volume, write_volume
from brainsynth.methods.deform.networks import OFFSET, SCALE, load_network
from brainsynth.methods.deform.template import FOLDER, Aligned, load_template, majority_vote
from brainsynth.registration.diffusemorph import DiffuseMorph
from brainsynth.registration.svf import warp
from brainsynth.training.checkpoint import find_in_run

SHARP_T1W, SHARP_DSEG = "sharp_T1w.nii.gz", "sharp_dseg.nii.gz"


@torch.no_grad()
def to_template_space(
    model: DiffuseMorph,
    template: Tensor,
    images: Tensor,
    labels: Tensor | None = None,
    batch: int = 4,
    velocities: Tensor | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Subjects ``images`` (N, 1, *S) (cache units) and ``labels`` (N, 1, *S) warped into the
    space of ``template`` (1, 1, *S) (cache units) through the inverse of each registration;
    ``velocities`` (N, 3, *S): the registrations' velocities when already computed."""
    t = template * SCALE + OFFSET
    out_img, out_lab = [], []
    for i in range(0, len(images), batch):
        f = images[i : i + batch]
        if velocities is None:
            v = model.velocity(t.expand_as(f), f * SCALE + OFFSET)
        else:
            v = velocities[i : i + batch].to(f)
        u_inv = model.displacement(-v)  # exp(-v) = exp(v)^-1
        out_img.append(warp(f, u_inv))
        if labels is not None:
            lab = labels[i : i + batch].float()
            out_lab.append(warp(lab, u_inv, mode="nearest").round().long())
    return torch.cat(out_img), (torch.cat(out_lab) if labels is not None else None)


def sharp_template(
    run: str | Path,
    device: torch.device | str = "cpu",
    model: DiffuseMorph | None = None,
    velocities: Tensor | None = None,
) -> tuple[Volume, Volume | None]:
    """Build and write the sharp template of a run whose registration is trained (module notes).
    ``model``: the run's loaded registration; ``velocities`` (N, 3, *S): its velocities of the
    aligned training subjects (in their order), when the caller has them already."""
    if model is None:
        model = load_network(run, "register", device)[1]
    template, _ = load_template(run)
    found = find_in_run(run, Path(FOLDER) / "aligned_train.pt")
    if found is None:
        raise InputError(run, f"no aligned training subjects ({FOLDER}/aligned_train.pt)")
    aligned = Aligned.load(found)
    t = torch.from_numpy(template.data)[None, None].float().to(device)
    labels = aligned.labels.to(device) if aligned.labels is not None else None
    imgs, labs = to_template_space(
        model,
        t,
        aligned.images.to(device),
        labels,
        velocities=velocities,  # type: ignore[arg-type]
    )
    mean = imgs.mean(0)[0].cpu().numpy().astype(np.float32)
    sharp = write_volume(Volume(mean, template.affine), found.parent / SHARP_T1W)
    dseg = None
    if labs is not None:
        vote = majority_vote(labs[:, 0].cpu().numpy()).astype(np.int16)
        dseg = Volume(vote, template.affine)
        write_volume(dseg, found.parent / SHARP_DSEG)
    return read_volume(sharp), dseg


def load_sharp_template(run: str | Path) -> tuple[Volume, Volume | None] | None:
    """The run's sharp template and labels, or None when it has none (an older run)."""
    found = find_in_run(run, Path(FOLDER) / SHARP_T1W)
    if found is None:
        return None
    lab = found.parent / SHARP_DSEG
    return read_volume(found), read_volume(lab) if lab.is_file() else None
