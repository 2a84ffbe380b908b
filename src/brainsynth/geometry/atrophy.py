"""Sub-voxel cortical atrophy: move pial vertices inward, never past the white surface.

Thickness. FreeSurfer's pial and white meshes of a hemisphere are vertex-corresponded (the pial
surface is grown from the white one: same vertex count, same faces), so the thickness at vertex v is
taken as the corresponded distance ``t_v = |pial_v - white_v|``. For meshes that are not
corresponded (different vertex counts) it is the distance from the pial vertex to the nearest point
of the white mesh (exact point-to-triangle, ``evaluation.surface.distances_to_mesh``): unlike a
distance along the normal it is defined everywhere (a normal ray in a sulcus can miss the white
mesh or hit the far bank), but it is not FreeSurfer's symmetric definition.

Atrophy by ``m`` mm at a vertex (``m = mm * w_v``, w the region weight below) targets
``t' = max(t - m, min(t, min_thickness))``: thinner by m, never below ``min_thickness``, and a vertex
already thinner than that does not move (and is never thickened).
* corresponded: the pial vertex moves along the segment to its white vertex,
  ``pial'_v = white_v + (pial_v - white_v) t'_v / t_v``: the corresponded thickness becomes t'
  exactly and the vertex cannot pass its white vertex.
* otherwise: it moves along its inward (area-weighted) vertex normal by ``s = t - t'``. The distance
  to a mesh changes by at most the distance moved, so the new distance is >= t - s = t' >=
  min_thickness along the whole path: the vertex never crosses the white mesh, but the thickness
  may fall by less than s where the normal does not point at the nearest white point.

Region and taper. ``region_mask`` (bool per pial vertex) selects the vertices that move; vertices
outside it never move. ``taper_rings = r`` ramps the weight up inside the region over its first r
rings of vertices from the boundary (ring j gets j / (r + 1), deeper vertices 1), so the atrophied
patch joins the untouched cortex without a step.

Checks: ``flipped_fraction(before, after)`` is the fraction of pial faces whose normal turned by more
than 90 degrees (0 expected for moderate atrophy of a clean mesh); given the white surface it leaves
out faces that were already inverted relative to it (see there). ``geometry.mesh_checks`` has an
exact self-intersection test for small meshes.

Measured on pycortex S1, left hemisphere (152,893 vertices, corresponded), 0.5 mm everywhere with
min_thickness 0.5: ~0.01 s; mean thickness 2.871 -> 2.390 mm (exactly -0.5 on the 96% of vertices
thicker than 1 mm); 0.16% of faces flip, all but 10 of them (0.003%) slivers that were inverted
relative to the white surface before. The non-corresponded (normal) mode needs exact distances to
the white mesh: ~90 s for a full hemisphere on 2 cores.
"""

from __future__ import annotations

import numpy as np

from brainsynth.data.phantom_surfaces import adjacency, vertex_normals
from brainsynth.geometry.mesh_checks import flipped_faces
from brainsynth.io import Surface


def _is_corresponded(pial: Surface, white: Surface, corresponded: bool | None) -> bool:
    same = pial.n_vertices == white.n_vertices
    if corresponded is None:
        return same
    if corresponded and not same:
        raise ValueError(
            f"corresponded=True needs equal vertex counts (pial {pial.n_vertices}, "
            f"white {white.n_vertices})"
        )
    return corresponded


def thickness(pial: Surface, white: Surface, corresponded: bool | None = None) -> np.ndarray:
    """Per-pial-vertex cortical thickness (N,) in mm (module docstring): ``|pial_v - white_v|`` when
    corresponded (default: when the vertex counts agree), else the distance to the white mesh."""
    if _is_corresponded(pial, white, corresponded):
        return np.linalg.norm(pial.vertices - white.vertices, axis=1)
    from brainsynth.evaluation.surface import distances_to_mesh

    return distances_to_mesh(pial.vertices, white)


