"""Classical deformable registration baseline: SimpleITK's diffeomorphic demons (Vercauteren et al.
2009; ``sitk.DiffeomorphicDemonsRegistrationFilter``, symmetric/ESM forces) on a Gaussian pyramid.

Steps (all deterministic: no random sampling):

1. the moving image's intensities are histogram-matched to the fixed image's
   (``sitk.HistogramMatching``: 1024 levels, 7 match points, threshold at the mean intensity so
   the background does not dominate);
2. per level (shrink factors 4, 2, 1 by default, each factor capped so a shrunken axis keeps at
   least 4 voxels) both images are Gaussian-smoothed (sigma = factor / 2 voxels) and shrunk
   (``sitk.Shrink``); demons runs a fixed number of iterations (50, 30, 20), starting from the
   previous level's field resampled linearly onto the level's grid (nearest-neighbour
   extrapolation at the border);
3. after each iteration the displacement field is smoothed with a Gaussian of ``smoothing``
   voxels (ITK's standard deviations are in voxels); the update field is not smoothed.

Grids: the images are handed to ITK with :func:`brainsynth.registration.affine._to_itk` on an identity
affine (unit voxels, RAS -> LPS flip: ITK's x/y axes point along -axis 0 / -axis 1); the field ITK
returns (physical, LPS) is mapped back to voxel units along the array axes.

The result follows :mod:`brainsynth.registration.fields`: ``u`` of shape (3, X, Y, Z) in voxels,
component ``i`` along array axis ``i``, sampling map ``phi(x) = x + u(x)``: ``warp(moving, u)``
approximates ``fixed``. ITK's demons field is a sampling map too (fixed point -> moving point).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from brainsynth.io import Volume
from brainsynth.registration.affine import _FLIP, _to_itk

DEMONS_DESCRIPTION = (
    "SimpleITK DiffeomorphicDemonsRegistrationFilter (symmetric forces), moving histogram-matched "
    "to fixed (1024 levels, 7 points), Gaussian pyramid shrink {shrink} (sigma = factor/2 voxels), "
    "iterations {iterations} per level, displacement field smoothed with sigma {smoothing} voxels "
    "after each iteration"
)


def register_demons(
    fixed: np.ndarray,
    moving: np.ndarray,
    *,
    iterations: Sequence[int] = (50, 30, 20),
    smoothing: float = 1.5,
    shrink_factors: Sequence[int] = (4, 2, 1),
) -> np.ndarray:
    """Displacement ``u`` (3, X, Y, Z), float32, voxel units, with ``warp(moving, u) ~ fixed``.

    ``fixed`` and ``moving``: 3D arrays on the same voxel grid (e.g. after affine alignment).
    ``iterations[k]`` demons iterations at pyramid level ``k`` (shrink ``shrink_factors[k]``,
    coarse to fine); ``smoothing``: standard deviation (voxels) of the Gaussian applied to the
    displacement field after each iteration (the demons regulariser). See the module notes.
    """
    import SimpleITK as sitk

    f_arr = np.asarray(fixed, dtype=np.float32)
    m_arr = np.asarray(moving, dtype=np.float32)
    if f_arr.ndim != 3 or f_arr.shape != m_arr.shape:
        raise ValueError(
            f"fixed and moving must be 3D arrays on the same grid, got {f_arr.shape} and "
            f"{m_arr.shape}"
        )
    if len(iterations) != len(shrink_factors) or not iterations:
        raise ValueError(
            f"one iteration count per pyramid level: iterations {tuple(iterations)}, "
            f"shrink_factors {tuple(shrink_factors)}"
        )
    if any(int(f) < 1 for f in shrink_factors) or any(int(n) < 0 for n in iterations):
        raise ValueError(
            f"shrink factors must be >= 1 and iterations >= 0, got {tuple(shrink_factors)}, "
            f"{tuple(iterations)}"
        )
    if smoothing <= 0:
        raise ValueError(f"smoothing must be > 0 voxels, got {smoothing}")
    if not (np.isfinite(f_arr).all() and np.isfinite(m_arr).all()):
        raise ValueError("fixed and moving must be finite")

    grid = np.eye(4)
    f_img = _to_itk(Volume(f_arr, grid))
    m_img = _to_itk(Volume(m_arr, grid))
    m_img = sitk.HistogramMatching(
        m_img,
        f_img,
        numberOfHistogramLevels=1024,
        numberOfMatchPoints=7,
        thresholdAtMeanIntensity=True,
    )

    field = None
    for factor, n_iter in zip(shrink_factors, iterations):
        f_lvl, m_lvl = _level(f_img, int(factor)), _level(m_img, int(factor))
        if field is None:
            init = sitk.Image(f_lvl.GetSize(), sitk.sitkVectorFloat64, 3)
            init.CopyInformation(f_lvl)
        else:
            init = _resample_field(field, f_lvl)
        if n_iter == 0:
            field = init
            continue
        demons = sitk.DiffeomorphicDemonsRegistrationFilter()
        demons.SetNumberOfIterations(int(n_iter))
        demons.SetSmoothDisplacementField(True)
        demons.SetStandardDeviations(float(smoothing))
        demons.SetSmoothUpdateField(False)
        field = demons.Execute(f_lvl, m_lvl, init)
    assert field is not None
    if field.GetSize() != f_img.GetSize():
        field = _resample_field(field, f_img)

    d = sitk.GetArrayFromImage(field).transpose(3, 2, 1, 0)  # (3, X, Y, Z), ITK (x, y, z) order
    lin = (_FLIP @ grid)[:3, :3]  # voxel steps -> ITK physical
    u = np.einsum("ij,j...->i...", np.linalg.inv(lin), d)
    return np.ascontiguousarray(u, dtype=np.float32)


def _level(img, factor: int):
    """Gaussian-smoothed (sigma = factor / 2 voxels) and shrunk copy; factor capped per axis so
    each axis keeps at least 4 voxels."""
    import SimpleITK as sitk

    factors = [max(1, min(factor, n // 4)) for n in img.GetSize()]
    if max(factors) == 1:
        return img
    sigmas = [0.5 * k * s for k, s in zip(factors, img.GetSpacing())]
    return sitk.Shrink(sitk.SmoothingRecursiveGaussian(img, sigmas), factors)


def _resample_field(field, reference):
    """A physical displacement field linearly resampled onto ``reference``'s grid."""
    import SimpleITK as sitk

    rs = sitk.ResampleImageFilter()
    rs.SetReferenceImage(reference)
    rs.SetInterpolator(sitk.sitkLinear)
    rs.SetOutputPixelType(sitk.sitkVectorFloat64)
    rs.SetUseNearestNeighborExtrapolator(True)
    return rs.Execute(field)
