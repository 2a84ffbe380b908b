"""White and pial surfaces per hemisphere from a label map, with topology control.

Pipeline (``surfaces_from_labels``), per hemisphere (``lh``, ``rh``):

1. **Masks** (``hemisphere_masks``; scheme ``freesurfer`` or ``dlmuse``, detected as in
   :mod:`brainsynth.data.labels`). ``white`` = cerebral WM + what FreeSurfer's "filled" volume puts
   inside the white surface: lateral and inferior lateral ventricles, caudate, putamen, pallidum,
   thalamus, accumbens, ventral DC (+ choroid plexus, vessels, lesions and WM hypointensities for
   FreeSurfer; basal forebrain for DLMUSE). ``pial`` = ``white`` + cortex. **Hippocampus and
   amygdala are left out of both** (FreeSurfer's white surface passes medially over them; their
   GM is not neocortex); so are the cerebellum, brainstem, 4th ventricle and CSF. Left/right come
   from the label names (FreeSurfer Left-/Right-, ctx-lh/ctx-rh; DLMUSE ``*_L``/``*_R``: cortex
   100-207 odd = left, lobar WM 81-94 even = left, see the tables below). Midline labels (corpus
   callosum, 3rd/5th ventricle, unlateralised WM hypointensities) go to the hemisphere of the
   *nearest lateralised voxel*: a split along the brain's own midline, not a fixed plane (the
   world x = 0 plane is the fallback only when a map has no lateralised voxel at all).
2. **Topology repair** (``repair_topology``): largest 26-connected component, holes filled (the
   background is 6-connected), then, when the digital genus (Euler number, (26, 6) adjacency) is
   not 0, *topology-preserving growth*: starting from the deepest voxel (white) or from the
   repaired white mask (pial), voxels of the mask are added one "simple point" at a time, deepest
   first (levels of the distance to the mask's boundary, ``step`` voxels apart). A simple point is
   one whose addition leaves the number of components, tunnels and cavities unchanged, so the
   result is a topological ball: handles are cut where they are thinnest, and the voxels left out
   are reported (``repair_removed_voxels``). The pial mask is grown from the repaired white mask,
   so the repaired white mask lies inside the repaired pial mask.

   Simple-point test ((26, 6) adjacency; derived here, not taken from a library): adding voxel x to
   the set X changes nothing topologically iff K, the part of the boundary of x's closed unit cube
   shared with the cubes of X, is contractible. K is a subcomplex of the cube's surface (a
   2-sphere): its vertices/edges/faces are those of x's cube touched by a 26-/18-/6-neighbour in X.
   A proper subcomplex of the sphere is contractible iff it is connected and its Euler
   characteristic V - E + F is 1; K is connected iff X's 26-neighbours of x are 26-connected
   among themselves. Voxels of one of the 27 sub-lattices (coordinates mod 3) have disjoint
   neighbourhoods, so they are tested and added together.
3. **Marching cubes** (scikit-image, Lewiner) on the zero-padded binary mask at level 0.4, then
   every vertex moved to the midpoint of its grid edge (where level 0.5 would put it). Why 0.4:
   the trilinear interpolant of a binary mask has its face saddles at 1/2 and its interior critical
   values at 1/4, 4/9, 1/2, 5/9 and 3/4 (computed for all 256 cube configurations); at exactly 0.5
   the topology rests on tie-breaking, and in (1/4, 4/9) the surface has the topology of the mask
   with 18-adjacent voxels and a 6-adjacent background. After the (26, 6) repair that can only
   split off pieces attached by a corner (genus 0 each): the largest piece is kept
   (``dropped_components`` counts the rest). Measured on 300 random repaired 10^3 blobs: genus 0
   for all at levels 0.3 and 0.4, with or without 2x/3x *linear upsampling* of the mask, while the
   upsampled masks gave handles to 26 of them at 0.45 and 0.49 (the interior saddle at 4/9).
   Moving the vertices to the edge midpoints removes the 0.1-voxel outward bias of level 0.4
   (which made the two hemispheres' surfaces overlap where they meet at the midline) and keeps the
   connectivity; on 150 other random blobs: genus 0, no self-intersection
   (``geometry.mesh_checks``), no degenerate triangle. For coarse voxels (default: > 1.5 mm)
   the mesh is then subdivided 1-to-4 (``subdivide``) so that smoothing has vertices to work
   with; linear upsampling of the mask before marching cubes was tried and dropped (it needs a
   level away from 4/9 and keeps the bias). Faces are oriented outward (positive signed volume).
4. **Smoothing** (``taubin_smooth``): Taubin's lambda/mu filter (a shrink step ``lam > 0`` and an
   inflate step ``mu < -lam`` per iteration, with the row-normalised neighbour average); it removes
   the terraces with little shrinkage and does not change the mesh's connectivity (topology).
   Default 10 iterations, x4 per subdivision (the same reach in voxels).
5. **White inside pial** (``separate_surfaces``): white vertices outside the pial surface or
   closer to it than ``eps_mm`` are moved to the nearest pial vertex - ``2 eps_mm`` along its
   outward normal, then pial vertices inside the white surface (or closer than ``eps_mm``) to the
   nearest white vertex + ``2 eps_mm``; a little smoothing of the moved vertices and a local
   recheck, a few rounds, the offset doubling for a vertex moved again. The white surface gives
   way first so that where the masks coincide (medial wall, cortex missing from the labels) the
   pial surface stays on the mask boundary. ``crossing_fraction(inner, outer)`` is the fraction of
   the outer surface's vertices inside the inner one; it is checked *at vertices* (an edge of the
   pial mesh may still graze the white surface between two vertices that are both outside it).
6. **Hemispheres apart** (``separate_hemispheres``, with both hemispheres): where the two
   hemispheres touch in the label map (corpus callosum, medial cortex at 2 mm), smoothing bulges
   each medial face slightly into the other (Taubin's inflation step; on IXI at 2 mm ~4 % of the
   pial vertices, median depth 0.06 mm, max 1.1 mm); those vertices are pushed back the same way,
   alternating with step 5 (up to 3 times). What remains is reported (``other_hemisphere``).
   Deep interpenetration (not produced by this pipeline) is beyond this fix.

Inside test (``winding_numbers``): each query point casts a ray along +z through a generic shear
(x + 0.0137 z, y + 0.0241 z, so that rays miss the mesh's vertices and edges, which marching cubes
puts on grid lines) and sums +1/-1 for each triangle crossed above it, by the sign of the triangle's
normal: the winding number of a closed outward-oriented mesh, 1 inside and 0 outside (robust to
the small self-intersections smoothing can make, unlike a parity count). Triangles are bucketed
by their xy bounding box so each point tests only the triangles of its column.

Genus (``genus``): for a closed orientable mesh with C connected components,
V - E + F = 2C - 2g, g summed over the components.

Files: ``write_surfaces`` writes ``[{prefix}_]hemi-{L,R}_{white,pial}.surf.gii`` (the BIDS-like
names of the phantoms, pycortex_s1 and :mod:`brainsynth.data.datasets`); ``find_surfaces`` finds
those or FreeSurfer's ``lh.white``/``rh.pial`` in a folder or its ``surf/`` subfolder.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from scipy import ndimage as ndi

from brainsynth.data import labels as lab
from brainsynth.errors import InputError
from brainsynth.evaluation import anatomy as an
from brainsynth.evaluation import overlap as ov
from brainsynth.evaluation.surface import mesh_area, signed_volume
from brainsynth.geometry.crossing import (
    crossing_fraction,
    inside,
    longest_edge,
    points_near,
    separate_hemispheres,
    separate_surfaces,
    winding_numbers,
)
from brainsynth.geometry.mesh import (
    euler_characteristic,
    genus,
    is_closed,
    largest_mesh_component,
    marching_cubes_surface,
    mesh_components,
    subdivide_mesh,
    taubin_smooth,
)
from brainsynth.geometry.topology import (
    RepairInfo,
    digital_genus,
    grow_topological,
    mask_bbox,
    repair_topology,
    simple_points,
)
from brainsynth.io import Surface, write_surface, write_text_atomic
from brainsynth.io.surface import surface_key

Hemi = Literal["lh", "rh"]
Kind = Literal["white", "pial"]
HEMIS: tuple[Hemi, Hemi] = ("lh", "rh")
KINDS: tuple[Kind, Kind] = ("white", "pial")
_BIDS_HEMI = {"lh": "L", "rh": "R"}

# --- label tables ------------------------------------------------------------------------------
# FreeSurfer (FreeSurferColorLUT): Left-* / ctx-lh-* / wm-lh-* and their Right-* twins.
FS_WHITE: dict[str, frozenset[int]] = {
    # cerebral WM 2, WM hypointensities 78, wmparc 3000s, unsegmented WM 5001; filled: lateral 4 and
    # inferior lateral 5 ventricles, thalamus 10, caudate 11, putamen 12, pallidum 13, lesion 25,
    # accumbens 26, ventral DC 28, vessel 30, choroid plexus 31, non-WM hypointensities 81
    "lh": frozenset({2, 78, 5001, 4, 5, 10, 11, 12, 13, 25, 26, 28, 30, 31, 81})
    | lab._ranges((3000, 3035)),
    "rh": frozenset({41, 79, 5002, 43, 44, 49, 50, 51, 52, 57, 58, 60, 62, 63, 82})
    | lab._ranges((4000, 4035)),
}
# corpus callosum 251-255, unlateralised WM hypointensities 77 and non-WM hypointensities 80,
# 3rd ventricle 14, 5th ventricle 72: split between the hemispheres
FS_MIDLINE_WHITE = frozenset({14, 72, 77, 80}) | lab._ranges((251, 255))
FS_CORTEX: dict[str, frozenset[int]] = {
    "lh": frozenset({3}) | lab._ranges((1000, 1035), (11100, 11175)),
    "rh": frozenset({42}) | lab._ranges((2000, 2035), (12100, 12175)),
}

# DLMUSE (derivatives/dlmuse/muse_rois.csv): cortical parcels 100-207 come in _R/_L pairs, even =
# right (100 AnteriorCingulateGyrus_R, 101 ..._L, ..., 207 TransverseTemporalGyrus_L); lobar WM,
# fornix and internal capsule 81-94: odd = right (81 Frontal_WM_R, 82 Frontal_WM_L, ...).
_DL_CORTEX_L = frozenset(v for v in ov.DLMUSE_CORTEX if v % 2 == 1)
_DL_WM_L = frozenset(v for v in ov.DLMUSE_CEREBRAL_WM - {95} if v % 2 == 0)
DLMUSE_WHITE: dict[str, frozenset[int]] = {
    # + AccumbensArea 30/23, Caudate 37/36, InfLatVentricle 50/49, LateralVentricle 52/51,
    # Pallidum 56/55, Putamen 58/57, ThalamusProper 60/59, VentralDC 62/61, BasalForebrain 75/76
    "lh": _DL_WM_L | frozenset({30, 37, 50, 52, 56, 58, 60, 62, 75}),
    "rh": (ov.DLMUSE_CEREBRAL_WM - {95} - _DL_WM_L)
    | frozenset({23, 36, 49, 51, 55, 57, 59, 61, 76}),
}
DLMUSE_MIDLINE_WHITE = frozenset({95, 4})  # CorpCall, 3rdVentricle
DLMUSE_CORTEX: dict[str, frozenset[int]] = {
    "lh": _DL_CORTEX_L,
    "rh": ov.DLMUSE_CORTEX - _DL_CORTEX_L,
}

WHITE = {"freesurfer": FS_WHITE, "dlmuse": DLMUSE_WHITE}
MIDLINE_WHITE = {"freesurfer": FS_MIDLINE_WHITE, "dlmuse": DLMUSE_MIDLINE_WHITE}
CORTEX = {"freesurfer": FS_CORTEX, "dlmuse": DLMUSE_CORTEX}


def hemisphere_masks(
    labels: np.ndarray, scheme: str | None = None, affine: np.ndarray | None = None
) -> dict[str, dict[str, np.ndarray]]:
    """``{"lh": {"white": m, "pial": m}, "rh": {...}}``: boolean masks of ``labels`` (X, Y, Z) (module
    docstring, step 1). ``white`` lies inside ``pial``; the two hemispheres are disjoint.
    ``affine`` is used only by the fallback split of midline labels (world x < 0 = left) when the
    map has no lateralised voxel; without it, the first voxel axis' midpoint is used."""
    arr = np.asarray(labels)
    if arr.ndim != 3:
        raise InputError(None, f"label map must be 3D, got shape {arr.shape}")
    counts = lab.label_counts(arr)
    sch = lab.resolve_scheme(counts, scheme)
    side = {h: lab.in_labels(arr, WHITE[sch][h] | CORTEX[sch][h]) for h in HEMIS}
    mid = lab.in_labels(arr, MIDLINE_WHITE[sch])
    mid_left = _split_midline(mid, side["lh"], side["rh"], affine)
    out: dict[str, dict[str, np.ndarray]] = {}
    for h in HEMIS:
        white = lab.in_labels(arr, WHITE[sch][h]) | (mid & (mid_left if h == "lh" else ~mid_left))
        out[h] = {"white": white, "pial": white | lab.in_labels(arr, CORTEX[sch][h])}
    return out


