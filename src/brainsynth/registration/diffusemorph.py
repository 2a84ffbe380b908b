"""DiffuseMorph (Kim, Han & Ye, ECCV 2022) with a stationary velocity field.

Two networks:

* the diffusion network ``E(x_t, t | m, f)``: the engine's UNet on the noisy fixed image
  ``x_t = sqrt(abar_t) f + sqrt(1 - abar_t) eps`` with the moving and fixed images as concat
  channels, trained with the denoising loss ``|| E - eps ||^2`` (its output is the conditional
  score up to scale: the paper's "latent feature" c);
* the deformation network ``G(m, f, c)``: a MONAI UNet that maps the moving image, the fixed image
  and the latent feature to a stationary velocity field ``v``, integrated by scaling and squaring
  to ``phi = exp(v)`` (diffeomorphic by construction; the authors predict a plain displacement,
  which folds) and applied with a spatial transformer.

Loss (the paper's eq. 7): ``L_diffusion + lambda (L_NCC(m o phi, f) + alpha ||grad u||^2)``.

Continuous deformation (the paper's Algorithm 1): the latent feature is scaled by ``eta`` in
[0, 1]; here the velocity is scaled with it, ``phi_eta = exp(eta G(m, f, eta c))``, so that
eta = 0 is exactly the identity and eta = 1 the full registration (the authors' displacement has
neither guarantee). At inference the feature is taken at t = 0 (x_0 = f), as in the paper.

The fixed image's voxel grid carries every field: u (B, N, *S) in voxels, component i along axis
i, sampling map ``phi(x) = x + u(x)`` (``registration.svf``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.nets import UNet
from torch import Tensor, nn

from brainsynth.diffusion.base import Cond
from brainsynth.registration.svf import integrate, warp


class DiffuseMorph(nn.Module):
    """``score(x_t, t, m, f)`` -> eps estimate; ``velocity(m, f, eta, t, x_t)`` -> v;
    ``forward(m, f, eta)`` -> (v, u) with u = integrate(v)."""

    def __init__(
        self,
        score_net: nn.Module,
        spatial_dims: int,
        channels: Sequence[int] = (16, 32, 32, 32),
        integration_steps: int = 7,
        integration_downsample: int = 1,
    ):
        super().__init__()
        self.spatial_dims = spatial_dims
        self.score_net = score_net
        self.deform_net = UNet(
            spatial_dims,
            3,
            spatial_dims,
            tuple(channels),
            (2,) * (len(channels) - 1),
            num_res_units=1,
            act=("leakyrelu", {"negative_slope": 0.2}),
            norm=None,  # type: ignore[arg-type]  # MONAI accepts None (no normalisation)
        )
        last = [m for m in self.deform_net.modules() if isinstance(m, nn.modules.conv._ConvNd)][-1]
        nn.init.normal_(last.weight, std=1e-5)  # start near the identity map (VoxelMorph's init)
        if last.bias is not None:
            nn.init.zeros_(last.bias)
        self.integration_steps = integration_steps
        self.integration_downsample = integration_downsample

    def score(self, x_t: Tensor, t: Tensor, moving: Tensor, fixed: Tensor) -> Tensor:
        return self.score_net(x_t, t, Cond(concat=torch.cat([moving, fixed], 1)))

    def velocity(
        self,
        moving: Tensor,
        fixed: Tensor,
        eta: float | Tensor = 1.0,
        feature: Tensor | None = None,
    ) -> Tensor:
        """v = eta G(m, f, eta c); c = E(f, t=0 | m, f) unless ``feature`` is given."""
        if feature is None:
            t0 = torch.zeros(fixed.shape[0], device=fixed.device)
            feature = self.score(fixed, t0, moving, fixed)
        eta_t = torch.as_tensor(eta, dtype=fixed.dtype, device=fixed.device)
        eta_t = eta_t.reshape(-1, *([1] * (fixed.ndim - 1)))
        return eta_t * self.deform_net(torch.cat([moving, fixed, eta_t * feature], 1))

    def displacement(self, v: Tensor) -> Tensor:
        """u of exp(v). With ``integration_downsample`` d > 1, v is average-pooled by d,
        integrated on that grid (in its voxels: v / d) and the displacement upsampled back
        (linear, times d), as VoxelMorph's diffeomorphic variant does: the scaling and squaring
        (the most costly part of a step on a CPU) runs on d^3 times fewer voxels."""
        d = self.integration_downsample
        if d == 1:
            return integrate(v, self.integration_steps)
        mode = "bilinear" if v.ndim == 4 else "trilinear"
        coarse = integrate(
            F.avg_pool3d(v, d) / d if v.ndim == 5 else F.avg_pool2d(v, d) / d,
            self.integration_steps,
        )
        return F.interpolate(coarse, size=v.shape[2:], mode=mode, align_corners=False) * d

    def forward(
        self, moving: Tensor, fixed: Tensor, eta: float | Tensor = 1.0
    ) -> tuple[Tensor, Tensor]:
        v = self.velocity(moving, fixed, eta)
        return v, self.displacement(v)

    @staticmethod
    def warp_image(image: Tensor, u: Tensor) -> Tensor:
        return warp(image, u, mode="bilinear")

    @staticmethod
    def warp_labels(labels: Tensor, u: Tensor) -> Tensor:
        return warp(labels, u, mode="nearest")
