"""Trainer mechanics: gradient accumulation, clipping, LR schedule, logging, exact resume."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))

from training_helpers import DropoutMLP, Points, cfg, linear, mse, noisy_mse  # noqa: E402

from brainsynth.config import TrainConfig  # noqa: E402
from brainsynth.diffusion.base import Cond  # noqa: E402
from brainsynth.errors import InputError  # noqa: E402
from brainsynth.training.logging import read_log  # noqa: E402
from brainsynth.training.losses import diffusion_loss  # noqa: E402
from brainsynth.training.trainer import Trainer, enable_grad_checkpointing, lr_factor  # noqa: E402


def _params(m: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in m.parameters()]


def test_grad_accumulation_matches_large_batch(tmp_path):
    """accum 2 x batch 2 == batch 4: the same 4 samples per step (consecutive runs of one epoch
    permutation), mean losses, so the same gradients and AdamW updates."""
    big = Trainer(linear(0), mse, Points(16), cfg(steps=3, batch_size=4), tmp_path / "a")
    acc = Trainer(
        linear(0), mse, Points(16), cfg(steps=3, batch_size=2, grad_accum=2), tmp_path / "b"
    )
    for _ in range(3):
        la, ga = big.train_step()
        lb, gb = acc.train_step()
        assert la == pytest.approx(lb, rel=1e-6) and ga == pytest.approx(gb, rel=1e-5)
    for p, q in zip(big.model.parameters(), acc.model.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-6)


def test_grad_clipping_bounds_the_update(tmp_path):
    """After one AdamW step, exp_avg = (1 - beta1) g: its norm shows the clipped gradient."""

    def huge(model, batch, generator):
        return 1e3 * mse(model, batch, generator)

    t = Trainer(linear(0), huge, Points(16), cfg(steps=1, grad_clip=0.5), tmp_path)
    loss, raw_norm = t.train_step()
    assert raw_norm > 0.5  # the logged norm is the norm before clipping
    beta1 = t.cfg.betas[0]
    used = torch.sqrt(sum((t.opt.state[p]["exp_avg"] ** 2).sum() for p in t.model.parameters()))
    assert float(used) / (1 - beta1) == pytest.approx(0.5, rel=1e-4)

    free = Trainer(linear(0), huge, Points(16), cfg(steps=1, grad_clip=0.0), tmp_path / "free")
    _, raw2 = free.train_step()
    used2 = torch.sqrt(
        sum((free.opt.state[p]["exp_avg"] ** 2).sum() for p in free.model.parameters())
    )
    assert float(used2) / (1 - beta1) == pytest.approx(raw2, rel=1e-4) and raw2 == pytest.approx(
        raw_norm
    )


def test_non_finite_gradient_skips_the_update(tmp_path):
    def bad(model, batch, generator):
        return mse(model, batch, generator) * float("nan")

    t = Trainer(linear(0), bad, Points(16), cfg(steps=1), tmp_path)
    before = _params(t.model)
    with pytest.warns(UserWarning, match="non-finite"):
        t.train_step()
    assert t.skipped_steps == 1 and t.step == 1
    for p, q in zip(before, t.model.parameters(), strict=True):
        assert torch.equal(p, q)


def test_lr_warmup_and_cosine():
    c = TrainConfig(steps=10, lr=1.0, lr_warmup=4, lr_schedule="cosine")
    f = [lr_factor(s, c) for s in range(10)]
    assert f[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert f[4] == pytest.approx(1.0) and f[-1] < 0.1 and all(a >= b for a, b in zip(f[3:], f[4:]))
    assert lr_factor(5, TrainConfig(steps=10)) == 1.0


def test_training_reduces_loss_and_writes_log(tmp_path):
    t = Trainer(linear(0), noisy_mse, Points(), cfg(steps=60, lr=5e-2, log_every=10), tmp_path)
    data = {"x": Points().x, "y": Points().y}
    with torch.no_grad():
        first = float(mse(t.model, data, None))
    t.fit(progress=False)
    with torch.no_grad():
        last = float(mse(t.model, data, None))
    assert last < 0.1 * first
    log = read_log(tmp_path)
    assert [r["step"] for r in log] == [10, 20, 30, 40, 50, 60]
    assert {"loss", "lr", "grad_norm", "sec_per_step"} <= set(log[0])
    assert (tmp_path / "config.yaml").exists()
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("step_*")) == [
        "step_0000050",
        "step_0000055",
        "step_0000060",
    ]  # ckpt_every 5, keep_last 3


def test_validation_hook_gets_the_ema_model(tmp_path):
    calls = []

    def val_fn(ema_model, step):
        calls.append((step, ema_model is t.ema.model, ema_model.training))
        return {"score": float(step)}

    t = Trainer(linear(0), mse, Points(), cfg(steps=4, val_every=2, log_every=4), tmp_path)
    t.val_fn = val_fn
    t.fit(progress=False)
    assert calls == [(2, True, False), (4, True, False)]
    log = read_log(tmp_path)
    assert log[0] == {"step": 2, "val/score": 2.0}
    assert log[1]["step"] == 4 and log[1]["val/score"] == 4.0 and "loss" in log[1]


def test_refuses_to_overwrite_a_run(tmp_path):
    Trainer(linear(0), mse, Points(), cfg(steps=2), tmp_path).fit(progress=False)
    with pytest.raises(InputError, match="--resume"):
        Trainer(linear(0), mse, Points(), cfg(steps=2), tmp_path).fit(progress=False)


def _run(out, steps, total, *, resume=False, model_fn=DropoutMLP, data=None, **kw):
    """A run whose config says ``total`` steps, stopped after ``steps`` (like a killed job)."""
    t = Trainer(model_fn(), noisy_mse, data or Points(12), cfg(steps=total, **kw), out)
    if resume:
        t.resume()
    t.cfg = cfg(steps=steps, **kw)  # stop early, as if killed right after the checkpoint
    t.fit(progress=False)
    t.cfg = cfg(steps=total, **kw)
    return t


def _assert_same_state(a: Trainer, b: Trainer) -> None:
    for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values(), strict=True):
        assert torch.equal(x, y)
    for x, y in zip(a.ema.state_dict().values(), b.ema.state_dict().values(), strict=True):
        assert torch.equal(x, y)
    sa, sb = a.opt.state_dict()["state"], b.opt.state_dict()["state"]
    for k in sa:
        for name in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(sa[k][name], sb[k][name])
    assert torch.equal(a.generator.get_state(), b.generator.get_state())
    assert torch.equal(torch.randn(3, generator=a.generator), torch.randn(3, generator=b.generator))


def test_resume_is_exact(tmp_path):
    """2N steps in one go == N steps, a new process-like Trainer resuming, N more: bitwise.

    Exercises the data position across an epoch boundary (12 items, batch 4: 3 batches per epoch),
    gradient accumulation, warm-up + cosine LR, EMA, dropout (global RNG), the noise generator."""
    kw = dict(batch_size=4, grad_accum=2, lr_warmup=3, lr_schedule="cosine", ckpt_every=5)
    torch.manual_seed(0)
    full = _run(tmp_path / "full", 10, 10, **kw)
    torch.manual_seed(0)
    _run(tmp_path / "half", 5, 10, **kw)
    torch.manual_seed(123)  # a fresh process would have another global RNG state: resume fixes it
    resumed = _run(tmp_path / "half", 10, 10, resume=True, **kw)
    assert resumed.step == 10
    _assert_same_state(full, resumed)
    # the log of the resumed run reads like the uninterrupted one (apart from timings)
    strip = lambda rs: [{k: v for k, v in r.items() if k != "sec_per_step"} for r in rs]  # noqa: E731
    assert strip(read_log(tmp_path / "half")) == strip(read_log(tmp_path / "full"))


def test_resume_drops_log_lines_after_the_checkpoint(tmp_path):
    torch.manual_seed(0)
    _run(tmp_path, 5, 10)
    with open(tmp_path / "log.jsonl", "a") as fh:  # steps done after the checkpoint, then a crash
        fh.write(json.dumps({"step": 6, "loss": 1.0}) + "\n" + '{"step": 7, "lo')
    torch.manual_seed(0)
    _run(tmp_path, 10, 10, resume=True)
    steps = [r["step"] for r in read_log(tmp_path)]
    assert steps == list(range(1, 11))


def test_resume_with_a_dataloader_is_exact(tmp_path):
    """A user DataLoader (with its own shuffling generator and set_epoch) also resumes exactly."""

    class EpochSampler(torch.utils.data.Sampler):
        def __init__(self, n):
            self.n, self.epoch = n, 0

        def set_epoch(self, e):
            self.epoch = e

        def __iter__(self):
            g = torch.Generator().manual_seed(100 + self.epoch)
            return iter(torch.randperm(self.n, generator=g).tolist())

        def __len__(self):
            return self.n

    def loader():
        return torch.utils.data.DataLoader(Points(12), batch_size=4, sampler=EpochSampler(12))

    torch.manual_seed(0)
    full = _run(tmp_path / "full", 8, 8, data=loader(), ckpt_every=4)
    torch.manual_seed(0)
    _run(tmp_path / "half", 4, 8, data=loader(), ckpt_every=4)
    resumed = _run(tmp_path / "half", 8, 8, resume=True, data=loader(), ckpt_every=4)
    _assert_same_state(full, resumed)


def test_workers_give_the_same_batches(tmp_path):
    seen: dict[int, list] = {0: [], 1: []}

    def recorder(w):
        def loss_fn(model, batch, generator):
            seen[w].extend(batch["index"].tolist())
            return mse(model, batch, generator)

        return loss_fn

    for w in (0, 1):
        t = Trainer(
            linear(0), recorder(w), Points(10), cfg(steps=4, num_workers=w), tmp_path / str(w)
        )
        for _ in range(4):
            t.train_step()
    assert seen[0] == seen[1] and len(seen[0]) == 16
    assert sorted(seen[0][:10]) == list(range(10))  # epoch 0 is a permutation


def test_diffusion_loss_composes_with_any_process(tmp_path):
    """A tiny process of our own (the NoiseProcess protocol) + a conditional model."""

    class Process:
        num_timesteps = 10

        def sample_t(self, batch, *, generator=None, device="cpu"):
            return torch.randint(0, 10, (batch,), generator=generator).to(device)

        def q_sample(self, x0, t, noise, y=None):
            a = (1 - t.float() / 10).view(-1, 1, 1, 1)
            return a * x0 + (1 - a) * noise

        def target(self, x0, t, noise, y=None):
            return noise

        def predict_x0(self, x_t, t, out, y=None):
            return x_t

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 1, 3, padding=1)

        def forward(self, x, t, cond):
            assert isinstance(cond, Cond) and cond.concat.shape == x.shape
            return self.conv(torch.cat([x, cond.concat], 1))

    class Images(torch.utils.data.Dataset):
        def __len__(self):
            return 8

        def __getitem__(self, i):
            g = torch.Generator().manual_seed(i)
            return {"image": torch.randn(1, 8, 8, generator=g), "mask": torch.ones(1, 8, 8)}

    loss = diffusion_loss(Process(), cond_fn=lambda b: Cond(concat=b["mask"]))
    torch.manual_seed(0)
    t = Trainer(Net(), loss, Images(), cfg(steps=3, lr=1e-2), tmp_path)
    t.fit(progress=False)
    assert len(read_log(tmp_path)) == 3


def test_grad_checkpointing_switch():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.grad_checkpointing = False

    m = nn.Sequential(Block(), nn.Linear(1, 1), Block())
    assert enable_grad_checkpointing(m) == 2 and all(b.grad_checkpointing for b in (m[0], m[2]))
    with pytest.warns(UserWarning, match="no checkpointing switch"):
        Trainer(linear(0), mse, Points(), cfg(grad_checkpointing=True), Path("unused"))