def _split_midline(
    mid: np.ndarray, left: np.ndarray, right: np.ndarray, affine: np.ndarray | None
) -> np.ndarray:
    """Boolean: the midline voxels that go left (nearest lateralised voxel is left)."""
    out = np.zeros(mid.shape, dtype=bool)
    if not mid.any():
        return out
    lateral = left | right
    if not lateral.any():
        idx = np.argwhere(mid)
        if affine is None:
            out[tuple(idx.T)] = idx[:, 0] < mid.shape[0] / 2
        else:
            world = idx @ np.asarray(affine)[:3, :3].T + np.asarray(affine)[:3, 3]
            out[tuple(idx.T)] = world[:, 0] < 0
        return out
    lo, hi = mask_bbox(mid | lateral, margin=0)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    near = ndi.distance_transform_edt(~lateral[box], return_distances=False, return_indices=True)
    goes_left = left[box][tuple(near)]
    out[box] = mid[box] & goes_left
    return out


# --- reports and the pipeline ------------------------------------------------------------------


@dataclass
class SurfaceReport:
    """Diagnostics of one extracted surface (areas mm^2, volumes mm^3, times s)."""

    n_vertices: int
    n_faces: int
    n_components: int
    euler: int
    genus: int
    closed: bool  # watertight: every edge bounds exactly two faces
    oriented: bool  # consistently, and outward (positive signed volume)
    area_mm2: float
    volume_mm3: float
    mask_voxels: int
    mask_genus: int  # digital (26, 6) genus of the mask before the topology repair
    repair_removed_voxels: int = 0
    repair_filled_voxels: int = 0
    dropped_components: int = 0  # mesh pieces dropped (largest kept)
    crossing: float | None = None  # pial: fraction inside white; white: fraction outside pial
    other_hemisphere: float | None = None  # fraction inside the other hemisphere's pial surface
    moved_vertices: int = 0  # by separate_surfaces / separate_hemispheres
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def describe_surface(surface: Surface) -> dict:
    """Topology and size of a mesh: vertices, faces, components, Euler characteristic, genus,
    closed, oriented (outward), area, volume."""
    n_comp, _ = mesh_components(surface.faces, surface.n_vertices)
    watertight, consistent = is_closed(surface.faces)
    vol = signed_volume(surface)
    return {
        "n_vertices": surface.n_vertices,
        "n_faces": int(len(surface.faces)),
        "n_components": n_comp,
        "euler": euler_characteristic(surface.faces, surface.n_vertices),
        "genus": genus(surface.faces, surface.n_vertices),
        "closed": watertight,
        "oriented": bool(consistent and vol > 0),
        "area_mm2": mesh_area(surface),
        "volume_mm3": vol,
    }


