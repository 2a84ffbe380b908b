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

import itertools
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from scipy import ndimage as ndi
from scipy import sparse
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from brainsynth.data import labels as lab
from brainsynth.data.phantom_surfaces import adjacency, vertex_normals
from brainsynth.errors import InputError
from brainsynth.evaluation import anatomy as an
from brainsynth.evaluation import overlap as ov
from brainsynth.evaluation.surface import distances_to_mesh, mesh_area, signed_volume
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

MC_LEVEL = 0.4  # module docstring, step 3


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
    lo, hi = _bbox(mid | lateral, margin=0)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    near = ndi.distance_transform_edt(~lateral[box], return_distances=False, return_indices=True)
    goes_left = left[box][tuple(near)]
    out[box] = mid[box] & goes_left
    return out


# --- small helpers -----------------------------------------------------------------------------


def _bbox(mask: np.ndarray, margin: int) -> tuple[np.ndarray, np.ndarray]:
    idx = np.argwhere(mask)
    lo = np.maximum(idx.min(axis=0) - margin, 0)
    hi = np.minimum(idx.max(axis=0) + 1 + margin, mask.shape)
    return lo, hi


def digital_genus(mask: np.ndarray) -> int:
    """Genus of a mask with one 26-component and no cavity, from its (26, 6) Euler number
    (chi = 1 - g): the number of handles."""
    from skimage.measure import euler_number

    m = np.pad(np.asarray(mask, dtype=bool), 1)
    return int(1 - euler_number(m, connectivity=3))


# --- simple points ((26, 6) adjacency) ---------------------------------------------------------

_OFFSETS = np.array(list(itertools.product((-1, 0, 1), repeat=3)))  # (27, 3); index 13 = centre
_CENTRE = 13
_NB = np.array([i for i in range(27) if i != _CENTRE])  # the 26 neighbours


def _cube_cells() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Membership (cells, 27) of the neighbours touching each vertex (8), edge (12) and face (6)
    of the centre voxel's cube: a cell of the cube is in K when one of its members is in X."""

    def members(keep) -> list[int]:
        return [i for i, o in enumerate(_OFFSETS) if i != _CENTRE and keep(o)]

    verts = [
        members(lambda o, s=s: all(o[k] in (0, s[k]) for k in range(3)))
        for s in itertools.product((-1, 1), repeat=3)
    ]
    edges = []
    for axis in range(3):
        a, b = (k for k in range(3) if k != axis)
        for s in itertools.product((-1, 1), repeat=2):
            edges.append(
                members(
                    lambda o, axis=axis, a=a, b=b, s=s: (
                        o[axis] == 0 and o[a] in (0, s[0]) and o[b] in (0, s[1])
                    )
                )
            )
    faces = [[i] for i, o in enumerate(_OFFSETS) if np.abs(o).sum() == 1]

    def table(groups: list[list[int]]) -> np.ndarray:
        t = np.zeros((len(groups), 27), dtype=np.float32)
        for r, g in enumerate(groups):
            t[r, g] = 1.0
        return t

    return table(verts), table(edges), table(faces)


_V_CELLS, _E_CELLS, _F_CELLS = _cube_cells()
_ADJ26 = (np.abs(_OFFSETS[_NB][:, None, :] - _OFFSETS[_NB][None, :, :]).max(axis=2) == 1).astype(
    np.float32
)  # 26-adjacency among the 26 neighbours (26, 26)


def simple_points(neighbourhoods: np.ndarray) -> np.ndarray:
    """Which voxels are (26, 6)-simple for their set X: ``neighbourhoods`` (n, 27) boolean, the
    3x3x3 blocks of X flattened in C order (the centre, index 13, is ignored). Simple = adding (or
    removing) the centre leaves X's topology unchanged (module docstring)."""
    nb = np.asarray(neighbourhoods, dtype=bool).reshape(-1, 27).copy()
    nb[:, _CENTRE] = False
    f = nb.astype(np.float32)
    chi = (
        ((f @ _V_CELLS.T) > 0).sum(axis=1)
        - ((f @ _E_CELLS.T) > 0).sum(axis=1)
        + ((f @ _F_CELLS.T) > 0).sum(axis=1)
    )
    out = chi == 1
    rows = np.flatnonzero(out)
    if rows.size:
        sub = nb[rows][:, _NB]
        reach = np.zeros_like(sub)
        reach[np.arange(len(rows)), sub.argmax(axis=1)] = True
        reach &= sub
        for _ in range(26):
            grown = sub & (reach | ((reach.astype(np.float32) @ _ADJ26) > 0))
            if np.array_equal(grown, reach):
                break
            reach = grown
        out[rows] = (reach == sub).all(axis=1)
    return out


