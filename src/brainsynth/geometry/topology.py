"""Topology control of binary masks: the digital genus, simple points ((26, 6) adjacency) and
topology-preserving growth, which turns a mask into a topological ball by cutting its handles where
they are thinnest (``repair_topology``). The derivation is in ``geometry.extract``'s notes, step 2."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from brainsynth.errors import InputError
from brainsynth.evaluation import anatomy as an

# --- small helpers -----------------------------------------------------------------------------


def mask_bbox(mask: np.ndarray, margin: int) -> tuple[np.ndarray, np.ndarray]:
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