def _auto_subdivide(affine: np.ndarray, subdivide: int | None) -> int:
    if subdivide is not None:
        if subdivide < 0:
            raise ValueError(f"subdivide must be >= 0, got {subdivide}")
        return int(subdivide)
    size = float(np.linalg.norm(np.asarray(affine)[:3, :3], axis=0).max())
    return 1 if size > 1.5 else 0


def _auto_iters(smooth_iters: int | None, subdivide: int) -> int:
    """Taubin smoothing reaches about sqrt(iterations) edges: 4x the iterations per subdivision
    keep the same reach in voxels."""
    return 10 * 4**subdivide if smooth_iters is None else int(smooth_iters)


def _spacing(affine: np.ndarray) -> np.ndarray:
    return np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0)


def _mesh_from_repaired(
    mask: np.ndarray, affine: np.ndarray, subdivide: int, smooth_iters: int, lam: float, mu: float
) -> tuple[Surface, int]:
    """Marching cubes, largest piece, subdivision, Taubin smoothing: (surface, pieces dropped)."""
    surf = marching_cubes_surface(mask, affine)
    surf, dropped = largest_mesh_component(surf)
    for _ in range(subdivide):
        surf = Surface(*subdivide_mesh(surf.vertices, surf.faces))
    if smooth_iters > 0:
        surf = Surface(taubin_smooth(surf.vertices, surf.faces, smooth_iters, lam, mu), surf.faces)
    return surf, dropped


