"""Method ``toy``: Gaussian diffusion of synthetic discs (2D) or balls (3D) of two radii.

A seconds-long end-to-end exercise of the engine (data -> UNet + GaussianProcess -> Trainer ->
checkpoint -> DDIM sampling -> files) with no input data: images are generated on the fly, a pure
function of (seed, index). Not a model of anything.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from brainsynth.config import (
    DiffusionConfig,
    ModelConfig,
    SampleConfig,
    TrainConfig,
    dump_yaml,
    from_dict,
    to_dict,
)
from brainsynth.diffusion.gaussian import GaussianProcess
from brainsynth.io import Volume, write_bytes_atomic, write_text_atomic, write_volume
from brainsynth.io.outdir import claim_output_dir
from brainsynth.nn.unet import build_unet
from brainsynth.sampling import batch_progress, ddim_sample, ddpm_sample
from brainsynth.training.checkpoint import load_model_for_inference
from brainsynth.training.distributed import get_dist_info, seed_everything
from brainsynth.training.losses import diffusion_loss, randn_like
from brainsynth.training.trainer import Trainer

NAME = "toy"


@dataclass(frozen=True)
class ToyData:
    """Discs/balls with radius ``radii[i % 2] * size`` (+/- 10%), centre jittered by ``jitter *
    size``, soft edge, intensities in [-1, 1]."""

    spatial_dims: Literal[2, 3] = 2
    size: int = 16
    num_items: int = 256
    radii: tuple[float, float] = (0.18, 0.34)
    jitter: float = 0.1
    seed: int = 0


@dataclass(frozen=True)
class ToyConfig:
    data: ToyData = field(default_factory=ToyData)
    model: ModelConfig = field(default_factory=ModelConfig)
    # cosine: with only 200 steps DDPM's linear betas (made for 1000) stop at abar_T ~ 0.13, so
    # x_T would not be pure noise and sampling from N(0, I) would start off the training path
    diffusion: DiffusionConfig = field(
        default_factory=lambda: DiffusionConfig(num_timesteps=200, schedule="cosine")
    )
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            steps=300, batch_size=16, lr=2e-3, ema_decay=0.99, log_every=10, ckpt_every=100
        )
    )
    sample: SampleConfig = field(default_factory=lambda: SampleConfig(steps=50))


Config = ToyConfig


class ToyDiscs(Dataset):
    """Items ``{"image": (1, *S) float32 in [-1, 1], "label": 0 | 1 (small | large)}``."""

    def __init__(self, cfg: ToyData):
        self.cfg = cfg

    def __len__(self) -> int:
        return self.cfg.num_items

    def __getitem__(self, i: int) -> dict:
        c = self.cfg
        if not 0 <= i < c.num_items:
            raise IndexError(i)
        rng = np.random.default_rng([c.seed, i])
        label = i % 2
        radius = c.radii[label] * c.size * rng.uniform(0.9, 1.1)
        centre = (c.size - 1) / 2 + rng.uniform(-c.jitter, c.jitter, c.spatial_dims) * c.size
        grid = np.meshgrid(*[np.arange(c.size)] * c.spatial_dims, indexing="ij")
        dist = np.sqrt(sum((g - x) ** 2 for g, x in zip(grid, centre)))
        inside = 1.0 / (1.0 + np.exp(-(radius - dist) / 0.7))  # soft edge, ~1 voxel wide
        image = (2.0 * inside - 1.0).astype(np.float32)
        return {"image": torch.from_numpy(image)[None], "label": label}


def build_model(cfg: ToyConfig) -> nn.Module:
    return build_unet(
        cfg.model.preset,
        cfg.data.spatial_dims,
        1,
        1,
        grad_checkpointing=cfg.train.grad_checkpointing,
    )


def build_process(cfg: ToyConfig) -> GaussianProcess:
    d = cfg.diffusion
    return GaussianProcess(d.num_timesteps, d.schedule, d.prediction, d.beta_start, d.beta_end)


def _val_fn(cfg: ToyConfig, process: GaussianProcess, device: torch.device):
    """Denoising loss of the EMA model on 16 fixed items with fixed noise: comparable over steps."""
    items = ToyDiscs(ToyData(**{**to_dict(cfg.data), "seed": cfg.data.seed + 1, "num_items": 16}))
    x0 = torch.stack([items[i]["image"] for i in range(len(items))]).to(device)
    loss = diffusion_loss(process)

    def val_fn(ema_model: nn.Module, step: int) -> dict:
        g = torch.Generator().manual_seed(1234)
        return {"loss": float(loss(ema_model, {"image": x0}, g))}

    return val_fn


def train(
    cfg: ToyConfig,
    data: Path | None,
    out: Path,
    device: torch.device | str | None = None,
    resume: bool = False,
) -> Path:
    """Train the toy model into ``out`` (checkpoints/, log.jsonl, config.yaml)."""
    if data is not None:
        warnings.warn("method toy generates its own data: --data is ignored", stacklevel=2)
    out = Path(out)
    seed_everything(cfg.train.seed)  # the same initial weights on every rank
    model = build_model(cfg)
    process = build_process(cfg)
    trainer = Trainer(
        model,
        diffusion_loss(process),
        ToyDiscs(cfg.data),
        cfg.train,
        out,
        val_fn=None,
        config_dict=to_dict(cfg),
        device=device,
        meta={"method": NAME},
    )
    trainer.val_fn = _val_fn(cfg, process, trainer.device)
    if resume:
        trainer.resume()
    if get_dist_info().is_main:
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / "config.yaml", dump_yaml(cfg))
    trainer.fit()
    return out


def load_trained(
    ckpt: str | Path, device: torch.device | str = "cpu"
) -> tuple[ToyConfig, nn.Module]:
    """(config, EMA model in eval mode) of a toy run or checkpoint folder."""
    config, weights = load_model_for_inference(ckpt, method=NAME)
    cfg = from_dict(ToyConfig, config)
    model = build_model(cfg)
    model.load_state_dict(weights)
    return cfg, model.to(device).eval()


def sample(
    ckpt: str | Path,
    out: str | Path,
    *,
    n: int = 4,
    steps: int | None = None,
    eta: float | None = None,
    sampler: Literal["ddim", "ddpm"] | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    batch_size: int = 16,
    progress=None,
    overwrite: bool = False,
) -> list[Path]:
    """Generate ``n`` images: ``samples.npy`` (n, 1, *S) in [-1, 1], NIfTI files for 3D, a PNG
    montage and ``config.yaml`` (the run's config with the sampling values used). ``out`` must be
    empty unless ``overwrite`` (then the earlier samples there are removed first)."""
    out = claim_output_dir(out, SAMPLE_FILES, overwrite=overwrite)
    cfg, model = load_trained(ckpt, device)
    s = dataclasses.replace(
        cfg.sample,
        sampler=sampler or cfg.sample.sampler,
        steps=cfg.sample.steps if steps is None else steps,
        eta=cfg.sample.eta if eta is None else eta,
    )
    x_all = _generate(cfg, model, s, n, seed, device, batch_size, progress)
    paths = [_save_npy(out / "samples.npy", x_all)]
    if cfg.data.spatial_dims == 3:
        for i in range(n):
            vol = Volume((x_all[i, 0] + 1) / 2, np.eye(4))
            paths.append(write_volume(vol, out / f"sample_{i:03d}.nii.gz"))
    paths.append(_montage(x_all, out / "montage.png"))
    resolved = {"ckpt": str(ckpt), "n": n, "seed": seed, **to_dict(cfg), "sample": to_dict(s)}
    write_text_atomic(out / "config.yaml", dump_yaml(resolved))
    return paths


SAMPLE_FILES = ("samples.npy", "sample_*.nii.gz", "montage.png", "config.yaml")


def _generate(cfg: ToyConfig, model, s, n: int, seed: int, device, batch_size: int, progress):
    """(n, 1, *S) samples in [-1, 1], in batches of ``batch_size``, from one seeded generator."""
    process = build_process(cfg)
    g = torch.Generator().manual_seed(seed)
    shape = (1, *[cfg.data.size] * cfg.data.spatial_dims)
    kw = {"steps": s.steps, "generator": g, "clip_x0": (-1.0, 1.0)}
    chunks, n_batches = [], -(-n // batch_size)
    for start in range(0, n, batch_size):
        b = min(batch_size, n - start)
        kw["progress"] = batch_progress(progress, start // batch_size, n_batches)
        x_T = randn_like(torch.empty((b, *shape), device=device), g)
        if s.sampler == "ddim":
            x = ddim_sample(model, process, x_T, eta=s.eta, **kw)
        else:
            x = ddpm_sample(model, process, x_T, **kw)
        chunks.append(x.clamp(-1, 1).float().cpu())
    return torch.cat(chunks).numpy()


def _save_npy(path: Path, x: np.ndarray) -> Path:
    import io

    buf = io.BytesIO()
    np.save(buf, x)
    write_bytes_atomic(path, buf.getvalue())
    return path


def _montage(x: np.ndarray, path: Path) -> Path:
    """A grid of 2D images, or of the middle axial slices of 3D ones, in [-1, 1]."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from brainsynth.io import atomic_path

    imgs = [xi[0] if xi.ndim == 3 else xi[0, :, :, xi.shape[-1] // 2] for xi in x]
    cols = min(len(imgs), 8)
    rows = -(-len(imgs) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.2 * cols, 1.2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img in zip(axes.flat, imgs):
        ax.imshow(img.T, origin="lower", cmap="gray", vmin=-1, vmax=1)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
    return path
