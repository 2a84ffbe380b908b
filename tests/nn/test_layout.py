"""Channels-last weights (nn.layout): same values as contiguous, trained the same, checkpoints
load into either layout."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from brainsynth.config import TrainConfig
from brainsynth.nn.layout import has_conv3d, set_memory_format, wants_channels_last
from brainsynth.nn.unet import build_unet
from brainsynth.training.checkpoint import load_model_for_inference
from brainsynth.training.trainer import Trainer

CL = torch.channels_last_3d


class Vols(torch.utils.data.Dataset):
    def __init__(self, n: int = 8):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 1, 8, 8, 8, generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"x": self.x[i]}


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv3d(1, 4, 3, padding=1), nn.GroupNorm(2, 4), nn.SiLU(), nn.Conv3d(4, 1, 3, padding=1)
    )


def _loss(model: nn.Module, batch: dict, generator: torch.Generator) -> torch.Tensor:
    return (model(batch["x"]) - batch["x"].flip(-1)).abs().mean()


def test_auto_means_channels_last_for_3d_convs_on_the_cpu_only():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert has_conv3d(_net()) and not has_conv3d(nn.Linear(3, 1))
    assert wants_channels_last(_net(), cpu, "auto") and not wants_channels_last(
        _net(), cuda, "auto"
    )
    assert not wants_channels_last(nn.Conv2d(1, 1, 3), cpu, "auto")
    assert not wants_channels_last(_net(), cpu, "contiguous")
    assert wants_channels_last(_net(), cuda, "channels_last")


def test_channels_last_unet_gives_the_same_output():
    torch.manual_seed(0)
    net = build_unet("tiny", 3, 1, 1).eval()
    fast = set_memory_format(copy.deepcopy(net), "cpu")
    w5 = [p for p in fast.parameters() if p.dim() == 5]
    assert w5 and all(p.is_contiguous(memory_format=CL) for p in w5)
    x, t = torch.randn(2, 1, 16, 16, 16), torch.tensor([10, 900])
    with torch.no_grad():
        torch.testing.assert_close(fast(x, t), net(x, t), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("layout", ["channels_last", "contiguous"])
def test_trained_weights_match_and_load_into_a_contiguous_model(tmp_path, layout):
    def run(fmt, out):
        cfg = TrainConfig(
            steps=4,
            batch_size=2,
            lr=1e-2,
            log_every=1,
            ckpt_every=0,
            device="cpu",
            memory_format=fmt,
        )
        t = Trainer(_net(), _loss, Vols(), cfg, out)
        t.fit(progress=False)
        return t

    ref = run("contiguous", tmp_path / "ref")
    t = run(layout, tmp_path / "run")
    w = t.model[3].weight  # (1, 4, 3, 3, 3): the two layouts differ (a 1-channel input would not)
    assert w.is_contiguous(memory_format=CL) == (layout == "channels_last")
    for a, b in zip(t.model.parameters(), ref.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    _, ema = load_model_for_inference(tmp_path / "run")
    plain = _net()
    plain.load_state_dict(ema)  # contiguous on disk
    for a, b in zip(plain.parameters(), t.ema.model.parameters(), strict=True):
        assert torch.equal(a, b.detach())
