"""Intensity-based affine registration (SimpleITK's ImageRegistrationMethod): Mattes mutual
information (every voxel sampled, so the result is deterministic), a centred affine transform initialised at the images' centres of mass, regular-step
gradient descent over a 3-level pyramid (shrink 4, 2, 1; smoothing 2, 1, 0 voxels).

World coordinates: brainsynth's volumes are RAS (nibabel), ITK's are LPS; the images are handed
to ITK in LPS and the result comes back in RAS as a 4 x 4 matrix M with
    moving(M p) ~ fixed(p)   for world points p (mm),
so the fixed image's grid, affine A, lies on the moving image at M A.
"""

from __future__ import annotations

import numpy as np

from brainsynth.io import Volume

_FLIP = np.diag([-1.0, -1.0, 1.0, 1.0])  # RAS <-> LPS


def _to_itk(vol: Volume):
    import SimpleITK as sitk

    aff = _FLIP @ vol.affine
    spacing = np.linalg.norm(aff[:3, :3], axis=0)
    img = sitk.GetImageFromArray(
        np.ascontiguousarray(vol.data.astype(np.float32).transpose(2, 1, 0))
    )
    img.SetSpacing(tuple(float(s) for s in spacing))
    img.SetOrigin(tuple(float(v) for v in aff[:3, 3]))
    img.SetDirection(tuple(float(v) for v in (aff[:3, :3] / spacing).ravel()))
    return img


def register_affine(
    fixed: Volume,
    moving: Volume,
    *,
    rigid_only: bool = False,
    iterations: int = 200,
) -> np.ndarray:
    """The (4, 4) RAS world map M with moving(M p) ~ fixed(p) (see the module notes)."""
    import SimpleITK as sitk

    f, m = _to_itk(fixed), _to_itk(moving)
    base = sitk.Euler3DTransform() if rigid_only else sitk.AffineTransform(3)
    init = sitk.CenteredTransformInitializer(
        f, m, base, sitk.CenteredTransformInitializerFilter.MOMENTS
    )
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    reg.SetMetricSamplingStrategy(reg.NONE)  # every voxel: deterministic, and cheap at 2-4 mm
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(
        learningRate=1.0, minStep=1e-4, numberOfIterations=iterations, relaxationFactor=0.7
    )
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel([4, 2, 1])
    reg.SetSmoothingSigmasPerLevel([2, 1, 0])
    reg.SetInitialTransform(init, inPlace=False)
    out = reg.Execute(f, m)
    return _matrix(out)


def _matrix(transform) -> np.ndarray:
    """A SimpleITK composite/affine/Euler transform (fixed -> moving, LPS) as a RAS 4 x 4."""
    import SimpleITK as sitk

    t = transform.Downcast()
    while isinstance(t, sitk.CompositeTransform):
        t = t.GetNthTransform(0).Downcast()
    a = np.asarray(t.GetMatrix(), float).reshape(3, 3)
    c = np.asarray(t.GetCenter(), float)
    tr = np.asarray(t.GetTranslation(), float)
    m = np.eye(4)
    m[:3, :3] = a
    m[:3, 3] = tr + c - a @ c
    return _FLIP @ m @ _FLIP
