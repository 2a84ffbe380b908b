"""End to end: a tiny UNet trained for a few hundred AdamW steps on a known toy distribution
produces samples with the right statistics.

Data: 16x16 images, +1 inside a centred disc and -1 outside; radius 3 (32 pixels) or 6
(112 pixels), 50/50. The training loop here is deliberately minimal (the real Trainer lives in
brainsynth.training). Runs on one thread (tests/sampling/conftest.py).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from brainsynth.diffusion.bridge import BrownianBridgeProcess
from brainsynth.diffusion.gaussian import GaussianProcess
from brainsynth.nn.unet import build_unet
from brainsynth.sampling import bridge_sample, ddim_sample

N = 16
_c = torch.arange(N, dtype=torch.float32) - (N - 1) / 2
RADIUS = (_c[:, None] ** 2 + _c[None, :] ** 2).sqrt()


def disc(r: float) -> torch.Tensor:
    return torch.where(RADIUS <= r, 1.0, -1.0)


def blur(img: torch.Tensor, sigma: float = 1.5) -> torch.Tensor:
    k = torch.arange(-4, 5, dtype=torch.float32)
    k = torch.exp(-(k**2) / (2 * sigma**2))
    k = k / k.sum()
    x = F.conv2d(
        F.pad(img.reshape(1, 1, N, N), (4, 4, 0, 0), mode="replicate"), k.reshape(1, 1, 1, 9)
    )
    x = F.conv2d(F.pad(x, (0, 0, 4, 4), mode="replicate"), k.reshape(1, 1, 9, 1))
    return x.reshape(N, N)


SMALL, BIG = disc(3), disc(6)
A_SMALL, A_BIG = int((SMALL > 0).sum()), int((BIG > 0).sum())  # 32, 112


def draw(batch: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(x0, y): sharp discs and their blurred versions, (B, 1, 16, 16)."""
    big = (torch.rand(batch, generator=g) < 0.5).reshape(-1, 1, 1, 1)
    return torch.where(big, BIG, SMALL), torch.where(big, blur(BIG), blur(SMALL))


def train(process, steps: int, *, bridge: bool, seed: int = 0) -> torch.nn.Module:
    """Plain AdamW, lr 3e-3 with a cosine decay to 0, batch 32."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = build_unet("tiny", 2, 1, 1)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: 0.5 * (1 + math.cos(math.pi * i / steps))
    )
    for _ in range(steps):
        x0, y = draw(32, g)
        t = process.sample_t(32, generator=g)
        noise = torch.randn(x0.shape, generator=g)
        y_arg = y if bridge else None
        out = model(process.q_sample(x0, t, noise, y_arg), t)
        loss = F.mse_loss(out, process.target(x0, t, noise, y_arg))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return model.eval()


@pytest.mark.slow
def test_gaussian_ddim_learns_two_discs():
    """x0-prediction, cosine schedule, 300 steps; 100 DDIM samples (eta = 0, 20 steps).

    Tolerances: >= 80 % of samples have a thresholded (> 0) area within 20 % of 32 or 112
    pixels; the big-disc fraction is in [0.3, 0.7] (50 % +- 4 binomial SE at n = 100); the mean
    intensity is within 0.05 of the ideal discs' mean for the same small/big mix, and within 0.15
    of the data mean (-0.4375). Measured over seeds 0-6: 95-100 % good areas, big fraction
    0.40-0.63."""
    p = GaussianProcess(1000, "cosine", "x0")
    model = train(p, 300, bridge=False)
    g = torch.Generator().manual_seed(123)
    x_T = torch.randn(100, 1, N, N, generator=g)
    out = ddim_sample(model, p, x_T, steps=20, eta=0.0, generator=g, clip_x0=(-1.0, 1.0))
    assert out.shape == x_T.shape and torch.isfinite(out).all()

    area = (out > 0).flatten(1).sum(1).float()
    big = (area - A_BIG).abs() < (area - A_SMALL).abs()
    near = torch.where(
        big, (area - A_BIG).abs() <= 0.2 * A_BIG, (area - A_SMALL).abs() <= 0.2 * A_SMALL
    )
    assert near.float().mean() >= 0.8, f"area histogram {torch.histc(area, 16, 0, 160).tolist()}"
    frac_big = float(big.float().mean())
    assert 0.3 <= frac_big <= 0.7
    ideal_mean = -1 + 2 * (frac_big * A_BIG + (1 - frac_big) * A_SMALL) / N**2
    assert abs(float(out.mean()) - ideal_mean) < 0.05
    data_mean = -1 + (A_BIG + A_SMALL) / N**2
    assert abs(float(out.mean()) - data_mean) < 0.15


@pytest.mark.slow
def test_bridge_learns_blurred_to_sharp():
    """BBDM "grad" objective, 200 steps, y = blurred disc -> x0 = its sharp disc; 100 samples
    with bridge_sample (eta = 1, 20 steps).

    Tolerances: >= 90 % of samples have an area within 20 % of their own disc's area (the radius
    is decided by y), and the mean absolute error to the paired sharp disc is < 0.1 and less
    than half that of y itself (~0.26). Measured: 100 % and ~0.02."""
    p = BrownianBridgeProcess(1000, objective="grad")
    model = train(p, 200, bridge=True)
    g = torch.Generator().manual_seed(123)
    x0, y = draw(100, g)
    out = bridge_sample(model, p, y, steps=20, eta=1.0, generator=g, clip_x0=(-1.0, 1.0))
    assert out.shape == y.shape and torch.isfinite(out).all()

    area = (out > 0).flatten(1).sum(1).float()
    true_area = (x0 > 0).flatten(1).sum(1).float()
    assert ((area - true_area).abs() <= 0.2 * true_area).float().mean() >= 0.9
    mae = float((out - x0).abs().mean())
    mae_y = float((y - x0).abs().mean())
    assert mae < 0.1 and mae < 0.5 * mae_y
