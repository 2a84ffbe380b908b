"""CUDA: the trainer with bf16 autocast (amp=auto), checkpoint and resume; skipped without CUDA."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from brainsynth.config import TrainConfig, to_dict
from brainsynth.methods.toy import (
    ToyConfig,
    ToyData,
    ToyDiscs,
    build_model,
    build_process,
    load_trained,
)
from brainsynth.training.logging import read_log
from brainsynth.training.losses import diffusion_loss
from brainsynth.training.trainer import Trainer


@pytest.mark.gpu
def test_bf16_training_and_resume_on_cuda(tmp_path):
    cfg = ToyConfig(data=ToyData(spatial_dims=3, size=16, num_items=32))
    train = TrainConfig(steps=6, batch_size=4, lr=1e-3, log_every=2, ckpt_every=3, device="cuda")

    def trainer() -> Trainer:
        torch.manual_seed(0)
        model = build_model(cfg)
        loss = diffusion_loss(build_process(cfg))
        return Trainer(model, loss, ToyDiscs(cfg.data), train, tmp_path, config_dict=to_dict(cfg))

    t = trainer()
    assert t.use_bf16 and t.device.type == "cuda"
    t.cfg = dataclasses.replace(train, steps=3)  # stop after the first checkpoint
    t.fit(progress=False)
    r = trainer()
    r.resume()
    assert r.step == 3
    r.fit(progress=False)
    log = read_log(tmp_path)
    assert [x["step"] for x in log] == [2, 3, 4, 6]
    assert all(torch.isfinite(torch.tensor(x["loss"])) for x in log)
    assert all(p.device.type == "cuda" for p in r.ema.model.parameters())
    # the checkpoint holds CPU tensors and loads for inference on a CPU
    _, model = load_trained(tmp_path, "cpu")
    assert next(model.parameters()).device.type == "cpu"
    for a, b in zip(model.parameters(), r.ema.model.parameters(), strict=True):
        assert torch.equal(a, b.cpu())