def _report(surf: Surface, info: RepairInfo, dropped: int, repaired: bool) -> SurfaceReport:
    report = SurfaceReport(
        **describe_surface(surf),
        mask_voxels=info.voxels_in,
        mask_genus=info.genus_before,
        repair_removed_voxels=info.removed_voxels,
        repair_filled_voxels=info.filled_holes_voxels + info.closing_voxels,
        dropped_components=dropped,
    )
    if report.genus != 0:
        why = "the topology repair did not reach a sphere" if repaired else "no topology repair"
        report.notes.append(f"genus {report.genus}, not 0 ({why})")
    if not report.closed:
        report.notes.append("the mesh is not watertight")
    return report


def _no_repair(mask: np.ndarray) -> tuple[np.ndarray, RepairInfo]:
    """Largest 26-connected component with holes filled; handles stay (their genus is reported)."""
    big = an.largest_component(mask)
    fixed = ndi.binary_fill_holes(big)
    g = digital_genus(fixed)
    n = int(mask.sum())
    return fixed, RepairInfo(n, int(n - big.sum()), int(fixed.sum() - big.sum()), 0, g, g, 0)


def mask_surface(
    mask: np.ndarray,
    affine: np.ndarray,
    smooth_iters: int | None = None,
    subdivide: int | None = None,
    repair: bool = True,
    closing: int = 0,
    lam: float = 0.5,
    mu: float = -0.53,
) -> tuple[Surface, SurfaceReport]:
    """Closed surface (world mm, outward faces) of a binary mask (X, Y, Z) with ``affine`` (voxel ->
    world), and its report. ``repair``: the topology repair of ``repair_topology`` (else only the
    largest component with holes filled, whose handles then show in ``genus``). ``subdivide``:
    rounds of 1-to-4 subdivision after marching cubes (None: 1 for voxels > 1.5 mm, else 0).
    ``smooth_iters``: Taubin iterations (None: 10, x4 per subdivision)."""
    t0 = time.perf_counter()
    m = np.asarray(mask, dtype=bool)
    if m.ndim != 3:
        raise InputError(None, f"mask must be 3D, got shape {m.shape}")
    if not m.any():
        raise InputError(None, "empty mask: nothing to extract a surface from")
    sub = _auto_subdivide(affine, subdivide)
    iters = _auto_iters(smooth_iters, sub)
    if repair:
        fixed, info = repair_topology(m, closing=closing, spacing=_spacing(affine))
    else:
        fixed, info = _no_repair(m)
    surf, dropped = _mesh_from_repaired(fixed, affine, sub, iters, lam, mu)
    report = _report(surf, info, dropped, repair)
    report.seconds = time.perf_counter() - t0
    return surf, report


