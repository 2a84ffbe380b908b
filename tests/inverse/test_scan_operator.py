"""The scan operator: model units -> scan units -> bias -> acquisition, and the bias field fitted
through a thick-slice acquisition (coordinate descent's field step) recovers a known field."""

from __future__ import annotations

import torch

from brainsynth.inverse.bias import BiasField
from brainsynth.inverse.operators import Identity
from brainsynth.inverse.scan import ScanOperator
from brainsynth.inverse.slices import SliceAcquisition

SHAPE = (20, 24, 30)


def _image() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = 0.5 + 0.3 * torch.rand((1, 1, *SHAPE), generator=g, dtype=torch.float64)
    return torch.nn.functional.avg_pool3d(x, 3, 1, 1)  # some spatial correlation


def test_fit_through_a_slice_acquisition_recovers_a_known_field():
    x = _image()
    acq = SliceAcquisition(3, 2, SHAPE[2], thickness=3.0, spacing=3.0).double()
    truth = BiasField(3, SHAPE, order=2)
    c_true = torch.linspace(-0.3, 0.3, truth.num_coefficients, dtype=torch.float64)[None]
    truth.coefficients = c_true
    y = acq(truth(x)) * 1.7  # an unknown global scale must not leak into the field's shape
    est = BiasField(3, SHAPE, order=2)
    c = est.fit_through(acq.forward, x, y, gn_steps=6)
    assert torch.allclose(c, c_true, atol=1e-6)
    # the field (zero-mean log) is the true one; the scale stays outside it
    assert torch.allclose(est.field(), truth.field(), atol=1e-6)


def test_fit_through_the_identity_matches_the_direct_fit():
    x = _image()
    truth = BiasField(3, SHAPE, order=3)
    g = torch.Generator().manual_seed(1)
    truth.coefficients = 0.1 * torch.randn(1, truth.num_coefficients, generator=g).double()
    y = truth(x)
    a, b = BiasField(3, SHAPE, order=3), BiasField(3, SHAPE, order=3)
    ca = a.fit(x, y, gn_steps=3)
    cb = b.fit_through(lambda t: t, x, y, gn_steps=4)
    assert torch.allclose(ca, cb, atol=1e-6)


def test_scan_operator_maps_model_units_and_refits_per_sample():
    x01 = _image().float()
    model = x01 * 2 - 1  # model units of the prior (background -1)
    ident = Identity(3, sigma=0.05)
    field = BiasField(3, SHAPE, order=1)
    op = ScanOperator(ident, field, scale=2.0, offset=-1.0)
    assert torch.allclose(op(model), x01, atol=1e-6)  # zero coefficients: y = x in scan units
    truth = BiasField(3, SHAPE, order=1, coefficients=torch.tensor([[0.2, -0.1, 0.3]]))
    y = truth(x01.double()).float()
    op.update(torch.cat([model, model]), y)  # two samples: one field each
    assert field.coefficients.shape == (2, 3) and op.updates == 1
    assert torch.allclose(
        field.coefficients.float(), truth.coefficients.float().expand(2, 3), atol=1e-3
    )
    assert torch.allclose(op(model), y, atol=1e-3)