def grow_topological(
    allowed: np.ndarray, start: np.ndarray, priority: np.ndarray, step: float = 0.5
) -> np.ndarray:
    """Grow ``start`` (a topological ball, (26, 6)) inside ``allowed`` by simple points only,
    highest ``priority`` first (in levels ``step`` apart): the largest ball-like subset of
    ``allowed`` this order reaches. All arrays (X, Y, Z); ``start`` must lie inside ``allowed``."""
    a = np.pad(np.asarray(allowed, dtype=bool), 1)
    x = np.pad(np.asarray(start, dtype=bool), 1).ravel()
    shape = a.shape
    af = a.ravel()
    lev = np.floor(np.pad(np.asarray(priority, dtype=np.float64), 1).ravel() / step).astype(
        np.int64
    )
    strides = np.array([shape[1] * shape[2], shape[2], 1])
    off = _OFFSETS @ strides
    off_nb = off[_NB]

    def subfield(idx: np.ndarray) -> np.ndarray:
        i, r = np.divmod(idx, strides[0])
        j, k = np.divmod(r, strides[1])
        return (i % 3) * 9 + (j % 3) * 3 + (k % 3)

    front = ndi.binary_dilation(x.reshape(shape), structure=np.ones((3, 3, 3), bool)).ravel()
    pending = np.flatnonzero(front & af & ~x)
    in_pending = np.zeros(af.size, dtype=bool)
    in_pending[pending] = True
    dirty = np.zeros(af.size, dtype=bool)  # a neighbour changed since the last test
    dirty[pending] = True
    if not af.any():
        return x.reshape(shape)[1:-1, 1:-1, 1:-1]
    top = int(lev[af].max())
    bottom = int(lev[af].min())
    for level in range(top, bottom - 1, -1):
        while True:
            act = pending[dirty[pending] & (lev[pending] >= level)]
            if act.size == 0:
                break
            dirty[act] = False
            sf = subfield(act)
            order = np.argsort(sf, kind="stable")
            act, sf = act[order], sf[order]
            bounds = np.searchsorted(sf, np.arange(28))
            for s in range(27):
                cand = act[bounds[s] : bounds[s + 1]]
                if cand.size == 0:
                    continue
                ok = simple_points(x[cand[:, None] + off[None, :]])
                new = cand[ok]
                if new.size == 0:
                    continue
                x[new] = True
                nbrs = np.unique((new[:, None] + off_nb[None, :]).ravel())
                dirty[nbrs] = True
                fresh = nbrs[af[nbrs] & ~x[nbrs] & ~in_pending[nbrs]]
                in_pending[fresh] = True
                pending = np.concatenate([pending, fresh])
            pending = pending[~x[pending]]
    return x.reshape(shape)[1:-1, 1:-1, 1:-1]


@dataclass
class RepairInfo:
    """What ``repair_topology`` did to a mask (voxel counts)."""

    voxels_in: int
    dropped_components_voxels: int  # outside the largest 26-connected component
    filled_holes_voxels: int
    closing_voxels: int
    genus_before: int  # digital (26, 6) genus after largest component + hole filling
    genus_after: int
    removed_voxels: int  # left out by the topology-preserving growth (cut handles)


def repair_topology(
    mask: np.ndarray,
    start: np.ndarray | None = None,
    closing: int = 0,
    step: float = 0.5,
    spacing: np.ndarray | tuple[float, ...] | None = None,
) -> tuple[np.ndarray, RepairInfo]:
    """A genus-0, single-component, cavity-free version of ``mask`` (module docstring, step 2).

    ``start``: a repaired (ball-like) mask inside ``mask`` to grow from (the white mask when
    repairing the pial one; it is added to ``mask``); default the deepest voxel. ``closing``: a
    morphological closing of that many voxels first (fills narrow gaps, which removes some handles
    but also bridges narrow sulci; off by default). ``spacing``: voxel size for the depth map.
    """
    m = np.asarray(mask, dtype=bool)
    n_in = int(m.sum())
    if start is not None:
        m = m | start
    if not m.any():
        raise InputError(None, "empty mask: nothing to extract a surface from")
    closed = 0
    if closing > 0:
        ball = ndi.generate_binary_structure(3, 1)
        c = ndi.binary_closing(np.pad(m, closing + 1), structure=ball, iterations=closing)
        c = c[(slice(closing + 1, -closing - 1),) * 3]
        closed = int((c & ~m).sum())
        m = c
    big = an.largest_component(m)
    dropped = int(m.sum() - big.sum())
    if start is not None and not big[start].all():
        big |= start  # cannot happen when start is connected and inside mask
    filled = ndi.binary_fill_holes(big)
    n_fill = int(filled.sum() - big.sum())
    g0 = digital_genus(filled)
    info = RepairInfo(n_in, dropped, n_fill, closed, g0, g0, 0)
    if g0 == 0:
        return filled, info
    depth = ndi.distance_transform_edt(filled, sampling=spacing)
    if spacing is not None:
        depth = depth / float(np.min(spacing))  # levels in voxels
    if start is None:
        seed = np.zeros_like(filled)
        seed[np.unravel_index(int(np.argmax(depth)), depth.shape)] = True
    else:
        seed = np.asarray(start, dtype=bool)
    grown = grow_topological(filled, seed, depth, step=step)
    info.removed_voxels = int(filled.sum() - grown.sum())
    info.genus_after = digital_genus(grown)
    return grown, info