def surfaces_from_labels(
    labels: np.ndarray,
    affine: np.ndarray,
    scheme: str | None = None,
    smooth_iters: int | None = None,
    subdivide: int | None = None,
    eps_mm: float = 0.1,
    repair: bool = True,
    closing: int = 0,
    hemis: tuple[str, ...] = HEMIS,
) -> tuple[dict[tuple[str, str], Surface], dict[tuple[str, str], SurfaceReport]]:
    """White and pial surfaces of each hemisphere of a label map (X, Y, Z) in world mm (module
    docstring): ``({(hemi, kind): Surface}, {(hemi, kind): SurfaceReport})``, hemi ``lh``/``rh``,
    kind ``white``/``pial``. Every pial vertex lies outside the white surface of its hemisphere and
    every white vertex inside the pial one (``crossing`` in the reports: 0 unless the fix failed,
    which ``notes`` then says); with both hemispheres, their pial surfaces are also kept apart
    (``separate_hemispheres``; ``other_hemisphere`` in the reports). ``seconds``: the time spent
    on the hemisphere. ``subdivide``, ``smooth_iters``, ``repair``, ``closing``: as in
    ``mask_surface``."""
    for h in hemis:
        if h not in HEMIS:
            raise ValueError(f"unknown hemisphere {h!r}; known: {', '.join(HEMIS)}")
    masks = hemisphere_masks(labels, scheme, affine)
    sub = _auto_subdivide(affine, subdivide)
    iters = _auto_iters(smooth_iters, sub)
    surfaces: dict[tuple[str, str], Surface] = {}
    infos: dict[tuple[str, str], tuple[RepairInfo, int]] = {}
    moved: dict[tuple[str, str], np.ndarray] = {}
    seconds: dict[str, float] = {}
    for h in hemis:
        t_h = time.perf_counter()
        _hemisphere(h, masks[h], affine, sub, iters, eps_mm, repair, closing,
                    surfaces, infos, moved)  # fmt: skip
        seconds[h] = time.perf_counter() - t_h
    if len(hemis) == 2:
        t_x = time.perf_counter()
        _keep_hemispheres_apart(surfaces, moved, eps_mm)
        for h in HEMIS:
            seconds[h] += (time.perf_counter() - t_x) / 2
    return surfaces, _reports(surfaces, infos, moved, seconds, hemis, repair)


