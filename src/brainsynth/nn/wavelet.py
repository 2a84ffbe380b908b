"""One level of the orthonormal Haar wavelet transform of 2D/3D images, as channels.

``haar(x)`` maps (B, C, *S) to (B, C * 2^d, *S / 2): each 2 x ... x 2 block becomes its 2^d Haar
coefficients (Kronecker product of [[1, 1], [1, -1]] / sqrt 2 over the d axes), channel ``c * 2^d``
holding the low-pass band (2^(d/2) x the block mean) and the others the detail bands. The matrix is
orthonormal, so ``inverse_haar(haar(x)) == x`` and the sum of squares is kept (Parseval). This is
the transform of wavelet diffusion models (Friedrich et al. 2024, WDM), used here as an exact
skip path around a learned autoencoder (nn.autoencoder.WaveletSkipAutoencoder).
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor


@functools.cache
def haar_matrix(spatial_dims: int) -> Tensor:
    """The (2^d, 2^d) orthonormal Haar matrix; row 0 is the low-pass filter."""
    h = torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=torch.float64) / math.sqrt(2.0)
    m = h
    for _ in range(spatial_dims - 1):
        m = torch.kron(m, h)
    return m


def _check(x: Tensor, what: str) -> int:
    d = x.ndim - 2
    if d not in (2, 3):
        raise ValueError(f"{what} must be (B, C, H, W) or (B, C, D, H, W), got {tuple(x.shape)}")
    return d


def haar(x: Tensor) -> Tensor:
    d = _check(x, "haar input")
    if any(s % 2 for s in x.shape[2:]):
        raise ValueError(f"haar needs even spatial sizes, got {tuple(x.shape[2:])}")
    b, c, half = x.shape[0], x.shape[1], [s // 2 for s in x.shape[2:]]
    blocks = x.reshape(b, c, *[v for s in half for v in (s, 2)])
    # (B, C, s1, 2, s2, 2[, s3, 2]) -> (B, C, 2, 2[, 2], s1, s2[, s3]) -> (B, C, 2^d, *half)
    order = [0, 1, *range(3, 2 + 2 * d, 2), *range(2, 2 + 2 * d, 2)]
    blocks = blocks.permute(order).reshape(b, c, 2**d, *half)
    coeffs = torch.einsum("kj,bcj...->bck...", haar_matrix(d).to(x), blocks)
    return coeffs.reshape(b, c * 2**d, *half)


def inverse_haar(z: Tensor) -> Tensor:
    d = _check(z, "inverse_haar input")
    n = 2**d
    if z.shape[1] % n:
        raise ValueError(f"inverse_haar needs a multiple of {n} channels, got {z.shape[1]}")
    b, c, half = z.shape[0], z.shape[1] // n, list(z.shape[2:])
    blocks = torch.einsum("kj,bck...->bcj...", haar_matrix(d).to(z), z.reshape(b, c, n, *half))
    blocks = blocks.reshape(b, c, *([2] * d), *half)
    # (B, C, 2, 2[, 2], s1, s2[, s3]) -> (B, C, s1, 2, s2, 2[, s3, 2])
    order = [0, 1, *[v for i in range(d) for v in (2 + d + i, 2 + i)]]
    return blocks.permute(order).reshape(b, c, *[2 * s for s in half])
