"""Run by ``python -m torch.distributed.run --nproc_per_node 2 ddp_worker.py OUT`` from
test_distributed.py: a few DDP steps on gloo; each rank saves its weights and the indices it saw."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from training_helpers import Points, cfg, linear, mse  # noqa: E402

from brainsynth.training.distributed import cleanup_distributed, init_distributed  # noqa: E402
from brainsynth.training.trainer import Trainer  # noqa: E402


def main(out: Path) -> None:
    info = init_distributed("cpu")
    seen: list[int] = []

    def loss_fn(model, batch, generator):
        seen.extend(int(i) for i in batch["index"])
        return mse(model, batch, generator)

    trainer = Trainer(
        linear(0),
        loss_fn,
        Points(16),
        cfg(steps=6, batch_size=2, ckpt_every=3, log_every=2),
        out / "run",
    )
    trainer.fit(progress=False)

    # the same run stopped after its step-3 checkpoint, then resumed by a new trainer
    def part(steps):
        t = Trainer(linear(0), mse, Points(16), cfg(steps=6, batch_size=2, ckpt_every=3), out / "b")
        t.cfg = cfg(steps=steps, batch_size=2, ckpt_every=3)
        return t

    part(3).fit(progress=False)
    resumed = part(6)
    resumed.resume()
    resumed.fit(progress=False)

    torch.save(
        {
            "rank": info.rank,
            "world": info.world_size,
            "model": trainer.model.state_dict(),
            "ema": trainer.ema.state_dict(),
            "seen": seen,
            "noise": torch.randn(4, generator=trainer.generator),
            "resumed": resumed.model.state_dict(),
            "resumed_ema": resumed.ema.state_dict(),
        },
        out / f"rank{info.rank}.pt",
    )
    cleanup_distributed()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