def _hemisphere(
    h: str,
    masks: dict[str, np.ndarray],
    affine: np.ndarray,
    sub: int,
    iters: int,
    eps_mm: float,
    repair: bool,
    closing: int,
    surfaces: dict,
    infos: dict,
    moved: dict,
) -> None:
    """One hemisphere's white and pial surfaces (repaired, meshed, white kept inside pial) into
    ``surfaces``, with their repair ``infos`` and the vertices the separation ``moved``."""
    mw, mp = masks["white"], masks["pial"]
    if not mw.any():
        raise InputError(None, f"{h}: no cerebral white matter label in the label map")
    if not (mp & ~mw).any():
        raise InputError(None, f"{h}: no cortex label in the label map")
    sp = _spacing(affine)
    lo, hi = mask_bbox(mp, margin=2)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    aff = np.asarray(affine, dtype=np.float64).copy()
    aff[:3, 3] = aff[:3, :3] @ lo + aff[:3, 3]
    if repair:
        w_fix, w_info = repair_topology(mw[box], closing=closing, spacing=sp)
        p_fix, p_info = repair_topology(mp[box], start=w_fix, closing=closing, spacing=sp)
    else:
        w_fix, w_info = _no_repair(mw[box])
        p_fix, p_info = _no_repair(mp[box] | w_fix)
    w_surf, w_drop = _mesh_from_repaired(w_fix, aff, sub, iters, 0.5, -0.53)
    p_surf, p_drop = _mesh_from_repaired(p_fix, aff, sub, iters, 0.5, -0.53)
    w0, p0 = w_surf.vertices, p_surf.vertices
    w_surf, p_surf, _ = separate_surfaces(w_surf, p_surf, eps_mm=eps_mm, full_check=False)
    surfaces[h, "white"], surfaces[h, "pial"] = w_surf, p_surf
    infos[h, "white"], infos[h, "pial"] = (w_info, w_drop), (p_info, p_drop)
    moved[h, "white"] = np.any(w_surf.vertices != w0, axis=1)
    moved[h, "pial"] = np.any(p_surf.vertices != p0, axis=1)


