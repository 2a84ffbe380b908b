"""A smooth multiplicative bias field in a low-order Legendre basis, and its closed-form fit.

Model. y = b(c) * x + sigma * eps, with b(c) = exp(sum_k c_k phi~_k(r)), one field per batch item
shared by all channels. It is linear in x for fixed c, so the adjoint is the same multiplication.

Notation
    S           spatial shape (n_1, ..., n_d), d = ``spatial_dims``
    u_a         coordinate along axis a, normalised to [-1, 1]: u_a = -1 + 2 i / (n_a - 1), so the
                first and last voxel centres sit at -1 and +1 (u_a = 0 when n_a = 1)
    P_j         Legendre polynomial of degree j (Bonnet: (j + 1) P_{j+1} = (2j + 1) u P_j - j P_{j-1})
    alpha       multi-index (alpha_1, ..., alpha_d), 1 <= |alpha| = sum alpha_a <= ``order``
    phi_alpha   prod_a P_{alpha_a}(u_a): the K = C(order + d, d) - 1 non-constant tensor products
                of total degree <= order (the constant is left out on purpose, see below)
    R           the region (e.g. the brain mask) over which the log-field has zero mean
    mu_alpha    mean of phi_alpha over R;  phi~_alpha = phi_alpha - mu_alpha
    c           coefficients, (B, K), ordered like ``multi_indices`` (by total degree, then
                lexicographically)

Normalisation. The field never carries global intensity: log b has zero mean over R for every c,
because the basis is centred over R. Otherwise b and x could trade a global scale (b s, x / s give
the same y) and the prior's intensity normalisation would be all that pins it. ``fit`` estimates an
intercept (a global log-scale between x and y) as a nuisance and drops it, so a scale mismatch
between the current image estimate and the scan does not leak into the field's shape; that scale
stays with the image.

Fit. ``fit(x, y)`` is weighted least squares in the log domain, log y - log x = a + sum c_k phi_k,
on voxels where x, y > eps (closed form), followed by ``gn_steps`` Gauss-Newton steps on the
intensity residual y - exp(a + sum c_k phi_k) x, which is the Gaussian likelihood DAPS uses (the
log-domain fit over-weights dark voxels, whose log is noisy). Every Gram matrix and moment uses
the basis's separability (contract one axis at a time), so no (K, *S) basis is ever stored: memory
is O(|S|), not O(K |S|).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn


def legendre_table(n: int, order: int) -> Tensor:
    """P_0 .. P_order at the n normalised voxel centres of one axis: (order + 1, n), float64."""
    u = torch.linspace(-1.0, 1.0, n, dtype=torch.float64) if n > 1 else torch.zeros(1).double()
    rows = [torch.ones_like(u), u]
    for j in range(1, order):
        rows.append(((2 * j + 1) * u * rows[j] - j * rows[j - 1]) / (j + 1))  # Bonnet recursion
    return torch.stack(rows[: order + 1])


def multi_indices(spatial_dims: int, order: int) -> list[tuple[int, ...]]:
    """Non-constant multi-indices of total degree <= ``order``, by degree then lexicographically."""
    idx = [
        a for a in itertools.product(range(order + 1), repeat=spatial_dims) if 0 < sum(a) <= order
    ]
    return sorted(idx, key=lambda a: (sum(a), a))


class BiasField(nn.Module):
    """Multiplicative bias field b(c) = exp(sum_k c_k phi~_k) on a fixed grid (no trainable
    parameters: ``coefficients`` is a buffer, settable, and ``fit`` estimates it).

    Args:
        spatial_dims: 2 or 3.
        shape: spatial shape S of the images it multiplies.
        order: maximum total degree of the Legendre products (0: the field is 1).
        coefficients: (B, K) or (K,) initial coefficients; zeros (1, K) when None.
        region: (*S), (1, *S) or (1, 1, *S) weights of the region over which log b has zero mean
            (a brain mask); the whole grid when None.
        sigma: measurement noise std, intensity units.
    """

    spatial_dims: int
    sigma: float
    linear: bool = True
    _flat: Tensor  # buffers, declared for the type checker
    _mu: Tensor
    _coefficients: Tensor

    def __init__(
        self,
        spatial_dims: int,
        shape: Sequence[int],
        order: int = 3,
        coefficients: Tensor | None = None,
        region: Tensor | None = None,
        sigma: float = 0.05,
    ):
        super().__init__()
        if spatial_dims not in (2, 3) or len(shape) != spatial_dims:
            raise ValueError(f"need spatial_dims 2 or 3 and a shape of that length, got {shape}")
        if order < 0:
            raise ValueError(f"order must be >= 0, got {order}")
        if sigma <= 0:
            raise ValueError(f"sigma must be > 0, got {sigma}")
        self.spatial_dims = int(spatial_dims)
        self.shape = tuple(int(n) for n in shape)
        self.order = int(order)
        self.sigma = float(sigma)
        self.multi_indices = multi_indices(self.spatial_dims, self.order)
        self.num_coefficients = len(self.multi_indices)
        for a, n in enumerate(self.shape):
            self.register_buffer(f"_table{a}", legendre_table(n, self.order))
        # Flat positions of the multi-indices in the (order + 1)^d coefficient tensor; position 0
        # (all zeros) is the constant, used only as fit's nuisance intercept.
        strides = [(self.order + 1) ** (self.spatial_dims - 1 - a) for a in range(spatial_dims)]
        flat = [sum(i * s for i, s in zip(a, strides)) for a in self.multi_indices]
        self.register_buffer("_flat", torch.tensor([0, *flat], dtype=torch.long))
        w = (
            torch.ones(self.shape, dtype=torch.float64)
            if region is None
            else _spatial(region, spatial_dims)
        )
        if tuple(w.shape) != self.shape:
            raise ValueError(f"region shape {tuple(w.shape)} does not match the grid {self.shape}")
        if float(w.sum()) <= 0:
            raise ValueError("region is empty")
        mu = self._project(w.double()[None])[0, 1:] / w.double().sum()
        self.register_buffer("_mu", mu)
        self.register_buffer("_coefficients", torch.zeros(1, self.num_coefficients).double())
        if coefficients is not None:
            self.coefficients = coefficients

    def tables(self) -> list[Tensor]:
        """Per-axis Legendre tables, each (order + 1, n_a), float64."""
        return [getattr(self, f"_table{a}") for a in range(self.spatial_dims)]

    @property
    def coefficients(self) -> Tensor:
        """(B, K) coefficients c, ordered like ``multi_indices``."""
        return self._coefficients

    @coefficients.setter
    def coefficients(self, c: Tensor) -> None:
        c = torch.as_tensor(c)
        if c.dim() == 1:
            c = c[None]
        if c.dim() != 2 or c.shape[1] != self.num_coefficients:
            raise ValueError(
                f"coefficients must be (B, {self.num_coefficients}), got {tuple(c.shape)}"
            )
        self._coefficients = c

    # ---- the field ------------------------------------------------------------------------

    def _expand(self, theta: Tensor) -> Tensor:
        """c (B, K), or (a, c) (B, K + 1) with the intercept first -> the dense (B, order + 1,
        ..., order + 1) coefficient tensor."""
        dense = theta.new_zeros(theta.shape[0], (self.order + 1) ** self.spatial_dims)
        dense = dense.index_add(1, self._flat[-theta.shape[1] :], theta)  # differentiable scatter
        return dense.reshape(theta.shape[0], *([self.order + 1] * self.spatial_dims))

    def _synthesise(self, dense: Tensor) -> Tensor:
        """sum_alpha dense[alpha] phi_alpha(r): (B, (order + 1)^d) -> (B, *S), axis by axis."""
        out = dense
        for table in self.tables():
            # Contract the next polynomial index (dim 1) and append that axis's voxels at the end.
            out = torch.tensordot(out, table.to(out.dtype), dims=([1], [0]))
        return out

    def _project(self, w: Tensor) -> Tensor:
        """sum_r w(r) phi_alpha(r) for every alpha in ``_flat`` order: (B, *S) -> (B, K + 1)."""
        out = w
        for table in self.tables():
            out = torch.tensordot(out, table.to(out.dtype), dims=([1], [1]))
        return out.reshape(w.shape[0], -1)[:, self._flat]

    def _gram(self, w: Tensor) -> Tensor:
        """sum_r w(r) phi_alpha(r) phi_beta(r), alpha, beta in ``_flat`` order: (B, K+1, K+1)."""
        p1, d = self.order + 1, self.spatial_dims
        out = w
        for table in self.tables():
            pair = (table[:, None, :] * table[None, :, :]).reshape(p1 * p1, -1)  # P_i P_j
            out = torch.tensordot(out, pair.to(out.dtype), dims=([1], [1]))
        # (B, i1 j1, i2 j2, ...) -> (B, i1 i2 .., j1 j2 ..) so rows are alpha, columns beta.
        out = out.reshape(w.shape[0], *([p1, p1] * d))
        perm = [0, *range(1, 2 * d, 2), *range(2, 2 * d + 1, 2)]
        out = out.permute(perm).reshape(w.shape[0], p1**d, p1**d)
        return out[:, self._flat][:, :, self._flat]

    def log_field(self, coefficients: Tensor | None = None) -> Tensor:
        """log b = sum_k c_k (phi_k - mu_k): (B, *S), zero mean over ``region``."""
        c = self.coefficients if coefficients is None else coefficients
        if self.num_coefficients == 0:
            return c.new_zeros(c.shape[0], *self.shape)
        raw = self._synthesise(self._expand(c))
        centre = c @ self._mu.to(c.dtype)  # (B,): sum_k c_k mu_k
        return raw - centre.reshape(-1, *([1] * self.spatial_dims))

    def field(self, coefficients: Tensor | None = None) -> Tensor:
        """The multiplicative field b(c): (B, 1, *S); 1 for c = 0."""
        return self.log_field(coefficients).exp().unsqueeze(1)

    # ---- Operator -------------------------------------------------------------------------

    def _check(self, x: Tensor) -> None:
        if x.dim() != self.spatial_dims + 2 or tuple(x.shape[2:]) != self.shape:
            raise ValueError(f"expected (B, C, *{self.shape}), got {tuple(x.shape)}")

    def forward(self, x: Tensor) -> Tensor:
        """y = b(c) * x: (B, C, *S) -> (B, C, *S); batch 1 broadcasts against batch B."""
        self._check(x)
        return x * self.field().to(x.dtype)

    def adjoint(self, y: Tensor) -> Tensor:
        """b(c) * y: a real diagonal map is its own transpose."""
        return self.forward(y)

    def observed(self, mask_in: Tensor | None = None) -> Tensor | None:
        """Voxel-wise map: the observed voxels of y are those of x."""
        return mask_in

    # ---- estimation -----------------------------------------------------------------------

    @torch.no_grad()
    def fit(
        self,
        x: Tensor,
        y: Tensor,
        mask: Tensor | None = None,
        weights: Tensor | None = None,
        gn_steps: int = 2,
        eps: float = 1e-3,
        update: bool = True,
    ) -> Tensor:
        """Estimate c from an image x and a measurement y = b(c) x (+ noise), up to global scale.

        Args:
            x, y: (B, C, *S) (either may have batch 1); all channels share one field.
            mask: (B or 1, 1 or C, *S) voxels to use (e.g. the brain); all when None.
            weights: same shape rules; per-voxel confidence multiplying the mask.
            gn_steps: Gauss-Newton steps on the intensity residual after the log-domain fit.
            eps: the log-domain fit uses only voxels with x > eps and y > eps.
            update: also store the result in ``coefficients``.
        Returns:
            (B, K) coefficients, in x's floating dtype.
        """
        self._check(x)
        self._check(y)
        x64, y64 = torch.broadcast_tensors(x.double(), y.double())
        w = torch.ones_like(x64)
        if mask is not None:
            w = w * mask.double()
        if weights is not None:
            w = w * weights.double()
        if self.num_coefficients == 0:
            return x.new_zeros(x64.shape[0], 0)
        valid = (x64 > eps) & (y64 > eps)
        wl = torch.where(valid, w, 0.0)
        need = self.num_coefficients + 1
        if bool(((wl > 0).flatten(1).sum(1) < need).any()):
            raise ValueError(f"bias fit needs at least {need} voxels with x, y > {eps} in the mask")
        r = torch.where(valid, y64.clamp_min(eps).log() - x64.clamp_min(eps).log(), 0.0)
        # theta = (a, c): intercept a (global log-scale, dropped) and the shape coefficients.
        theta = _solve(self._gram(wl.sum(1)), self._project((wl * r).sum(1)))
        for _ in range(gn_steps):
            theta = self._gauss_newton(theta, x64, y64, w)
        c = theta[:, 1:].to(x.dtype if x.is_floating_point() else torch.float64)
        if update:
            self.coefficients = c.clone()
        return c

    def _gauss_newton(self, theta: Tensor, x: Tensor, y: Tensor, w: Tensor) -> Tensor:
        """One damped Gauss-Newton step on sum w (y - exp(a + sum c phi) x)^2 over theta."""

        def predict(t: Tensor) -> Tensor:
            return self._synthesise(self._expand(t)).exp().unsqueeze(1) * x

        def sse(t: Tensor) -> Tensor:
            return (w * (y - predict(t)) ** 2).flatten(1).sum(1)

        pred = predict(theta)
        # Jacobian of the prediction w.r.t. theta_alpha is pred * phi_alpha, so J^T W J and
        # J^T W e are weighted Gram/moment sums of the basis (summed over channels).
        delta = _solve(
            self._gram((w * pred**2).sum(1)), self._project((w * pred * (y - pred)).sum(1))
        )
        before, step = sse(theta), torch.ones(theta.shape[0], 1, dtype=theta.dtype)
        for _ in range(6):  # halve per item until the misfit does not grow
            trial = theta + step * delta
            worse = sse(trial) > before
            if not bool(worse.any()):
                return trial
            step = torch.where(worse[:, None], step / 2, step)
        trial = theta + step * delta
        return torch.where((sse(trial) > before)[:, None], theta, trial)

    @torch.no_grad()
    def fit_through(
        self,
        after: Callable[[Tensor], Tensor],
        x: Tensor,
        y: Tensor,
        mask: Tensor | None = None,
        gn_steps: int = 3,
        update: bool = True,
    ) -> Tensor:
        """Estimate c from y = after(b(c) x) (+ noise), up to global scale, when the field acts
        before another linear map (a thick-slice acquisition): Gauss-Newton on
        sum_v m_v (y_v - after(exp(a + sum_k c_k phi_k) x)_v)^2 over theta = (a, c), started
        from the stored coefficients (a = 0). The Jacobian's column k is after(phi_k b x), by
        linearity of ``after``: K + 1 applications of it per step, and (K + 1) dense basis images
        in memory (K = 19 for order 3 in 3D).

        Args:
            after: a linear map (B, C, *S) -> y's shape, e.g. ``SliceAcquisition.forward``.
            x: (B, C, *S) image estimate; y: (B or 1, C, *S_y).
            mask: y's measured voxels (B or 1, 1 or C, *S_y), all when None.
        Returns:
            (B, K) coefficients (float64).
        """
        self._check(x)
        if self.num_coefficients == 0:
            return x.new_zeros(x.shape[0], 0, dtype=torch.float64)
        x64 = x.double()
        y64 = y.double()
        k1 = self.num_coefficients + 1
        eye = torch.eye(k1, dtype=torch.float64, device=x.device)
        basis = self._synthesise(self._expand(eye))  # (K + 1, *S): 1, phi_1, .., phi_K
        c0 = self.coefficients.to(torch.float64).expand(x.shape[0], -1)
        theta = torch.cat([torch.zeros_like(c0[:, :1]), c0], 1)
        w = torch.ones_like(y64) if mask is None else mask.double().expand_as(y64)

        def predict(t: Tensor) -> tuple[Tensor, Tensor]:
            bx = (t @ basis.flatten(1)).reshape(-1, 1, *self.shape).exp() * x64
            return bx, after(bx)

        def sse(pred: Tensor) -> Tensor:
            return (w * (y64 - pred) ** 2).flatten(1).sum(1)

        for _ in range(gn_steps):
            bx, pred = predict(theta)
            before = sse(pred)
            cols = torch.stack([after(bx * basis[k]) for k in range(k1)], 1)  # (B, K+1, C, *S_y)
            jw = (cols * w[:, None]).flatten(2)
            gram = torch.einsum("bkm,bjm->bkj", jw, cols.flatten(2))
            rhs = torch.einsum("bkm,bm->bk", jw, (y64 - pred).flatten(1))
            delta = _solve(gram, rhs)
            step = torch.ones(theta.shape[0], 1, dtype=theta.dtype, device=theta.device)
            for _ in range(6):  # halve per item until the misfit does not grow
                worse = sse(predict(theta + step * delta)[1]) > before
                if not bool(worse.any()):
                    break
                step = torch.where(worse[:, None], step / 2, step)
            trial = theta + step * delta
            theta = torch.where((sse(predict(trial)[1]) > before)[:, None], theta, trial)
        c = theta[:, 1:]
        if update:
            self.coefficients = c.clone()
        return c


def _solve(gram: Tensor, rhs: Tensor) -> Tensor:
    """Batched normal equations with a tiny ridge (relative 1e-12) against round-off."""
    k = gram.shape[-1]
    scale = torch.diagonal(gram, dim1=-2, dim2=-1).mean(-1).clamp_min(1e-300)
    ridge = 1e-12 * scale[:, None, None] * torch.eye(k, dtype=gram.dtype, device=gram.device)
    return torch.linalg.solve(gram + ridge, rhs[..., None])[..., 0]


def _spatial(t: Tensor, spatial_dims: int) -> Tensor:
    """A region given as (*S), (1, *S) or (1, 1, *S) -> (*S)."""
    lead = t.dim() - spatial_dims
    if lead < 0 or lead > 2 or any(n != 1 for n in t.shape[:lead]):
        raise ValueError(f"region must be (*S), (1, *S) or (1, 1, *S), got {tuple(t.shape)}")
    return t.reshape(t.shape[lead:])
