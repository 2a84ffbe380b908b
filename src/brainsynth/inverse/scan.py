"""A scan of the prior's image: model units -> scan units -> (bias field) -> acquisition.

The prior works in its own units (model units: ``x_model = scale * x_scan + offset`` inverted
here), a scan is measured in the scan's (normalised) units, and a multiplicative bias acts on those
units, not on model units (whose background is -1). So the measurement model of a real scan is

    y = A(b(c) * (x - offset) / scale) + sigma * eps

with A a linear acquisition (thick slices, a mask, the identity) and b(c) an optional
``BiasField`` whose coefficients are unknown. ``update(x0, y)`` re-fits c to the current image
estimate (``BiasField.fit_through``): DAPS calls it once per annealing level, which makes the
sampling a coordinate descent between the image and the field (the brain-prior paper's scheme).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from brainsynth.inverse.bias import BiasField
from brainsynth.inverse.operators import Operator


class ScanOperator(nn.Module):
    """y = acquisition(bias((x - offset) / scale)); linear in x only when offset is 0.

    Args:
        acquisition: a linear operator on the scan-unit image (``SliceAcquisition``, ``Mask``,
            ``Identity``, ``Compose`` of those); its ``sigma`` is the measurement noise.
        bias: a ``BiasField`` on the image grid, estimated during sampling; None: no bias.
        scale, offset: model units = scale * scan units + offset.
        fit_mask: y-space weights of the voxels the bias fit may use (the brain), (1, 1, *S_y);
            multiplied with the observed voxels. None: the observed voxels.
        y_mask: y-space indicator of the voxels that are measurements at all, (1, 1, *S_y)
            (e.g. not the uncertain rim a skull stripping cut); None: all of them.
        gn_steps: Gauss-Newton steps per ``update``.
        support: image-space weights (*S) of where the field acts (the brain, dilated); b = 1
            elsewhere, where a low-order polynomial fitted to the brain would extrapolate to
            huge values at the grid's corners. None: everywhere.
        max_log_bias: after each fit the field is scaled back (all coefficients alike) until
            |log b| <= this over the fit region: a fit against an early, blurred image estimate
            can otherwise return a field of 10x or more, which also makes the Langevin step on
            the image unstable (its data term scales with b^2). 1.0 (x0.37 .. x2.7) bounds any
            MRI bias field.
    """

    linear = False

    def __init__(
        self,
        acquisition: Operator,
        bias: BiasField | None = None,
        *,
        scale: float = 1.0,
        offset: float = 0.0,
        fit_mask: Tensor | None = None,
        y_mask: Tensor | None = None,
        gn_steps: int = 2,
        support: Tensor | None = None,
        max_log_bias: float = 1.0,
    ):
        super().__init__()
        if scale == 0:
            raise ValueError("scale must be non-zero")
        if bias is not None and bias.spatial_dims != acquisition.spatial_dims:
            raise ValueError("bias field and acquisition disagree on spatial_dims")
        self.acquisition = acquisition
        self.bias = bias
        self.spatial_dims = acquisition.spatial_dims
        self.sigma = float(acquisition.sigma)
        self.scale = float(scale)
        self.offset = float(offset)
        self.gn_steps = int(gn_steps)
        self.max_log_bias = float(max_log_bias)
        self.support = support
        self.fit_mask = fit_mask
        self.y_mask = y_mask
        self._observed: Tensor | None = None
        self.updates = 0

    def to_scan(self, x: Tensor) -> Tensor:
        return (x - self.offset) / self.scale

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, C, *S) in model units -> y in scan units."""
        u = self.to_scan(x)
        if self.bias is not None:
            u = u * self.field().to(u.dtype)
        return self.acquisition.forward(u)

    def field(self) -> Tensor:
        """The bias field as applied: (B, 1, *S), 1 outside ``support``."""
        return self._log_field().exp().unsqueeze(1)

    def _log_field(self) -> Tensor:
        """log b as applied: (B, *S), 0 outside ``support``."""
        assert self.bias is not None
        log = self.bias.log_field()
        return log if self.support is None else log * self.support.to(log)

    def observed(self, mask_in: Tensor | None = None) -> Tensor | None:
        """The acquisition's measured voxels times ``y_mask`` (cached: both are fixed)."""
        if mask_in is not None:
            fn = getattr(self.acquisition, "observed", None)
            m = mask_in if fn is None else fn(mask_in)
            return m if self.y_mask is None or m is None else m * self.y_mask
        if self._observed is None:
            fn = getattr(self.acquisition, "observed", None)
            m = None if fn is None else fn(None)
            if self.y_mask is not None:
                m = self.y_mask if m is None else m * self.y_mask
            self._observed = m
        return self._observed

    def update(self, x0: Tensor, y: Tensor) -> None:
        """Re-fit the bias coefficients to the image estimate x0 (model units); no-op without
        a bias field."""
        if self.bias is None:
            return
        w = self.observed(None)
        if self.fit_mask is not None:
            w = self.fit_mask if w is None else w * self.fit_mask
        self.bias.fit_through(
            self.acquisition.forward, self.to_scan(x0).clamp_min(0), y, w, self.gn_steps
        )
        peak = self._log_field().abs().flatten(1).amax(1)  # (B,)
        shrink = (self.max_log_bias / peak.clamp_min(1e-12)).clamp(max=1.0)
        self.bias.coefficients = self.bias.coefficients * shrink[:, None].to(torch.float64)
        self.updates += 1
