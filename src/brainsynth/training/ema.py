"""Exponential moving average (EMA) of a network's weights, kept as a separate frozen copy.

Rule, applied after optimiser step ``step`` (1, 2, ...):

* ``step <= start``: the EMA copies the weights. Averaging in the random initialisation would
  bias early EMA weights towards it (the Adam-style bias correction is the other cure; a plain
  copy during a warm-up is simpler to reason about and to resume).
* ``step > start``: ``ema = decay * ema + (1 - decay) * p`` for every floating-point parameter.

Buffers (norm statistics, step counters) are copied, never averaged. ``decay = 0`` makes the EMA a
copy of the model; ``decay = 1`` freezes it.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside DDP / ``torch.compile`` wrappers."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod  # type: ignore[assignment]
        else:
            return model


class EMA:
    """``EMA(model, decay, start)``; ``ema.model`` is the averaged copy (eval mode, no grads)."""

    def __init__(self, model: nn.Module, decay: float = 0.999, start: int = 0):
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must be in [0, 1], got {decay}")
        self.decay = float(decay)
        self.start = int(start)
        self.model = copy.deepcopy(unwrap(model)).eval()
        self.model.requires_grad_(False)

    def decay_at(self, step: int) -> float:
        """The decay used by the update after optimiser step ``step`` (0 means copy)."""
        return 0.0 if step <= self.start else self.decay

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        src = unwrap(model)
        d = self.decay_at(step)
        avg_e: list[torch.Tensor] = []
        avg_p: list[torch.Tensor] = []
        for (name, e), p in zip(self.model.named_parameters(), src.parameters(), strict=True):
            if e.shape != p.shape:
                raise ValueError(f"EMA parameter {name} has shape {e.shape}, model {p.shape}")
            if e.is_floating_point():
                avg_e.append(e)
                avg_p.append(p.detach().to(e.device))
            else:
                e.copy_(p)
        if avg_e:
            if d == 0.0:
                torch._foreach_copy_(avg_e, avg_p)
            else:
                # lerp: e + (1 - d) (p - e) == d e + (1 - d) p
                torch._foreach_lerp_(avg_e, avg_p, 1.0 - d)
        for eb, b in zip(self.model.buffers(), src.buffers(), strict=True):
            eb.copy_(b)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state)
