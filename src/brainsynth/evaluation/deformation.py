"""Deformation metrics: Jacobian determinant of a displacement field and its statistics.

The map is ``phi(x) = x + u(x)``; its Jacobian is ``J = I + grad u`` and ``det J`` the local volume
change (1: none, < 1: shrinkage, <= 0: folding, the map is not locally invertible there).
Derivatives are central differences (``numpy.gradient``: second-order inside, first-order one-sided
at the border voxels).

Units: ``u`` and ``spacing`` must be in the same unit. A field in voxels takes ``spacing=1`` (the
default); a field in mm takes the voxel size in mm (``Volume.spacing``). Mixing them scales
``grad u`` by the voxel size and gives wrong determinants.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _channels_first(u: np.ndarray, channel_axis: int | None) -> np.ndarray:
    u = np.asarray(u, dtype=np.float64)
    if channel_axis is None:
        nd = u.ndim - 1
        if u.shape[0] == nd:
            channel_axis = 0
        elif u.shape[-1] == nd:
            channel_axis = -1
        else:
            raise ValueError(
                f"displacement field of shape {u.shape}: expected (D, *spatial) or (*spatial, D) "
                "with D = number of spatial dimensions"
            )
    u = np.moveaxis(u, channel_axis, 0)
    if u.shape[0] != u.ndim - 1 or u.shape[0] not in (2, 3):
        raise ValueError(f"displacement field of shape {u.shape} is not a 2D/3D vector field")
    return u


def jacobian_determinant(
    displacement: np.ndarray,
    spacing: float | Sequence[float] = 1.0,
    channel_axis: int | None = None,
) -> np.ndarray:
    """``det(I + grad u)`` per voxel.

    ``displacement``: ``(3, X, Y, Z)`` or ``(X, Y, Z, 3)`` (2D: ``(2, X, Y)`` / ``(X, Y, 2)``);
    component ``i`` displaces along array axis ``i``. ``channel_axis`` overrides the detection
    (needed for a 3-voxel-wide field). ``spacing``: voxel size, in the unit of ``u``.
    """
    u = _channels_first(displacement, channel_axis)
    nd = u.shape[0]
    sp = np.broadcast_to(np.asarray(spacing, dtype=np.float64), (nd,))
    if np.any(sp <= 0):
        raise ValueError(f"spacing must be > 0, got {tuple(sp)}")
    # grads[i, j] = d u_i / d x_j
    grads = np.stack([np.stack(np.gradient(u[i], *sp), axis=0) for i in range(nd)])
    jac = grads + np.eye(nd).reshape(nd, nd, *([1] * nd))
    return np.linalg.det(np.moveaxis(jac, (0, 1), (-2, -1)))


def jacobian_stats(
    det: np.ndarray,
    mask: np.ndarray | None = None,
    percentiles: Sequence[float] = (1, 5, 25, 50, 75, 95, 99),
) -> dict:
    """Statistics of ``det J`` (inside ``mask`` if given): mean, std, min, max, percentiles,
    folding (``det <= 0``) as a voxel count and a percentage, and the std of ``log det`` over the
    non-folding voxels (a common smoothness summary)."""
    d = np.asarray(det, dtype=np.float64)
    if mask is not None:
        d = d[np.asarray(mask, dtype=bool)]
    d = d.ravel()
    if d.size == 0:
        raise ValueError("no voxels to summarise (empty mask)")
    folding = d <= 0
    pos = d[~folding]
    return {
        "mean": float(d.mean()),
        "std": float(d.std()),
        "min": float(d.min()),
        "max": float(d.max()),
        "percentiles": {f"p{p:g}": float(np.percentile(d, p)) for p in percentiles},
        "folding_voxels": int(folding.sum()),
        "folding_percent": float(100.0 * folding.mean()),
        "std_log_det": float(np.log(pos).std()) if pos.size else None,
        "n_voxels": int(d.size),
        "definition": "det(I + grad u), central differences (numpy.gradient); folding: det <= 0",
    }


def deformation_metrics(
    displacement: np.ndarray,
    spacing: float | Sequence[float] = 1.0,
    mask: np.ndarray | None = None,
    channel_axis: int | None = None,
) -> dict:
    """``jacobian_stats(jacobian_determinant(u, spacing), mask)`` plus displacement magnitudes."""
    u = _channels_first(displacement, channel_axis)
    out = jacobian_stats(jacobian_determinant(u, spacing, channel_axis=0), mask)
    mag = np.sqrt((u**2).sum(0))
    if mask is not None:
        mag = mag[np.asarray(mask, dtype=bool)]
    out["displacement"] = {
        "mean": float(mag.mean()),
        "max": float(mag.max()),
        "p95": float(np.percentile(mag, 95)),
    }
    return out
