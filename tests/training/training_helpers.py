"""Small models, datasets and losses shared by the training tests (and the DDP worker script)."""

from __future__ import annotations

import torch
from torch import nn

from brainsynth.config import TrainConfig


class Points(torch.utils.data.Dataset):
    """``{"x": (3,), "y": (), "index": int}``: a noisy linear target, a pure function of the index."""

    def __init__(self, n: int = 16):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 3, generator=g)
        self.y = self.x @ torch.tensor([1.0, -2.0, 0.5]) + 0.1

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"x": self.x[i], "y": self.y[i], "index": i}


def mse(model: nn.Module, batch: dict, generator: torch.Generator) -> torch.Tensor:
    """Deterministic given the batch (the generator is not used)."""
    return ((model(batch["x"]).squeeze(-1) - batch["y"]) ** 2).mean()


def noisy_mse(model: nn.Module, batch: dict, generator: torch.Generator) -> torch.Tensor:
    """Draws from the trainer's generator, as diffusion losses do."""
    noise = torch.randn(batch["y"].shape, generator=generator) * 0.1
    return ((model(batch["x"]).squeeze(-1) - batch["y"] - noise.to(batch["y"])) ** 2).mean()


class DropoutMLP(nn.Module):
    """Uses the global RNG (dropout) and has a buffer, to check both are restored on resume."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, 16), nn.GELU(), nn.Dropout(0.2), nn.Linear(16, 1))
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.calls += 1
        return self.net(x)


def cfg(**kw) -> TrainConfig:
    base = {
        "steps": 10,
        "batch_size": 4,
        "lr": 1e-2,
        "ema_decay": 0.9,
        "log_every": 1,
        "ckpt_every": 5,
        "device": "cpu",
        "grad_clip": 0.0,
    }
    return TrainConfig(**{**base, **kw})


def linear(seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(3, 1)
