"""The training loop every method shares.

A method supplies ``loss_fn(model, batch, generator) -> scalar`` (it samples timesteps and noise
from the trainer's generator, so the whole run is reproducible and resumable), a dataset, and
optionally ``val_fn(ema_model, step) -> dict`` of metrics::

    trainer = Trainer(model, diffusion_loss(process), dataset, cfg.train, out, config_dict=...)
    if resume:
        trainer.resume()
    trainer.fit()

What one optimiser step does: ``grad_accum`` micro-batches of ``batch_size`` (per rank) are
forwarded under bf16 autocast (CUDA only, ``amp``), their mean-loss gradients are accumulated
(DDP all-reduces once, on the last micro-batch), the global gradient norm is clipped to
``grad_clip``, AdamW steps (a step with a non-finite gradient is skipped and counted), the LR
schedule advances and the EMA is updated.

Data: a ``Dataset`` (batched, shuffled and sharded by the trainer) or a ready ``DataLoader``, read
as an endless, resumable stream (:mod:`brainsynth.training.streams`). For bitwise resume a
dataset's ``__getitem__`` must be a function of the index (or draw only from the global RNGs with
``num_workers=0``: their states are checkpointed).

Reproducibility: noise streams and global RNGs are seeded from ``(seed, rank)``; the trainer's
generator is a CPU generator, so the random draws of a loss do not depend on the device.
"""

from __future__ import annotations

import random
import time
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from brainsynth.config import TrainConfig, dump_yaml, to_dict
from brainsynth.io import write_text_atomic
from brainsynth.nn.layout import set_memory_format
from brainsynth.training.checkpoint import (
    load_checkpoint,
    refuse_existing_run,
    save_checkpoint,
)
from brainsynth.training.distributed import (
    all_gather_objects,
    all_reduce_mean,
    barrier,
    derive_seed,
    init_distributed,
    pick_device,
)
from brainsynth.training.ema import EMA, unwrap
from brainsynth.training.logging import RunLogger
from brainsynth.training.streams import _DatasetStream, _LoaderStream
from brainsynth.training.utils import (
    _GLOBAL,
    _NOISE,
    _diff,
    _rng_state,
    _set_rng_state,
    cpu_has_bf16,
    enable_grad_checkpointing,
    lr_factor,
    to_device,
)

__all__ = [
    "LossFn",
    "Trainer",
    "ValFn",
    "cpu_has_bf16",
    "enable_grad_checkpointing",
    "lr_factor",
    "to_device",
]

LossFn = Callable[[nn.Module, Any, torch.Generator], torch.Tensor]
ValFn = Callable[[nn.Module, int], dict]


