"""Cor2Vox shape channels: the image that tells the cortex-grounded bridge where the surfaces are.

From the pial and white surfaces of both hemispheres (world mm), on a given grid:

| channel | meaning | range |
| --- | --- | --- |
| ``S_c`` | fused cortex SDF: ``max(S_p, S_w)`` where both are negative (inside the white surface: the distance to it, negative), ``min(S_p, S_w)`` where both are positive (outside the pial surface: the distance to it), 0 in the ribbon (where their signs differ) | [-1, 0] inside, 0 ribbon, [0, 1] outside |
| ``S_p`` | pial SDF of lh + rh together (negative inside either hemisphere) | [-1, 1] |
| ``S_w`` | white SDF of lh + rh together | [-1, 1] |
| ``E`` | edge map: ``exp(-d^2 / (2 sigma^2))``, ``d`` the distance to the nearer of the pial and white surfaces, ``sigma`` = half the largest voxel size by default (a soft, anti-aliased rasterisation: 1 on a surface, 0.61 at ``sigma``, 0.14 at one voxel) | [0, 1] |
| ``R`` | ribbon mask: ``S_w > 0`` and ``S_p < 0`` (between the surfaces) | {0, 1} |

SDFs (``geometry.sdf``, exact near the surfaces) are in mm, negative inside, clipped to
``[-clip_mm, clip_mm]`` and divided by ``clip_mm``, so they land in [-1, 1]; ``S_c`` is fused from the
clipped fields. Hemisphere union: the unsigned distance is that to the lh and rh meshes together
(the nearer of the two), the sign is inside when inside either hemisphere; this is the SDF of the
union wherever the hemispheres do not overlap (where they touch at the midline, points in both get
the distance to the nearer surface). ``stack()`` gives the channels in the order the network sees
them: ``[S_c, S_p, S_w, E, R]`` (``CHANNELS``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from brainsynth.geometry.sdf import SignRule, union_signed_distance
from brainsynth.io import Surface

CHANNELS = ("S_c", "S_p", "S_w", "E", "R")


@dataclass(frozen=True)
class ShapeChannels:
    """The five channels, float32 (X, Y, Z) each, on the grid they were computed on."""

    S_c: np.ndarray
    S_p: np.ndarray
    S_w: np.ndarray
    E: np.ndarray
    R: np.ndarray
    clip_mm: float
    edge_sigma_mm: float

    def stack(self) -> np.ndarray:
        """(5, X, Y, Z) float32 in the order ``CHANNELS``: [S_c, S_p, S_w, E, R]."""
        return np.stack([getattr(self, name) for name in CHANNELS]).astype(np.float32, copy=False)

    def as_dict(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in CHANNELS}


def fuse_cortex(s_p: np.ndarray, s_w: np.ndarray) -> np.ndarray:
    """Fused cortex SDF: ``max(S_p, S_w)`` where both < 0, ``min(S_p, S_w)`` where both > 0, else 0."""
    both_in = (s_p < 0) & (s_w < 0)
    both_out = (s_p > 0) & (s_w > 0)
    out = np.zeros(np.broadcast_shapes(s_p.shape, s_w.shape), dtype=np.float32)
    out[both_in] = np.maximum(s_p, s_w)[both_in]
    out[both_out] = np.minimum(s_p, s_w)[both_out]
    return out


def shape_channels(
    pial_lh: Surface | None,
    white_lh: Surface | None,
    pial_rh: Surface | None,
    white_rh: Surface | None,
    shape: tuple[int, ...],
    affine: np.ndarray,
    clip_mm: float = 5.0,
    edge_sigma_mm: float | None = None,
    band: float = 1.5,
    sign_rule: SignRule = "parity",
) -> ShapeChannels:
    """Cor2Vox shape channels of both hemispheres on the grid ``shape`` with voxel -> world ``affine``.

    Surfaces are closed meshes in world mm; a missing hemisphere is ``None`` (at least one pial and
    one white surface are needed). ``clip_mm``: SDFs are clipped to +-clip_mm and divided by it
    (5 mm by default: twice a typical cortical thickness, so ``S_c`` saturates a few voxels from the
    ribbon). ``edge_sigma_mm``: width of the edge map (default half the largest voxel size).
    ``band`` and ``sign_rule``: see ``geometry.sdf.signed_distance``. Channel definitions: module
    docstring. Returns float32 arrays of ``shape``; ``.stack()`` is (5, X, Y, Z).
    """
    if clip_mm <= 0:
        raise ValueError(f"clip_mm must be > 0, got {clip_mm}")
    if pial_lh is None and pial_rh is None:
        raise ValueError("shape_channels needs a pial surface (lh, rh or both)")
    if white_lh is None and white_rh is None:
        raise ValueError("shape_channels needs a white surface (lh, rh or both)")
    if edge_sigma_mm is None:
        lin = np.asarray(affine, dtype=np.float64)[:3, :3]
        edge_sigma_mm = 0.5 * float(np.linalg.norm(lin, axis=0).max())
    if edge_sigma_mm <= 0:
        raise ValueError(f"edge_sigma_mm must be > 0, got {edge_sigma_mm}")
    sp = union_signed_distance([pial_lh, pial_rh], shape, affine, band, sign_rule=sign_rule)
    sw = union_signed_distance([white_lh, white_rh], shape, affine, band, sign_rule=sign_rule)
    near = np.minimum(np.abs(sp), np.abs(sw))
    edge = np.exp(-(near * near) / np.float32(2 * edge_sigma_mm**2)).astype(np.float32)
    ribbon = ((sw > 0) & (sp < 0)).astype(np.float32)
    scale = np.float32(1.0 / clip_mm)
    sp_n = np.clip(sp, -clip_mm, clip_mm) * scale
    sw_n = np.clip(sw, -clip_mm, clip_mm) * scale
    return ShapeChannels(
        S_c=fuse_cortex(sp_n, sw_n),
        S_p=sp_n.astype(np.float32),
        S_w=sw_n.astype(np.float32),
        E=edge,
        R=ribbon,
        clip_mm=float(clip_mm),
        edge_sigma_mm=float(edge_sigma_mm),
    )


def stack_channels(channels: ShapeChannels | dict[str, np.ndarray]) -> np.ndarray:
    """(5, X, Y, Z) float32 in the network's order [S_c, S_p, S_w, E, R], from ``shape_channels``'s
    result or a dict with those keys."""
    if isinstance(channels, ShapeChannels):
        return channels.stack()
    return np.stack([np.asarray(channels[name]) for name in CHANNELS]).astype(np.float32)
