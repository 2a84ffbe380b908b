"""Vertex-corresponded surfaces: a template surface carried into each subject through the
registration, so that vertex k is the same anatomical point in every subject (the cortex
method's shape model needs that correspondence).

The registration maps the subject's (fixed) grid into the template's (moving) one: the subject
at x looks like the template at phi(x) = x + u(x), phi = exp(v). A template vertex q therefore
sits in the subject at phi^{-1}(q) = exp(-v)(q): the inverse of a stationary velocity field is
the same field negated, integrated the same way (``DiffuseMorph.displacement(-v)``)."""

from __future__ import annotations

import numpy as np
import torch

from brainsynth.registration.svf import points_through


def to_voxels(points: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """World mm (P, 3) -> voxel coordinates of the grid ``affine``."""
    inv = np.linalg.inv(np.asarray(affine, np.float64))
    return points @ inv[:3, :3].T + inv[:3, 3]


def to_world(voxels: np.ndarray, affine: np.ndarray) -> np.ndarray:
    a = np.asarray(affine, np.float64)
    return voxels @ a[:3, :3].T + a[:3, 3]


@torch.no_grad()
def carry_vertices(
    model,
    template: torch.Tensor,
    subject: torch.Tensor,
    vertices: np.ndarray,
    grid_affine: np.ndarray,
    subject_affine: np.ndarray | None = None,
) -> np.ndarray:
    """Template vertices (P, 3, world mm on the template's grid) -> the same vertices in the
    subject. ``template``/``subject``: (1, 1, *S) in the model's units on that grid (the subject
    affinely aligned); ``subject_affine``: the subject's affine map M (subject(M p) ~ template(p),
    ``template.Aligned.affines``), to return native world coordinates (else the aligned space's).
    ``model``: a trained DiffuseMorph (anything with ``velocity`` and ``displacement``)."""
    v = model.velocity(template, subject)
    u_inv = model.displacement(-v)[0].double()
    vox = torch.from_numpy(to_voxels(np.asarray(vertices, np.float64), grid_affine))
    moved = to_world(points_through(u_inv, vox).numpy(), grid_affine)
    if subject_affine is not None:
        moved = to_world(moved, subject_affine)
    return moved