def region_weights(
    faces: np.ndarray, n_vertices: int, region_mask: np.ndarray | None, taper_rings: int = 0
) -> np.ndarray:
    """Weights (N,) in [0, 1]: 0 outside the region; inside, ``j / (taper_rings + 1)`` on the j-th
    ring of vertices from the region's boundary (j <= taper_rings) and 1 deeper in."""
    if region_mask is None:
        return np.ones(n_vertices)
    region = np.asarray(region_mask)
    if region.dtype != bool or region.shape != (n_vertices,):
        raise ValueError(f"region_mask must be a boolean array ({n_vertices},)")
    if taper_rings < 0:
        raise ValueError("taper_rings must be >= 0")
    w = region.astype(np.float64)
    if taper_rings == 0 or region.all():
        return w
    neighbours = adjacency(faces, n_vertices)
    reached = ~region  # the outside is ring 0
    for ring in range(1, taper_rings + 1):
        new = (neighbours @ reached.astype(np.float64) > 0) & ~reached
        w[new] = ring / (taper_rings + 1)
        reached = reached | new
    return w


def atrophy(
    pial: Surface,
    white: Surface,
    mm: float | np.ndarray,
    region_mask: np.ndarray | None = None,
    *,
    min_thickness: float = 0.5,
    taper_rings: int = 0,
    corresponded: bool | None = None,
) -> Surface:
    """The pial surface thinned by ``mm`` (scalar or per-vertex (N,), >= 0) inside ``region_mask``
    (boolean (N,), None: everywhere), never below ``min_thickness`` mm (module docstring for the
    rule, the two modes and the taper). Faces and metadata are kept."""
    return atrophy_with_thickness(
        pial, white, mm, region_mask, min_thickness=min_thickness, taper_rings=taper_rings,
        corresponded=corresponded,
    )[0]  # fmt: skip


def atrophy_with_thickness(
    pial: Surface,
    white: Surface,
    mm: float | np.ndarray,
    region_mask: np.ndarray | None = None,
    *,
    min_thickness: float = 0.5,
    taper_rings: int = 0,
    corresponded: bool | None = None,
) -> tuple[Surface, np.ndarray]:
    """:func:`atrophy` and the thickness (N,) of the input it measured on the way, for callers
    that report the change (the non-corresponded thickness is an exact-distance pass over the
    hemisphere: not worth computing twice)."""
    n = pial.n_vertices
    amount = np.broadcast_to(np.asarray(mm, dtype=np.float64), (n,))
    if not np.isfinite(amount).all() or (amount < 0).any():
        raise ValueError("atrophy mm must be finite and >= 0 (thinning only)")
    if min_thickness < 0:
        raise ValueError("min_thickness must be >= 0")
    m = amount * region_weights(pial.faces, n, region_mask, taper_rings)
    t = thickness(pial, white, corresponded)
    target = np.maximum(t - m, np.minimum(t, min_thickness))
    if _is_corresponded(pial, white, corresponded):
        ratio = np.divide(target, t, out=np.ones_like(t), where=t > 0)
        moved = white.vertices + (pial.vertices - white.vertices) * ratio[:, None]
    else:
        normals = vertex_normals(pial.vertices, pial.faces)
        moved = pial.vertices - (t - target)[:, None] * normals
    return Surface(moved, pial.faces, dict(pial.meta)), t


def flipped_fraction(before: Surface, after: Surface, white: Surface | None = None) -> float:
    """Fraction of faces whose normal on ``after`` points against its normal on ``before`` (same
    faces): a self-intersection risk indicator, 0 for a clean move.

    With a corresponded ``white``, faces whose pial normal already pointed against their white
    normal before the move are not counted: real pial meshes have such locally inverted slivers in
    compressed sulcal fundi (~1.4% of faces in pycortex S1's left hemisphere), and moving towards the
    white surface turns them back (un-folds them), which is not a new fold.
    """
    if not np.array_equal(before.faces, after.faces):
        raise ValueError("before and after must share their faces")
    flipped = flipped_faces(after.vertices, after.faces, before.vertices)
    if white is not None:
        if white.n_vertices != before.n_vertices or not np.array_equal(white.faces, before.faces):
            raise ValueError("white must be corresponded with the pial (same vertices and faces)")
        flipped &= ~flipped_faces(before.vertices, before.faces, white.vertices)
    return float(flipped.mean())