def _keep_hemispheres_apart(surfaces: dict, moved: dict, eps_mm: float, passes: int = 3) -> None:
    """Push the two pial surfaces apart (``separate_hemispheres``), in place. Pushing a pial
    surface away from the other hemisphere can bring it inside its own white surface, and the fix
    of that can push it back: alternate up to ``passes`` times, each time checking only near the
    vertices that moved."""
    check: dict[str, np.ndarray | None] = {"lh": None, "rh": None}
    for _ in range(passes):
        before: dict[str, np.ndarray] = {h: surfaces[h, "pial"].vertices for h in HEMIS}
        lh, rh, _ = separate_hemispheres(
            surfaces["lh", "pial"], surfaces["rh", "pial"], eps_mm,
            check_lh=check["lh"], check_rh=check["rh"], full_check=False,
        )  # fmt: skip
        if not any(np.any(p.vertices != before[h]) for h, p in (("lh", lh), ("rh", rh))):
            break
        for h, p_new in (("lh", lh), ("rh", rh)):
            changed = np.any(p_new.vertices != before[h], axis=1)
            surfaces[h, "pial"] = p_new
            moved[h, "pial"] |= changed
            if changed.any():
                _recheck_white(h, p_new, before[h], changed, surfaces, moved, eps_mm)
        check = _near_moved_pial(surfaces, before, eps_mm)


def _recheck_white(
    h: str, p_new: Surface, p_old: np.ndarray, changed: np.ndarray, surfaces: dict, moved: dict,
    eps_mm: float,
) -> None:  # fmt: skip
    """White/pial separation of hemisphere ``h`` again, only where its pial surface moved."""
    white = surfaces[h, "white"]
    shift = float(np.linalg.norm(p_new.vertices - p_old, axis=1).max())
    radius = 2 * max(longest_edge(white), longest_edge(p_new)) + shift + 2 * eps_mm
    pts = np.concatenate([p_new.vertices[changed], p_old[changed]])
    (near_w,) = points_near(pts, [white.vertices], radius)
    w2, p2, _ = separate_surfaces(
        white, p_new, eps_mm=eps_mm, check_white=near_w, check_pial=changed, full_check=False
    )
    moved[h, "white"] |= np.any(w2.vertices != white.vertices, axis=1)
    moved[h, "pial"] |= np.any(p2.vertices != p_new.vertices, axis=1)
    surfaces[h, "white"], surfaces[h, "pial"] = w2, p2


def _near_moved_pial(
    surfaces: dict, before: dict[str, np.ndarray], eps_mm: float
) -> dict[str, np.ndarray | None]:
    """Per hemisphere, the pial vertices near any pial vertex that moved since ``before``: what
    the next pass of ``_keep_hemispheres_apart`` checks."""
    pts = np.concatenate(
        [
            a[np.any(surfaces[h, "pial"].vertices != before[h], axis=1)]
            for h in HEMIS
            for a in (surfaces[h, "pial"].vertices, before[h])
        ]
    )
    radius = 2 * max(longest_edge(surfaces[h, "pial"]) for h in HEMIS) + 4 * eps_mm
    radius += max(
        float(np.linalg.norm(surfaces[h, "pial"].vertices - before[h], axis=1).max()) for h in HEMIS
    )
    near_l, near_r = points_near(
        pts, [surfaces["lh", "pial"].vertices, surfaces["rh", "pial"].vertices], radius
    )
    return {"lh": near_l, "rh": near_r}


def _reports(
    surfaces: dict, infos: dict, moved: dict, seconds: dict[str, float],
    hemis: tuple[str, ...], repair: bool,
) -> dict[tuple[str, str], SurfaceReport]:  # fmt: skip
    """Each surface's report: topology and repair, crossings of the other kind and (with both
    hemispheres) of the other hemisphere's pial surface, vertices moved, seconds."""
    reports: dict[tuple[str, str], SurfaceReport] = {}
    for h in hemis:
        t_r = time.perf_counter()
        w, p = surfaces[h, "white"], surfaces[h, "pial"]
        crossing = {
            "white": float((~inside(w.vertices, p)).mean()),
            "pial": crossing_fraction(w, p),
        }
        for kind, other in (("white", "pial"), ("pial", "white")):
            surf = surfaces[h, kind]
            info, drop = infos[h, kind]
            rep = _report(surf, info, drop, repair)
            rep.crossing = crossing[kind]
            rep.moved_vertices = int(moved[h, kind].sum())
            if rep.crossing:
                rep.notes.append(
                    f"{rep.crossing:.3%} of the vertices on the wrong side of the {other} surface"
                )
            if len(hemis) == 2:
                o = "rh" if h == "lh" else "lh"
                rep.other_hemisphere = crossing_fraction(surfaces[o, "pial"], surf)
                if rep.other_hemisphere:
                    rep.notes.append(
                        f"{rep.other_hemisphere:.3%} of the vertices inside the {o} pial surface"
                    )
            reports[h, kind] = rep
        elapsed = seconds[h] + time.perf_counter() - t_r
        for kind in KINDS:
            reports[h, kind].seconds = elapsed
    return reports


