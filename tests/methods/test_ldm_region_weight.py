"""``diffusion.region_weight`` of ldm: the latent loss weight is 1 + strength x the training label
maps' ventricle fraction, left-right symmetric (the mirrored images share it), of mean 1, largest
where every training subject has ventricle; a negative strength is refused."""

from __future__ import annotations

import pytest
import torch

from brainsynth.methods.ldm.config import LDMDiffusionConfig
from brainsynth.methods.ldm.data import region_weight


def test_region_weight_is_symmetric_mean_one_and_peaks_in_the_ventricles(restore_cache):
    # the tiny cache: 16 x 20 x 16 at 2 mm, every subject's ventricles near the centre
    w = region_weight(restore_cache, 1, (16, 20, 16), (8, 10, 8), 10.0)
    assert w.shape == (1, 1, 8, 10, 8)
    torch.testing.assert_close(w.mean(), torch.tensor(1.0))
    torch.testing.assert_close(w, w.flip(2))
    assert w.max() > 3 * w.min()  # 1 + 10 f against 1, rescaled alike
    far = w[0, 0, 0, 0, 0]  # a corner: no subject has ventricle there
    torch.testing.assert_close(far, w.min())
    centre = w[0, 0, 3:5, 4:7, 3:5]
    assert centre.max() == w.max()
    unweighted = region_weight(restore_cache, 1, (16, 20, 16), (8, 10, 8), 0.0)
    torch.testing.assert_close(unweighted, torch.ones_like(unweighted))


def test_negative_region_weight_is_refused():
    with pytest.raises(ValueError, match="region_weight"):
        LDMDiffusionConfig(region_weight=-1.0)
