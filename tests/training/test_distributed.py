"""Two gloo processes under torchrun on CPU: replicas stay identical, ranks see disjoint shards,
only rank 0 writes, resume is exact, and 2 ranks x batch b equals one process with batch 2b."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from training_helpers import Points, cfg, linear, mse  # noqa: E402

from brainsynth.training.distributed import DistInfo, get_dist_info, init_distributed  # noqa: E402
from brainsynth.training.logging import read_log  # noqa: E402
from brainsynth.training.trainer import Trainer  # noqa: E402

WORKER = Path(__file__).with_name("ddp_worker.py")


def test_single_process_without_torchrun(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert init_distributed("cpu") == DistInfo() and get_dist_info().is_main


@pytest.mark.slow
def test_two_gloo_ranks(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(WORKER),
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert (r0["rank"], r1["rank"], r0["world"]) == (0, 1, 2)

    # replicas identical (DDP all-reduces gradients; the EMA follows identical weights)
    for key in ("model", "ema"):
        for name in r0[key]:
            assert torch.equal(r0[key][name], r1[key][name]), f"{key}.{name} differs"
    # stopping at step 3 and resuming under DDP gives the uninterrupted run, bitwise
    for r in (r0, r1):
        for name in r["model"]:
            assert torch.equal(r["resumed"][name], r["model"][name])
            assert torch.equal(r["resumed_ema"][name], r["ema"][name])
    # per-rank noise streams differ
    assert not torch.equal(r0["noise"], r1["noise"])
    # 6 steps x batch 2 = 12 samples per rank; the 16-item epoch is split between the ranks
    assert len(r0["seen"]) == len(r1["seen"]) == 12
    first_epoch = r0["seen"][:8] + r1["seen"][:8]
    assert sorted(first_epoch) == list(range(16))

    # only rank 0 wrote: one log, checkpoints at 3 and 6
    run = tmp_path / "run"
    assert [r["step"] for r in read_log(run)] == [2, 4, 6]
    assert sorted(p.name for p in (run / "checkpoints").glob("step_*")) == [
        "step_0000003",
        "step_0000006",
    ]

    # 2 ranks x batch 2 == 1 process x batch 4 (same samples per step, mean of the means)
    single = Trainer(linear(0), mse, Points(16), cfg(steps=6, batch_size=4), tmp_path / "single")
    for _ in range(6):
        single.train_step()
    for name, p in single.model.state_dict().items():
        torch.testing.assert_close(r0["model"][name], p, rtol=1e-5, atol=1e-6)