# --- files -------------------------------------------------------------------------------------


def surface_filename(hemi: str, kind: str, prefix: str | None = None) -> str:
    """``[{prefix}_]hemi-{L,R}_{kind}.surf.gii``."""
    name = f"hemi-{_BIDS_HEMI[hemi]}_{kind}.surf.gii"
    return f"{prefix}_{name}" if prefix else name


def write_surfaces(
    surfaces: dict[tuple[str, str], Surface],
    folder: str | Path,
    prefix: str | None = None,
    reports: dict[tuple[str, str], SurfaceReport] | None = None,
) -> dict[tuple[str, str], Path]:
    """Write each surface as GIfTI (``surface_filename``) into ``folder`` (created), and the
    reports, if given, as ``[{prefix}_]surfaces.json``. Returns the surface paths."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for (hemi, kind), surf in surfaces.items():
        paths[hemi, kind] = write_surface(surf, out / surface_filename(hemi, kind, prefix))
    if reports is not None:
        name = f"{prefix}_surfaces.json" if prefix else "surfaces.json"
        body = {f"{h}_{k}": r.as_dict() for (h, k), r in reports.items()}
        write_text_atomic(out / name, json.dumps(body, indent=2) + "\n")
    return paths


def find_surfaces(folder: str | Path) -> dict[tuple[str, str], Path]:
    """``{(hemi, kind): path}`` for the four surfaces (lh/rh x white/pial) in ``folder`` or its
    ``surf/`` subfolder: GIfTI ``*hemi-L_pial.surf.gii`` (also ``hemi-L_<entities>_pial``) or
    FreeSurfer ``lh.pial``. An InputError names the folder and what is missing or ambiguous."""
    root = Path(folder)
    if not root.is_dir():
        raise InputError(root, "surface folder not found")
    dirs = [root] + ([root / "surf"] if (root / "surf").is_dir() else [])
    found: dict[tuple[str, str], list[Path]] = {}
    for d in dirs:
        for p in sorted(d.iterdir()):
            if not p.is_file():
                continue
            key = surface_key(p.name)
            if key is not None:
                found.setdefault(key, []).append(p)
    missing = [f"{h}.{k}" for h in HEMIS for k in KINDS if (h, k) not in found]
    if missing:
        have = ", ".join(p.name for ps in found.values() for p in ps) or "no surface file"
        raise InputError(
            root,
            f"missing surface(s) {', '.join(missing)} (looked for *hemi-L_pial.surf.gii or "
            f"lh.pial names here and in surf/; found: {have})",
        )
    ambiguous = {k: ps for k, ps in found.items() if len(ps) > 1}
    if ambiguous:
        shown = "; ".join(
            f"{h}.{k}: {', '.join(p.name for p in ps)}" for (h, k), ps in ambiguous.items()
        )
        raise InputError(root, f"several files for the same surface ({shown})")
    return {k: ps[0] for k, ps in found.items()}


__all__ = [
    "CORTEX",
    "HEMIS",
    "KINDS",
    "MIDLINE_WHITE",
    "WHITE",
    "RepairInfo",
    "SurfaceReport",
    "crossing_fraction",
    "describe_surface",
    "digital_genus",
    "euler_characteristic",
    "find_surfaces",
    "genus",
    "grow_topological",
    "hemisphere_masks",
    "inside",
    "is_closed",
    "largest_mesh_component",
    "marching_cubes_surface",
    "subdivide_mesh",
    "mask_surface",
    "mesh_components",
    "repair_topology",
    "separate_hemispheres",
    "separate_surfaces",
    "simple_points",
    "surface_filename",
    "surfaces_from_labels",
    "taubin_smooth",
    "winding_numbers",
    "write_surfaces",
]
