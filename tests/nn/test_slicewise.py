"""The slice-wise wrapper: a 2D network applied along each axis of a volume is the 3D operation
with a flat kernel on that axis, and the average over axes is the average of those."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from brainsynth.nn.slicewise import SliceWise


class Conv2D(nn.Module):
    """A fixed 3 x 3 2D convolution plus t (a net of the denoiser's signature)."""

    def __init__(self, kernel: torch.Tensor):
        super().__init__()
        self.kernel = kernel

    def forward(self, x, t, cond=None):
        return F.conv2d(x, self.kernel[None, None], padding=1) + t.reshape(-1, 1, 1, 1)


def test_each_axis_is_the_3d_conv_with_a_flat_kernel():
    g = torch.Generator().manual_seed(0)
    k2 = torch.randn(3, 3, generator=g, dtype=torch.float64)
    x = torch.randn(2, 1, 6, 6, 6, generator=g, dtype=torch.float64)
    t = torch.tensor([0.5, 2.0], dtype=torch.float64)
    expected = []
    for axis in range(3):
        k3 = k2.unsqueeze(axis)  # the 2D kernel on the two other axes, width 1 on this one
        pad = [1, 1, 1]
        pad[axis] = 0
        ref = F.conv3d(x, k3[None, None], padding=tuple(pad)) + t.reshape(-1, 1, 1, 1, 1)
        out = SliceWise(Conv2D(k2), axes=(axis,), chunk=5)(x, t)  # chunks split volumes
        torch.testing.assert_close(out, ref)
        expected.append(ref)
    both = SliceWise(Conv2D(k2), axes=(0, 2))(x, t)
    torch.testing.assert_close(both, (expected[0] + expected[2]) / 2)
    every = SliceWise(Conv2D(k2))(x, t)
    torch.testing.assert_close(every, sum(expected) / 3)


def test_slices_pass_straight_through_and_bad_shapes_are_refused():
    k2 = torch.ones(3, 3)
    m = SliceWise(Conv2D(k2))
    x = torch.randn(3, 1, 5, 5)
    torch.testing.assert_close(m(x, torch.zeros(3)), Conv2D(k2)(x, torch.zeros(3)))
    with pytest.raises(ValueError, match="cubic"):
        m(torch.randn(1, 1, 4, 5, 4), torch.zeros(1))
    with pytest.raises(ValueError, match="axes"):
        m.axes = (0, 3)
    with pytest.raises(ValueError, match="axes"):
        SliceWise(Conv2D(k2), axes=())
