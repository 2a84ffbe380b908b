"""Haar transform identities and the wavelet-skip autoencoder built on it."""

import math

import pytest
import torch
import torch.nn.functional as F

from brainsynth.nn.autoencoder import WaveletSkipAutoencoderKL, build_autoencoder
from brainsynth.nn.wavelet import haar, haar_matrix, inverse_haar


@pytest.mark.parametrize("dims", [2, 3])
def test_haar_matrix_is_orthonormal_with_lowpass_first(dims):
    m = haar_matrix(dims)
    assert m.shape == (2**dims, 2**dims)
    torch.testing.assert_close(m @ m.T, torch.eye(2**dims, dtype=m.dtype))
    torch.testing.assert_close(m[0], torch.full((2**dims,), 2 ** (-dims / 2), dtype=m.dtype))


@pytest.mark.parametrize("dims", [2, 3])
def test_round_trip_parseval_and_lowpass_band(dims):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, *[4, 6, 8][:dims], generator=g, dtype=torch.float64)
    z = haar(x)
    assert z.shape == (2, 3 * 2**dims, *[s // 2 for s in x.shape[2:]])
    torch.testing.assert_close(inverse_haar(z), x)
    torch.testing.assert_close(z.pow(2).sum(), x.pow(2).sum())  # orthonormal: energy kept
    pool = F.avg_pool3d if dims == 3 else F.avg_pool2d
    # channel c * 2^d: the low-pass band of input channel c = 2^(d/2) x the block mean
    torch.testing.assert_close(z[:, :: 2**dims], pool(x, 2) * 2 ** (dims / 2))


def test_detail_bands_of_a_single_block():
    """One 2x2x2 block of the signal +1 on the x = 0 slice, -1 on x = 1: only the x-detail band."""
    x = torch.zeros(1, 1, 2, 2, 2, dtype=torch.float64)
    x[0, 0, 0], x[0, 0, 1] = 1.0, -1.0
    z = haar(x).flatten()
    nonzero = torch.nonzero(z.abs() > 1e-12).flatten().tolist()
    assert len(nonzero) == 1 and nonzero[0] != 0
    assert math.isclose(float(z.abs().max()), math.sqrt(8.0))  # ||x|| = sqrt 8, all in one band


def test_haar_errors_name_the_problem():
    with pytest.raises(ValueError, match="even spatial sizes"):
        haar(torch.zeros(1, 1, 3, 4, 4))
    with pytest.raises(ValueError, match="multiple of 8 channels"):
        inverse_haar(torch.zeros(1, 5, 2, 2, 2))
    with pytest.raises(ValueError, match="must be"):
        haar(torch.zeros(4, 4))


def test_wavelet_skip_autoencoder_starts_lossless_and_trains():
    ae = build_autoencoder("cpu", 3, 1, 8, wavelet_skip=True)
    assert isinstance(ae, WaveletSkipAutoencoderKL)
    plain = build_autoencoder("cpu", 3, 1, 8)
    assert ae.state_dict().keys() == plain.state_dict().keys()  # checkpoints interchange
    x = torch.rand(2, 1, 8, 8, 8, generator=torch.Generator().manual_seed(1))
    mu, sigma = ae.encode(x)
    torch.testing.assert_close(mu, haar(x))  # the learned branch starts at zero
    torch.testing.assert_close(ae.decode(mu), x, atol=1e-5, rtol=0)
    loss = (ae.decode(mu + 0.1) - x).pow(2).mean() + sigma.mean()
    loss.backward()
    grads = [p.grad for p in ae.parameters() if p.grad is not None]
    assert grads and any(float(g.abs().max()) > 0 for g in grads)


def test_wavelet_skip_needs_one_level_and_eight_channels():
    with pytest.raises(ValueError, match="downsamples by 2 with 8 latent channels"):
        build_autoencoder("tiny", 3, 1, 8, wavelet_skip=True)  # downsamples by 4
    with pytest.raises(ValueError, match="latent_channels is 4"):
        build_autoencoder("cpu", 3, 1, 4, wavelet_skip=True)
