"""The training loop every method shares.

A method supplies ``loss_fn(model, batch, generator) -> scalar`` (it samples timesteps and noise
from the trainer's generator, so the whole run is reproducible and resumable), a dataset, and
optionally ``val_fn(ema_model, step) -> dict``.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset, default_collate
from tqdm import tqdm

from brainsynth.config import TrainConfig, to_dict
from brainsynth.training.batches import BatchOrder
from brainsynth.training.checkpoint import load_checkpoint, save_checkpoint
from brainsynth.training.distributed import barrier, init_distributed, pick_device
from brainsynth.training.ema import EMA

LossFn = Callable[[nn.Module, dict, torch.Generator], torch.Tensor]


class Trainer:
    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        dataset: Dataset,
        cfg: TrainConfig,
        out_dir: str | Path,
        *,
        val_fn: Callable[[nn.Module, int], dict] | None = None,
        config_dict: dict | None = None,
        device: torch.device | None = None,
    ):
        self.cfg = cfg
        self.out = Path(out_dir)
        self.device = device or pick_device(cfg.device)
        self.dist = init_distributed(self.device)
        torch.manual_seed(cfg.seed)  # same init on every rank
        self.model = model.to(self.device)
        self.ema = EMA(self.model, cfg.ema_decay, cfg.ema_start)
        self.ddp = (
            DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
            if self.dist.enabled
            else self.model
        )
        self.opt = torch.optim.AdamW(
            self.model.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay
        )
        self.loss_fn, self.dataset, self.val_fn = loss_fn, dataset, val_fn
        self.config_dict = config_dict if config_dict is not None else {"train": to_dict(cfg)}
        self.order = BatchOrder(
            len(dataset), cfg.batch_size, cfg.seed, self.dist.rank, self.dist.world_size
        )
        gen_device = self.device if self.device.type == "cuda" else "cpu"
        self.generator = torch.Generator(gen_device).manual_seed(cfg.seed * 1000 + self.dist.rank)
        self.step = 0
        use_bf16 = cfg.amp == "bf16" or (cfg.amp == "auto" and self.device.type == "cuda")
        self.autocast = (
            (lambda: torch.autocast(self.device.type, dtype=torch.bfloat16))
            if use_bf16
            else nullcontext
        )

    # -- data -----------------------------------------------------------------------------------
    def _batch(self) -> dict:
        items = [self.dataset[i] for i in self.order.next()]
        batch = default_collate(items)
        return {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in batch.items()}

    # -- checkpoints ----------------------------------------------------------------------------
    def _generator_states(self) -> list:
        """Every rank's noise-generator state (gathered on all ranks; rank 0 saves them)."""
        mine = self.generator.get_state().cpu()
        if not self.dist.enabled:
            return [mine]
        states: list = [None] * self.dist.world_size
        torch.distributed.all_gather_object(states, mine)
        return states

    def save(self) -> Path | None:
        barrier(self.dist)
        path = None
        gen_states = self._generator_states()
        if self.dist.is_main:
            state = {
                "optimizer": self.opt.state_dict(),
                "step": self.step,
                "order": self.order.state(),
                "generators": gen_states,
                "torch_rng": torch.get_rng_state(),
                "numpy_rng": np.random.get_state(),  # noqa: NPY002 - third-party code uses it
                "python_rng": random.getstate(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            }
            weights = {"model": self.model.state_dict(), "ema": self.ema.state_dict()}
            path = save_checkpoint(
                self.out, self.step, weights, state, self.config_dict, self.cfg.keep_last
            )
        barrier(self.dist)
        return path

    def resume(self, path: str | Path | None = None) -> None:
        ck = load_checkpoint(path or self.out)
        self.model.load_state_dict(ck["model"])
        self.ema.load_state_dict(ck["ema"])
        st = ck["state"]
        self.opt.load_state_dict(st["optimizer"])
        self.step = int(st["step"])
        self.order.load(st["order"])
        gens = st["generators"]
        if len(gens) != self.dist.world_size:
            raise RuntimeError(
                f"checkpoint was written by {len(gens)} ranks, resuming with {self.dist.world_size}"
            )
        self.generator.set_state(
            gens[self.dist.rank].to(self.generator.device)
            if self.generator.device.type == "cuda"
            else gens[self.dist.rank]
        )
        torch.set_rng_state(st["torch_rng"])
        np.random.set_state(st["numpy_rng"])  # noqa: NPY002
        random.setstate(st["python_rng"])

    # -- loop -----------------------------------------------------------------------------------
    def train_step(self) -> tuple[float, float]:
        self.ddp.train()
        total = 0.0
        for micro in range(self.cfg.grad_accum):
            sync = micro == self.cfg.grad_accum - 1 or not self.dist.enabled
            ctx = nullcontext() if sync else self.ddp.no_sync()
            with ctx:
                with self.autocast():
                    loss = (
                        self.loss_fn(self.ddp, self._batch(), self.generator) / self.cfg.grad_accum
                    )
                loss.backward()
            total += float(loss.detach())
        if self.cfg.grad_clip > 0:
            gnorm = float(
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
            )
        else:
            gnorm = float(
                torch.sqrt(
                    sum((p.grad**2).sum() for p in self.model.parameters() if p.grad is not None)
                )
            )
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.step += 1
        self.ema.update(self.model, self.step)
        return total, gnorm

    def fit(self, progress: bool = True) -> Path | None:
        self.out.mkdir(parents=True, exist_ok=True)
        log = open(self.out / "log.jsonl", "a") if self.dist.is_main else None  # noqa: SIM115
        tb = _tensorboard(self.out) if self.dist.is_main else None
        bar = tqdm(
            total=self.cfg.steps,
            initial=self.step,
            desc="train",
            disable=not (progress and self.dist.is_main),
        )
        last = None
        try:
            while self.step < self.cfg.steps:
                t0 = time.perf_counter()
                loss, gnorm = self.train_step()
                rec = {
                    "step": self.step,
                    "loss": loss,
                    "grad_norm": gnorm,
                    "lr": self.cfg.lr,
                    "sec_per_step": time.perf_counter() - t0,
                }
                if (
                    self.val_fn is not None
                    and self.cfg.val_every
                    and self.step % self.cfg.val_every == 0
                ):
                    rec.update(
                        {f"val/{k}": v for k, v in self.val_fn(self.ema.model, self.step).items()}
                    )
                if log is not None and (
                    self.step % self.cfg.log_every == 0
                    or self.step == self.cfg.steps
                    or "val/" in "".join(rec)
                ):
                    log.write(json.dumps(rec) + "\n")
                    log.flush()
                    if tb is not None:
                        for k, v in rec.items():
                            if k != "step":
                                tb.add_scalar(k, v, self.step)
                bar.set_postfix(loss=f"{loss:.4f}")
                bar.update(1)
                if self.step % self.cfg.ckpt_every == 0 or self.step == self.cfg.steps:
                    last = self.save()
        finally:
            bar.close()
            if log is not None:
                log.close()
            if tb is not None:
                tb.close()
        return last


def _tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # noqa: BLE001 - optional
        return None
    return SummaryWriter(str(out / "tensorboard"))