# --- meshes ------------------------------------------------------------------------------------


def _edges(faces: np.ndarray) -> np.ndarray:
    return np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])


def mesh_components(faces: np.ndarray, n_vertices: int) -> tuple[int, np.ndarray]:
    """Connected components of the mesh's edge graph: (count, label per vertex). Unreferenced
    vertices count as components of their own."""
    e = _edges(np.asarray(faces))
    g = sparse.coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n_vertices, n_vertices))
    n, labels = connected_components(g, directed=False)
    return int(n), labels


def euler_characteristic(faces: np.ndarray, n_vertices: int) -> int:
    """V - E + F of the mesh (V: referenced vertices, E: distinct undirected edges)."""
    f = np.asarray(faces)
    e = np.sort(_edges(f), axis=1)
    n_e = len(np.unique(e[:, 0] * np.int64(n_vertices) + e[:, 1]))
    n_v = len(np.unique(f))
    return int(n_v - n_e + len(f))


def genus(faces: np.ndarray, n_vertices: int) -> int:
    """Total genus of a closed orientable mesh: ``(2 C - (V - E + F)) / 2`` over its C connected
    components (0 for spheres, 1 per handle). Meaningless for open meshes (see ``is_closed``)."""
    f = np.asarray(faces)
    used = np.unique(f)
    remap = np.full(n_vertices, -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    ff = remap[f]
    c, _ = mesh_components(ff, len(used))
    return (2 * c - euler_characteristic(ff, len(used))) // 2


def is_closed(faces: np.ndarray) -> tuple[bool, bool]:
    """(watertight, consistently oriented): every undirected edge bounds exactly two faces, and
    every directed edge occurs once (neighbouring faces traverse their shared edge oppositely)."""
    d = _edges(np.asarray(faces, dtype=np.int64))
    n = int(d.max()) + 1
    undirected = np.unique(np.sort(d, axis=1) @ np.array([n, 1]), return_counts=True)[1]
    directed = np.unique(d @ np.array([n, 1]), return_counts=True)[1]
    watertight = bool((undirected == 2).all())
    return watertight, bool(watertight and (directed == 1).all())


def _compact(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    used = np.unique(faces)
    remap = np.full(len(vertices), -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    return vertices[used], remap[faces]


def largest_mesh_component(surface: Surface) -> tuple[Surface, int]:
    """The connected piece with the most faces, and how many pieces were dropped."""
    n, lbl = mesh_components(surface.faces, surface.n_vertices)
    if n <= 1:
        return surface, 0
    face_lbl = lbl[surface.faces[:, 0]]
    sizes = np.bincount(face_lbl, minlength=n)
    best = int(np.argmax(sizes))
    v, f = _compact(surface.vertices, surface.faces[face_lbl == best])
    return Surface(v, f, dict(surface.meta)), int((sizes > 0).sum() - 1)


def marching_cubes_surface(
    mask: np.ndarray, affine: np.ndarray, subdivide: int = 0, level: float = MC_LEVEL
) -> Surface:
    """Closed, outward-oriented surface of a binary mask (X, Y, Z) in world mm (module docstring,
    step 3): marching cubes at ``level`` on the cropped, zero-padded mask, vertices moved to the
    midpoints of their grid edges, then ``subdivide`` rounds of 1-to-4 midpoint subdivision."""
    from skimage.measure import marching_cubes

    m = np.asarray(mask, dtype=bool)
    if not m.any():
        raise InputError(None, "empty mask: nothing to extract a surface from")
    lo, hi = _bbox(m, margin=0)
    crop = np.pad(m[tuple(slice(a, b) for a, b in zip(lo, hi))], 1).astype(np.float32)
    verts, faces, _, _ = marching_cubes(crop, level=level, allow_degenerate=True)
    vox = verts.astype(np.float64)
    # a vertex on a grid edge has one non-integer coordinate: put it halfway along the edge
    # (vertices the case tables put inside a cell, if any, have three and stay)
    frac = vox - np.floor(vox)
    off_grid = np.minimum(frac, 1 - frac) > 1e-6
    on_edge = off_grid.sum(axis=1) == 1
    snap = off_grid & on_edge[:, None]
    vox[snap] = np.floor(vox[snap]) + 0.5
    vox += lo - 1.0
    aff = np.asarray(affine, dtype=np.float64)
    v, f = _compact(vox @ aff[:3, :3].T + aff[:3, 3], faces.astype(np.int64))
    for _ in range(subdivide):
        v, f = subdivide_mesh(v, f)
    if signed_volume(Surface(v, f)) < 0:
        f = f[:, ::-1].copy()
    return Surface(v, f)


def subdivide_mesh(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """1-to-4 midpoint subdivision: a new vertex in the middle of each edge, each triangle split in
    four (same shape, same topology, orientation kept)."""
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    e = np.sort(_edges(f), axis=1)
    uniq, inv = np.unique(e[:, 0] * np.int64(len(v)) + e[:, 1], return_inverse=True)
    a, b = np.divmod(uniq, np.int64(len(v)))
    mid = len(v) + inv.reshape(3, -1).T  # (M, 3): midpoints of edges 01, 12, 20
    new_v = np.concatenate([v, 0.5 * (v[a] + v[b])])
    m01, m12, m20 = mid[:, 0], mid[:, 1], mid[:, 2]
    new_f = np.concatenate(
        [
            np.stack([f[:, 0], m01, m20], 1),
            np.stack([m01, f[:, 1], m12], 1),
            np.stack([m20, m12, f[:, 2]], 1),
            np.stack([m01, m12, m20], 1),
        ]
    )
    return new_v, new_f


def taubin_smooth(
    vertices: np.ndarray,
    faces: np.ndarray,
    iterations: int = 10,
    lam: float = 0.5,
    mu: float = -0.53,
) -> np.ndarray:
    """Taubin lambda/mu smoothing (Taubin 1995): per iteration ``x += lam (A x - x)`` then
    ``x += mu (A x - x)`` with ``A`` the neighbour average; ``mu < -lam`` undoes the shrinkage of
    the first step at low frequencies. Returns new vertices (N, 3)."""
    if not mu < -lam < 0:
        raise ValueError(f"Taubin smoothing needs mu < -lam < 0, got lam={lam}, mu={mu}")
    x = np.asarray(vertices, dtype=np.float64).copy()
    a = adjacency(np.asarray(faces), len(x))
    for _ in range(iterations):
        x += lam * (a @ x - x)
        x += mu * (a @ x - x)
    return x


# --- inside test and crossing ------------------------------------------------------------------

_SHEAR = (0.0137, 0.0241)  # a generic ray direction (module docstring)


def winding_numbers(points: np.ndarray, surface: Surface, chunk: int = 20_000) -> np.ndarray:
    """Winding number (int, (N,)) of ``surface`` (closed, outward-oriented) around each point
    (N, 3): 1 inside, 0 outside (module docstring)."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    v, f = surface.vertices, surface.faces
    sx, sy = _SHEAR
    vx, vy, vz = v[:, 0] + sx * v[:, 2], v[:, 1] + sy * v[:, 2], v[:, 2]
    px, py, pz = p[:, 0] + sx * p[:, 2], p[:, 1] + sy * p[:, 2], p[:, 2]
    tx, ty = vx[f], vy[f]
    area2 = (tx[:, 1] - tx[:, 0]) * (ty[:, 2] - ty[:, 0]) - (ty[:, 1] - ty[:, 0]) * (
        tx[:, 2] - tx[:, 0]
    )
    keep = area2 != 0
    f, tx, ty, area2 = f[keep], tx[keep], ty[keep], area2[keep]
    out = np.zeros(len(p), dtype=np.int64)
    if len(f) == 0 or len(p) == 0:
        return out
    # bucket triangles by the cells of a 2D grid their xy bounding boxes cover
    span = np.concatenate([tx.max(1) - tx.min(1), ty.max(1) - ty.min(1)])
    h = max(float(np.median(span)), 1e-6)
    x0, y0 = float(tx.min()), float(ty.min())
    ix0 = np.floor((tx.min(1) - x0) / h).astype(np.int64)
    ix1 = np.floor((tx.max(1) - x0) / h).astype(np.int64)
    iy0 = np.floor((ty.min(1) - y0) / h).astype(np.int64)
    iy1 = np.floor((ty.max(1) - y0) / h).astype(np.int64)
    nx, ny = int(ix1.max()) + 1, int(iy1.max()) + 1
    pcx = np.floor((px - x0) / h).astype(np.int64)
    pcy = np.floor((py - y0) / h).astype(np.int64)
    valid = (pcx >= 0) & (pcy >= 0) & (pcx < nx) & (pcy < ny)
    pkey = np.where(valid, pcx * ny + pcy, -1)
    # only the triangles whose box holds a query point (a summed-area table of occupied cells):
    # a local recheck of a few points then costs little
    occ = np.zeros((nx + 1, ny + 1), dtype=np.int64)
    np.add.at(occ, (pcx[valid] + 1, pcy[valid] + 1), 1)
    occ = occ.cumsum(0).cumsum(1)
    hits = occ[ix1 + 1, iy1 + 1] - occ[ix0, iy1 + 1] - occ[ix1 + 1, iy0] + occ[ix0, iy0]
    rel = np.flatnonzero(hits > 0)
    f, tx, ty, area2 = f[rel], tx[rel], ty[rel], area2[rel]
    ix0, ix1, iy0, iy1 = ix0[rel], ix1[rel], iy0[rel], iy1[rel]
    nx_t, ny_t = ix1 - ix0 + 1, iy1 - iy0 + 1
    n_cells = nx_t * ny_t
    tri = np.repeat(np.arange(len(f)), n_cells)
    local = np.arange(len(tri)) - np.repeat(np.cumsum(n_cells) - n_cells, n_cells)
    cx = ix0[tri] + local // ny_t[tri]
    cy = iy0[tri] + local % ny_t[tri]
    key = cx * ny + cy
    order = np.argsort(key, kind="stable")
    key, tri = key[order], tri[order]
    zf = vz[f]
    for start in range(0, len(p), chunk):
        sl = slice(start, start + chunk)
        lo = np.searchsorted(key, pkey[sl], side="left")
        hi = np.searchsorted(key, pkey[sl], side="right")
        cnt = np.where(pkey[sl] >= 0, hi - lo, 0)
        if cnt.sum() == 0:
            continue
        q = np.repeat(np.arange(start, start + len(cnt)), cnt)
        t = tri[np.repeat(lo, cnt) + np.arange(cnt.sum()) - np.repeat(np.cumsum(cnt) - cnt, cnt)]
        qx, qy = px[q], py[q]
        ax, ay = tx[t, 0], ty[t, 0]
        bx, by = tx[t, 1], ty[t, 1]
        cx_, cy_ = tx[t, 2], ty[t, 2]
        w_c = (bx - ax) * (qy - ay) - (by - ay) * (qx - ax)  # opposite c: weight of c
        w_a = (cx_ - bx) * (qy - by) - (cy_ - by) * (qx - bx)
        w_b = (ax - cx_) * (qy - cy_) - (ay - cy_) * (qx - cx_)
        s = np.sign(area2[t])
        inside = (s * w_a > 0) & (s * w_b > 0) & (s * w_c > 0)
        zhit = (w_a * zf[t, 0] + w_b * zf[t, 1] + w_c * zf[t, 2]) / area2[t]
        hit = inside & (zhit > pz[q])
        np.add.at(out, q[hit], s[hit].astype(np.int64))
    return out


def inside(points: np.ndarray, surface: Surface) -> np.ndarray:
    """Boolean (N,): the points inside the closed surface (winding number > 0)."""
    return winding_numbers(points, surface) > 0


def crossing_fraction(inner: Surface, outer: Surface) -> float:
    """Fraction of ``outer``'s vertices strictly inside ``inner`` (0 for nested surfaces; e.g. pial
    vertices inside the white surface). Checked at vertices only."""
    return float(inside(outer.vertices, inner).mean())


def _longest_edge(surface: Surface) -> float:
    v, f = surface.vertices, surface.faces
    d = [v[f[:, k]] - v[f[:, (k + 1) % 3]] for k in range(3)]
    return float(np.sqrt(max(np.einsum("ij,ij->i", x, x).max() for x in d)))


def _wrong_side(
    points: np.ndarray, other: Surface, want_inside: bool, eps: float, tree: cKDTree
) -> np.ndarray:
    """Boolean: the points on the wrong side of the closed surface ``other`` (outside it when
    ``want_inside``, else inside it) or within ``eps`` of it."""
    ins = inside(points, other)
    bad = ~ins if want_inside else ins
    if eps > 0 and len(points):
        d_v, _ = tree.query(points)
        # the surface is at least (distance to its nearest vertex - longest edge) away
        near = np.flatnonzero(~bad & (d_v < eps + _longest_edge(other) / np.sqrt(3.0)))
        if near.size:
            bad[near[distances_to_mesh(points[near], other) < eps]] = True
    return bad


def _relax(x: np.ndarray, a: sparse.csr_matrix, moved: np.ndarray) -> np.ndarray:
    """Two Laplacian steps on the moved vertices and their neighbours (spreads a push over its
    1-ring instead of leaving a spike); returns the band of vertices that moved."""
    band = moved | ((a @ moved.astype(np.float64)) > 0)
    for _ in range(2):
        x[band] += 0.5 * ((a @ x)[band] - x[band])
    return band


def _push(
    x: np.ndarray,
    bad: np.ndarray,
    target: Surface,
    tree: cKDTree,
    offset: np.ndarray,
) -> None:
    """Move the ``bad`` vertices to their nearest ``target`` vertex + ``offset`` x its outward
    normal (a negative offset goes inward)."""
    _, j = tree.query(x[bad])
    x[bad] = target.vertices[j] + offset[:, None] * vertex_normals(target.vertices, target.faces)[j]


def _near(points: np.ndarray, targets: list[np.ndarray], radius: float) -> list[np.ndarray]:
    """For each array of ``targets``: boolean, within ``radius`` of one of ``points``."""
    if len(points) == 0:
        return [np.zeros(len(t), dtype=bool) for t in targets]
    tree = cKDTree(points)
    return [np.isfinite(tree.query(t, distance_upper_bound=radius)[0]) for t in targets]


def separate_surfaces(
    white: Surface,
    pial: Surface,
    eps_mm: float = 0.1,
    rounds: int = 6,
    check_white: np.ndarray | None = None,
    check_pial: np.ndarray | None = None,
    full_check: bool = True,
) -> tuple[Surface, Surface, dict]:
    """Move vertices so that every pial vertex is outside the white surface and every white vertex
    inside the pial one, by at least ``eps_mm`` (module docstring, step 5).

    Each round checks the vertices that may have changed side (all at first, then those near a
    vertex moved in the round before), pulls the white vertices outside (or within ``eps_mm`` of)
    the pial surface in to ``2 eps_mm`` inside the nearest pial vertex (doubling that offset for a
    vertex that needs a second pull), then pushes the pial vertices inside the white surface out
    likewise, and relaxes the moved vertices with their neighbours (not in the last round). White
    goes first so that where the two masks coincide (the medial wall, cortex missing from the
    labels) the white surface moves in and the pial surface stays on the mask's boundary, as
    FreeSurfer's pial and white coincide on the medial wall: the two hemispheres' pial surfaces
    then meet at the midline without overlapping. Returns the new (white, pial)
    and ``pial_moved``, ``white_moved`` (vertices moved), ``pial_inside_white``,
    ``white_outside_pial`` (fractions of vertices on the wrong side after the fix, full check) and
    ``rounds``. ``check_white``/``check_pial`` (boolean per vertex): check only those in the first
    round (after a local change); default all. ``full_check=False`` skips the final check (the
    two fractions are then NaN)."""
    wv, pv = white.vertices.copy(), pial.vertices.copy()
    wf, pf = white.faces, pial.faces
    aw, ap = adjacency(wf, len(wv)), adjacency(pf, len(pv))
    p_push = np.zeros(len(pv), dtype=np.int64)  # times pushed, for the escalating offset
    w_push = np.zeros(len(wv), dtype=np.int64)
    p_moved = np.zeros(len(pv), dtype=bool)
    w_moved = np.zeros(len(wv), dtype=bool)
    check_p = np.ones(len(pv), dtype=bool) if check_pial is None else check_pial.copy()
    check_w = np.ones(len(wv), dtype=bool) if check_white is None else check_white.copy()
    reach = max(_longest_edge(white), _longest_edge(pial))
    done = 0
    for r in range(rounds):
        last = r == rounds - 1
        p_old, w_old = pv.copy(), wv.copy()
        p_surf = Surface(pv, pf)
        idx = np.flatnonzero(check_w)
        bad_w = np.zeros(len(wv), dtype=bool)
        bad_w[idx] = _wrong_side(wv[idx], p_surf, True, eps_mm, cKDTree(pv))
        if bad_w.any():
            off = -2.0 * eps_mm * 2.0 ** np.minimum(w_push[bad_w], 6)
            _push(wv, bad_w, p_surf, cKDTree(pv), off)
            w_push[bad_w] += 1
            if not last:
                _relax(wv, aw, bad_w)
        w_surf = Surface(wv, wf)
        idx = np.flatnonzero(check_p)
        bad_p = np.zeros(len(pv), dtype=bool)
        bad_p[idx] = _wrong_side(pv[idx], w_surf, False, eps_mm, cKDTree(wv))
        if bad_p.any():
            off = 2.0 * eps_mm * 2.0 ** np.minimum(p_push[bad_p], 6)
            _push(pv, bad_p, w_surf, cKDTree(wv), off)
            p_push[bad_p] += 1
            if not last:
                _relax(pv, ap, bad_p)
        done = r + 1
        ch_p = np.any(pv != p_old, axis=1)
        ch_w = np.any(wv != w_old, axis=1)
        p_moved |= ch_p
        w_moved |= ch_w
        if not ch_p.any() and not ch_w.any():
            break
        # a vertex can only change side where a moved vertex's triangles swept past it
        pts = np.concatenate([pv[ch_p], p_old[ch_p], wv[ch_w], w_old[ch_w]])
        shift = max(
            float(np.linalg.norm(pv - p_old, axis=1).max()),
            float(np.linalg.norm(wv - w_old, axis=1).max()),
        )
        check_p, check_w = _near(pts, [pv, wv], 2 * reach + shift + 2 * eps_mm)
    new_w, new_p = Surface(wv, wf, dict(white.meta)), Surface(pv, pf, dict(pial.meta))
    stats = {
        "pial_moved": int(p_moved.sum()),
        "white_moved": int(w_moved.sum()),
        "pial_inside_white": crossing_fraction(new_w, new_p) if full_check else float("nan"),
        "white_outside_pial": float((~inside(wv, new_p)).mean()) if full_check else float("nan"),
        "rounds": done,
    }
    return new_w, new_p, stats


def separate_hemispheres(
    lh: Surface,
    rh: Surface,
    eps_mm: float = 0.1,
    rounds: int = 3,
    check_lh: np.ndarray | None = None,
    check_rh: np.ndarray | None = None,
    full_check: bool = True,
) -> tuple[Surface, Surface, dict]:
    """Move the vertices of the left pial surface that lie inside the right one (or within
    ``eps_mm`` of it) out to ``2 eps_mm`` beyond the nearest right vertex, then the right ones
    against the moved left surface, for a few rounds (checking, relaxing and escalating as
    ``separate_surfaces`` does). Smoothing can push the medial faces of two hemispheres that touch
    in the label map a little across each other (Taubin's inflation step). Returns the new
    (lh, rh) and ``lh_moved``, ``rh_moved`` (boolean per vertex), ``lh_inside_rh``,
    ``rh_inside_lh`` (fractions after, full check). ``check_lh``, ``check_rh``, ``full_check``: as
    in ``separate_surfaces``."""
    verts = {"lh": lh.vertices.copy(), "rh": rh.vertices.copy()}
    faces = {"lh": lh.faces, "rh": rh.faces}
    adj = {h: adjacency(faces[h], len(verts[h])) for h in verts}
    pushes = {h: np.zeros(len(verts[h]), dtype=np.int64) for h in verts}
    moved = {h: np.zeros(len(verts[h]), dtype=bool) for h in verts}
    given = {"lh": check_lh, "rh": check_rh}
    check = {
        h: np.ones(len(verts[h]), dtype=bool) if c is None else c.copy() for h, c in given.items()
    }
    reach = max(_longest_edge(lh), _longest_edge(rh))
    for r in range(rounds):
        old = {h: verts[h].copy() for h in verts}
        for h, o in (("lh", "rh"), ("rh", "lh")):
            other = Surface(verts[o], faces[o])
            tree = cKDTree(verts[o])
            idx = np.flatnonzero(check[h])
            bad = np.zeros(len(verts[h]), dtype=bool)
            bad[idx] = _wrong_side(verts[h][idx], other, False, eps_mm, tree)
            if bad.any():
                off = 2.0 * eps_mm * 2.0 ** np.minimum(pushes[h][bad], 6)
                _push(verts[h], bad, other, tree, off)
                pushes[h][bad] += 1
                if r < rounds - 1:
                    _relax(verts[h], adj[h], bad)
        changed = {h: np.any(verts[h] != old[h], axis=1) for h in verts}
        for h in verts:
            moved[h] |= changed[h]
        if not any(c.any() for c in changed.values()):
            break
        pts = np.concatenate([a[changed[h]] for h in verts for a in (verts[h], old[h])])
        shift = max(float(np.linalg.norm(verts[h] - old[h], axis=1).max()) for h in verts)
        check["lh"], check["rh"] = _near(
            pts, [verts["lh"], verts["rh"]], 2 * reach + shift + 2 * eps_mm
        )
    new_l = Surface(verts["lh"], faces["lh"], dict(lh.meta))
    new_r = Surface(verts["rh"], faces["rh"], dict(rh.meta))
    stats = {
        "lh_moved": moved["lh"],
        "rh_moved": moved["rh"],
        "lh_inside_rh": crossing_fraction(new_r, new_l) if full_check else float("nan"),
        "rh_inside_lh": crossing_fraction(new_l, new_r) if full_check else float("nan"),
    }
    return new_l, new_r, stats


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
    sp = _spacing(affine)
    surfaces: dict[tuple[str, str], Surface] = {}
    infos: dict[tuple[str, str], tuple[RepairInfo, int]] = {}
    moved: dict[tuple[str, str], np.ndarray] = {}
    seconds: dict[str, float] = {}
    for h in hemis:
        t_h = time.perf_counter()
        mw, mp = masks[h]["white"], masks[h]["pial"]
        if not mw.any():
            raise InputError(None, f"{h}: no cerebral white matter label in the label map")
        if not (mp & ~mw).any():
            raise InputError(None, f"{h}: no cortex label in the label map")
        lo, hi = _bbox(mp, margin=2)
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
        seconds[h] = time.perf_counter() - t_h
    if len(hemis) == 2:
        t_x = time.perf_counter()
        # pushing a pial surface away from the other hemisphere can bring it inside its own white
        # surface, and the fix of that can push it back: alternate a few times, locally
        check: dict[str, np.ndarray | None] = {"lh": None, "rh": None}
        for _ in range(3):
            before: dict[str, np.ndarray] = {h: surfaces[h, "pial"].vertices for h in HEMIS}
            lh, rh, _ = separate_hemispheres(
                surfaces["lh", "pial"],
                surfaces["rh", "pial"],
                eps_mm,
                check_lh=check["lh"],
                check_rh=check["rh"],
                full_check=False,
            )
            if not any(np.any(p.vertices != before[h]) for h, p in (("lh", lh), ("rh", rh))):
                break
            for h, p_new in (("lh", lh), ("rh", rh)):
                changed = np.any(p_new.vertices != before[h], axis=1)
                surfaces[h, "pial"] = p_new
                moved[h, "pial"] |= changed
                if not changed.any():
                    continue
                # recheck white/pial where the pial surface moved
                white = surfaces[h, "white"]
                shift = float(np.linalg.norm(p_new.vertices - before[h], axis=1).max())
                radius = 2 * max(_longest_edge(white), _longest_edge(p_new)) + shift + 2 * eps_mm
                pts = np.concatenate([p_new.vertices[changed], before[h][changed]])
                (near_w,) = _near(pts, [white.vertices], radius)
                w2, p2, _ = separate_surfaces(
                    white,
                    p_new,
                    eps_mm=eps_mm,
                    check_white=near_w,
                    check_pial=changed,
                    full_check=False,
                )
                moved[h, "white"] |= np.any(w2.vertices != white.vertices, axis=1)
                moved[h, "pial"] |= np.any(p2.vertices != p_new.vertices, axis=1)
                surfaces[h, "white"], surfaces[h, "pial"] = w2, p2
            # next pass: the pial vertices near those the white/pial fix moved
            pts = np.concatenate(
                [
                    a[np.any(surfaces[h, "pial"].vertices != before[h], axis=1)]
                    for h in HEMIS
                    for a in (surfaces[h, "pial"].vertices, before[h])
                ]
            )
            radius = 2 * max(_longest_edge(surfaces[h, "pial"]) for h in HEMIS) + 4 * eps_mm
            radius += max(
                float(np.linalg.norm(surfaces[h, "pial"].vertices - before[h], axis=1).max())
                for h in HEMIS
            )
            near_l, near_r = _near(
                pts, [surfaces["lh", "pial"].vertices, surfaces["rh", "pial"].vertices], radius
            )
            check = {"lh": near_l, "rh": near_r}
        for h in HEMIS:
            seconds[h] += (time.perf_counter() - t_x) / 2
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
        seconds[h] += time.perf_counter() - t_r
        for kind in KINDS:
            reports[h, kind].seconds = seconds[h]
    return surfaces, reports


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
