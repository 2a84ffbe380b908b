"""What a user would otherwise run, on the same grids as the method (so the comparison is about
the prior, not the resampling): interpolation along the slice axis (trilinear = linear there,
since the measurement grid is already the prior's grid in-plane; cubic B-spline), N4 bias
correction (SimpleITK, Tustison et al. 2010) and biharmonic inpainting (scikit-image)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from brainsynth.methods.restore.geometry import Geometry


def upsample(y: np.ndarray, geo: Geometry, order: int) -> np.ndarray:
    """The measurement y (on G) interpolated onto the prior's grid P along the slice axis: order
    1 (linear: with G = P in-plane this is trilinear interpolation of the scan) or 3 (cubic
    B-spline, prefiltered). Beyond the first and last slice centres the edge values are held."""
    if geo.axis is None:
        return np.asarray(y, np.float32)
    a = geo.axis
    rel = np.linalg.solve(geo.grid_affine, geo.prior_affine)  # P voxel -> G voxel
    idx = np.arange(geo.prior_shape[a], dtype=np.float64)
    along = rel[a, a] * idx + rel[a, 3]
    coords = list(
        np.meshgrid(*[np.arange(n, dtype=np.float64) for n in geo.prior_shape], indexing="ij")
    )
    shape = [1, 1, 1]
    shape[a] = -1
    coords[a] = np.broadcast_to(along.reshape(shape), geo.prior_shape)
    out = ndimage.map_coordinates(
        np.asarray(y, np.float64), coords, order=order, mode="nearest", prefilter=order > 1
    )
    return out.astype(np.float32)


def n4(image: np.ndarray, mask: np.ndarray, spacing: float, iterations: int = 50) -> np.ndarray:
    """N4 bias correction (SimpleITK's defaults: 4 fitting levels, a B-spline field with 4
    control points per axis at the first level) of ``image`` inside ``mask``; returns the
    corrected image, rescaled to the input's mean inside the mask (N4 leaves the global scale
    free), unchanged outside the mask."""
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(np.asarray(image, np.float32).clip(0, None))
    msk = sitk.GetImageFromArray(np.asarray(mask, np.uint8))
    for im in (img, msk):
        im.SetSpacing((float(spacing),) * 3)
    f = sitk.N4BiasFieldCorrectionImageFilter()
    f.SetMaximumNumberOfIterations([iterations] * 4)
    out = sitk.GetArrayFromImage(f.Execute(img, msk)).astype(np.float64)
    inside = np.asarray(mask) > 0
    out *= float(np.mean(np.asarray(image, np.float64)[inside])) / float(out[inside].mean())
    return np.where(inside, out, image).astype(np.float32)


def biharmonic(image: np.ndarray, missing: np.ndarray) -> np.ndarray:
    """Biharmonic inpainting (scikit-image) of the voxels where ``missing``."""
    from skimage.restoration import inpaint_biharmonic

    m = np.asarray(missing, bool)
    if not m.any():
        return np.asarray(image, np.float32)
    return inpaint_biharmonic(np.asarray(image, np.float64), m).astype(np.float32)
