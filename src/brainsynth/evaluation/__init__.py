"""Evaluation: paired image metrics, distribution metrics (FID/MMD on named 3D features, diversity),
anatomy (tissue/ventricle/brain volumes), surface distances, deformation Jacobians, and the
``brainsynth evaluate`` run that writes metrics.json + report.html.

Every number is reported with what produced it (kernel, estimator, feature extractor, data range).
"""

from brainsynth.evaluation.anatomy import (
    brain_mask_from_intensity,
    tissue_volumes_from_labels,
    tissue_volumes_gmm,
)
from brainsynth.evaluation.deformation import (
    deformation_metrics,
    jacobian_determinant,
    jacobian_stats,
)
from brainsynth.evaluation.distribution import (
    compare_scalars,
    fid_report,
    frechet_distance,
    mmd2_linear_unbiased,
    mmd2_rbf_unbiased,
    mmd_report,
    random_pairs,
)
from brainsynth.evaluation.image import (
    four_component_gssim,
    mae,
    ms_ssim,
    ms_ssim_params,
    paired_metrics,
    psnr,
    ssim,
)
from brainsynth.evaluation.surface import (
    mesh_area,
    signed_volume,
    surface_distances,
    surface_from_mask,
)

__all__ = [
    "brain_mask_from_intensity",
    "compare_scalars",
    "deformation_metrics",
    "fid_report",
    "four_component_gssim",
    "frechet_distance",
    "jacobian_determinant",
    "jacobian_stats",
    "mae",
    "mesh_area",
    "mmd2_linear_unbiased",
    "mmd2_rbf_unbiased",
    "mmd_report",
    "ms_ssim",
    "ms_ssim_params",
    "paired_metrics",
    "psnr",
    "random_pairs",
    "signed_volume",
    "ssim",
    "surface_distances",
    "surface_from_mask",
    "tissue_volumes_from_labels",
    "tissue_volumes_gmm",
]