class Trainer:
    """See the module docstring. ``train_loader``: a ``Dataset`` (recommended: the trainer batches,
    shuffles and shards it) or a ``DataLoader``. ``device`` defaults to ``cfg.device``.
    ``config_dict``: the resolved config stored in every checkpoint (default: ``{"train": cfg}``);
    ``meta``: extra JSON-able keys for the checkpoints' meta.json (e.g. ``{"method": "toy"}``)."""

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        train_loader: Dataset | DataLoader,
        cfg: TrainConfig,
        out_dir: str | Path,
        *,
        val_fn: ValFn | None = None,
        config_dict: dict | None = None,
        device: torch.device | str | None = None,
        collate_fn: Callable | None = None,
        find_unused_parameters: bool = False,
        meta: dict | None = None,
    ):
        self.cfg = cfg
        self.out = Path(out_dir)
        self.device = pick_device(device if device is not None else cfg.device)
        self.dist = init_distributed(self.device)
        self.loss_fn, self.val_fn = loss_fn, val_fn
        self.config_dict = config_dict if config_dict is not None else {"train": to_dict(cfg)}
        self.meta = dict(meta or {})
        self._setup_model(model, find_unused_parameters)
        self._setup_optimizer()
        self._seed()
        if isinstance(train_loader, DataLoader):
            self.data: _DatasetStream | _LoaderStream = _LoaderStream(
                train_loader, cfg.seed, self.dist.rank
            )
        else:
            self.data = _DatasetStream(self, train_loader, collate_fn)
        self._setup_precision()
        self.step = 0
        self.skipped_steps = 0
        self.resumed_from: Path | None = None
        self.last_checkpoint: Path | None = None

    # -- setup (called once, by __init__) ---------------------------------------------------------
    def _setup_model(self, model: nn.Module, find_unused_parameters: bool) -> None:
        """The model on the device (checkpointing switched on if asked), its EMA and DDP wrapper."""
        cfg = self.cfg
        self.model = unwrap(model).to(self.device)
        # "auto" stays contiguous under DDP: its gradient buckets were not measured channels-last
        auto_ddp = self.dist.enabled and cfg.memory_format == "auto"
        set_memory_format(self.model, self.device, "contiguous" if auto_ddp else cfg.memory_format)
        if cfg.grad_checkpointing and enable_grad_checkpointing(self.model) == 0:
            warnings.warn(
                "train.grad_checkpointing is set but the model has no checkpointing switch",
                stacklevel=3,
            )
        self.ema = EMA(self.model, cfg.ema_decay, cfg.ema_start)
        if self.dist.enabled:
            self.ddp: nn.Module = DistributedDataParallel(
                self.model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=find_unused_parameters,
            )
        else:
            self.ddp = self.model

    def _setup_optimizer(self) -> None:
        """AdamW over the trainable parameters and the LR schedule (:func:`lr_factor`)."""
        cfg = self.cfg
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("the model has no trainable parameters")
        self.opt = torch.optim.AdamW(
            params,
            lr=cfg.lr,
            betas=cfg.betas,
            weight_decay=cfg.weight_decay,
            foreach=True,
        )
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: lr_factor(s, cfg))

    def _seed(self) -> None:
        """The trainer's noise generator and the global RNGs, seeded from (seed, rank)."""
        cfg, rank = self.cfg, self.dist.rank
        self.generator = torch.Generator("cpu").manual_seed(derive_seed(cfg.seed, rank, _NOISE))
        g = derive_seed(cfg.seed, rank, _GLOBAL)
        torch.manual_seed(g)  # dropout & co.: different per rank, reproducible
        np.random.seed(g % 2**32)  # noqa: NPY002
        random.seed(g)

    def _setup_precision(self) -> None:
        """bf16 autocast: ``amp: bf16``, or ``auto`` on CUDA (warns on a CPU without bf16)."""
        cfg = self.cfg
        self.use_bf16 = cfg.amp == "bf16" or (cfg.amp == "auto" and self.device.type == "cuda")
        if self.use_bf16 and self.device.type == "cpu" and not cpu_has_bf16():
            warnings.warn(
                "bf16 autocast on this CPU (no AVX512-BF16/AMX) is very slow", stacklevel=3
            )

    # -- pieces -----------------------------------------------------------------------------------
    def autocast(self):
        if not self.use_bf16:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def next_batch(self) -> Any:
        return to_device(self.data.next(), self.device, non_blocking=self.device.type == "cuda")

    def train_step(self) -> tuple[float, float]:
        """One optimiser step; returns (mean loss over micro-batches on this rank, grad norm)."""
        cfg = self.cfg
        self.ddp.train()
        self.opt.zero_grad(set_to_none=True)
        total = torch.zeros((), device=self.device)
        for micro in range(cfg.grad_accum):
            batch = self.next_batch()
            last = micro == cfg.grad_accum - 1
            sync = nullcontext() if (last or not self.dist.enabled) else self.ddp.no_sync()  # type: ignore[operator]
            with sync:
                with self.autocast():
                    loss = self.loss_fn(self.ddp, batch, self.generator)
                if loss.ndim != 0:
                    raise ValueError(f"loss_fn must return a scalar, got shape {tuple(loss.shape)}")
                (loss.float() / cfg.grad_accum).backward()
            total += loss.detach().float()
        params = [p for p in self.model.parameters() if p.grad is not None]
        max_norm = cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True)
        if torch.isfinite(grad_norm):
            self.opt.step()
        else:  # every rank sees the same all-reduced gradients, so every rank skips
            self.skipped_steps += 1
            warnings.warn(
                f"step {self.step + 1}: non-finite gradient, update skipped", stacklevel=2
            )
        self.opt.zero_grad(set_to_none=True)
        with warnings.catch_warnings():  # after a skipped update torch warns about the order
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
            self.sched.step()
        self.step += 1
        self.ema.update(self.model, self.step)
        return float(total) / cfg.grad_accum, float(grad_norm)

    # -- checkpoints ------------------------------------------------------------------------------
    def state(self, rng: list[dict]) -> dict:
        return {
            "step": self.step,
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "data": self.data.state(),
            "rng": rng,
            "world_size": self.dist.world_size,
            "skipped_steps": self.skipped_steps,
        }

    def save(self) -> Path | None:
        """Write a checkpoint of the current step (rank 0; every rank must call it)."""
        barrier(self.dist)
        rng = all_gather_objects(_rng_state(self.generator), self.dist)
        path = None
        if self.dist.is_main:
            weights = {"model": self.model.state_dict(), "ema": self.ema.state_dict()}
            path = save_checkpoint(
                self.out,
                self.step,
                weights,
                self.state(rng),
                self.config_dict,
                keep=self.cfg.keep_last,
                extra_meta={**self.meta, "world_size": self.dist.world_size},
            )
        barrier(self.dist)
        self.last_checkpoint = path
        return path

    def resume(self, path: str | Path | None = None) -> Path:
        """Restore weights, EMA, optimiser, schedule, RNGs and data position of a checkpoint
        (default: the latest one in ``out_dir``)."""
        ck = load_checkpoint(path if path is not None else self.out)
        self.model.load_state_dict(ck["model"])
        self.ema.load_state_dict(ck["ema"])
        st = ck["state"]
        self.opt.load_state_dict(st["optimizer"])
        self.sched.load_state_dict(st["scheduler"])
        # hyperparameters follow the config given now (identical for a plain resume), so a run
        # can be continued with e.g. more steps or another LR; the moments stay
        cfg = self.cfg
        self.sched.base_lrs = [cfg.lr] * len(self.opt.param_groups)
        for group in self.opt.param_groups:
            group.update(betas=cfg.betas, weight_decay=cfg.weight_decay)
            group["lr"] = cfg.lr * lr_factor(int(st["step"]), cfg)
        self.step = int(st["step"])
        self.skipped_steps = int(st.get("skipped_steps", 0))
        self.data.load(st["data"])
        rng = st["rng"]
        if len(rng) == self.dist.world_size:
            _set_rng_state(rng[self.dist.rank], self.generator)
        else:
            warnings.warn(
                f"checkpoint written by {len(rng)} ranks, resuming with {self.dist.world_size}: "
                "random streams are reseeded (training continues, not bit-identically)",
                stacklevel=2,
            )
            self.generator.manual_seed(
                derive_seed(self.cfg.seed, self.dist.rank, _NOISE, self.step)
            )
        changed = [  # a longer (or shorter) run is the usual reason to resume with a change
            d
            for d in _diff(ck["meta"].get("config", {}), self.config_dict)
            if not d.split(":")[0].endswith("steps") or not d.endswith(f"-> {self.cfg.steps}")
        ]
        if changed and self.dist.is_main:
            warnings.warn(
                f"resuming {ck['dir']} with a different config: {', '.join(changed[:8])}",
                stacklevel=2,
            )
        self.resumed_from = ck["dir"]
        return ck["dir"]

    # -- loop -------------------------------------------------------------------------------------
    def _validate(self) -> dict:
        metrics: dict = {}
        if self.dist.is_main and self.val_fn is not None:
            with torch.no_grad():
                metrics = {f"val/{k}": v for k, v in self.val_fn(self.ema.model, self.step).items()}
        barrier(self.dist)
        return metrics

    def fit(self, progress: bool = True) -> Path | None:
        """Train until ``cfg.steps``; returns the last checkpoint folder (rank 0; None elsewhere)."""
        cfg = self.cfg
        main = self.dist.is_main
        if self.resumed_from is None and self.step == 0:
            refuse_existing_run(self.out)
        if main:
            self.out.mkdir(parents=True, exist_ok=True)
            if not (self.out / "config.yaml").exists():
                write_text_atomic(self.out / "config.yaml", dump_yaml(self.config_dict))
        logger = RunLogger(self.out, enabled=main)
        logger.truncate_after(self.step)
        bar = tqdm(
            total=cfg.steps,
            initial=self.step,
            desc="train",
            unit="step",
            disable=not (progress and main),
            dynamic_ncols=True,
        )
        loss_sum, gn_sum, n_since, t_since = 0.0, 0.0, 0, 0.0
        try:
            while self.step < cfg.steps:
                lr = self.opt.param_groups[0]["lr"]
                t0 = time.perf_counter()
                loss, gnorm = self.train_step()
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
                t_since += time.perf_counter() - t0
                loss_sum, gn_sum, n_since = loss_sum + loss, gn_sum + gnorm, n_since + 1
                step = self.step
                is_log = cfg.log_every > 0 and step % cfg.log_every == 0 or step == cfg.steps
                is_val = self.val_fn is not None and cfg.val_every > 0 and step % cfg.val_every == 0
                rec: dict = {}
                if is_log:
                    mean = all_reduce_mean(
                        torch.tensor(loss_sum / n_since, device=self.device), self.dist
                    )
                    rec = {
                        "loss": float(mean),
                        "lr": lr,
                        "grad_norm": gn_sum / n_since,
                        "sec_per_step": t_since / n_since,
                        "skipped_steps": self.skipped_steps,
                    }
                    loss_sum, gn_sum, n_since, t_since = 0.0, 0.0, 0, 0.0
                if is_val:
                    rec.update(self._validate())
                if rec:
                    logger.log(step, rec)
                bar.set_postfix(loss=f"{loss:.4g}", refresh=False)
                bar.update(1)
                if (cfg.ckpt_every > 0 and step % cfg.ckpt_every == 0) or step == cfg.steps:
                    self.save()
        finally:
            bar.close()
            logger.close()
        return self.last_checkpoint or self.resumed_from
