"""Training the deform method in two stages.

``register``: the affine template of the training split (``template.py``), then DiffuseMorph
trained to register the template (moving) to every aligned training subject (fixed), with the
denoising loss on the subject and the registration loss (``registration.diffusemorph``).

``fields``: the trained registration's velocity field of every training subject (and of its
mirror), average-pooled by ``fields.downsample`` and divided by their global std, cached in
``RUN/fields/velocities.pt``; the sharp template (``refine.py``: the subjects brought back through
the inverse maps and averaged), which generated scans warp; then a Gaussian diffusion model of the
fields, unconditional or conditioned on ``fields.conditioning`` (each field on its subject's
covariates from the cache manifest, with condition dropout for guidance: ``field_covariates``).

Run layout: ``RUN/template/``, ``RUN/register/`` and ``RUN/fields/`` (each a trainer run)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from monai.losses import LocalNormalizedCrossCorrelationLoss
from torch import Tensor, nn
from torch.utils.data import Dataset

from brainsynth.config import to_dict
from brainsynth.data.cache import read_cache_info
from brainsynth.data.covariates import CovariateNormaliser
from brainsynth.errors import InputError
from brainsynth.methods.conditioning import covariate_vectors, training_rows
from brainsynth.methods.conditioning import diffusion_loss as conditioned_loss
from brainsynth.methods.deform.config import DeformConfig
from brainsynth.methods.deform.networks import (
    NAME,
    OFFSET,
    SCALE,
    build_fields_model,
    build_register,
    fields_multiple,
    fields_process,
    load_network,
    register_process,
)
from brainsynth.methods.deform.refine import load_sharp_template, sharp_template
from brainsynth.methods.deform.template import FOLDER, Aligned, build_template, load_template
from brainsynth.methods.ldm.data import mirror_lr, pad_to, padded_shape
from brainsynth.registration.diffusemorph import DiffuseMorph
from brainsynth.registration.svf import smoothness, warp
from brainsynth.training.distributed import seed_everything
from brainsynth.training.losses import diffusion_loss, randn_like
from brainsynth.training.trainer import Trainer

STAGES = ("register", "fields")
VELOCITIES = "velocities.pt"


class Images(Dataset):
    """``{"image": (1, *S)}`` in model units: aligned subjects, then their left-right mirrors."""

    def __init__(self, images: Tensor, mirror: bool):
        self.images = images * SCALE + OFFSET
        self.mirror = mirror

    def __len__(self) -> int:
        return len(self.images) * (2 if self.mirror else 1)

    def __getitem__(self, i: int) -> dict:
        n = len(self.images)
        x = self.images[i % n]
        if i >= n:
            x = mirror_lr(x[None], x.shape[1])[0]
        return {"image": x}


def register_loss(cfg: DeformConfig, template: Tensor):
    """The paper's eq. 7 for template -> subject pairs (``template`` (1, 1, *S), model units)."""
    process = register_process(cfg)
    ncc = LocalNormalizedCrossCorrelationLoss(3, kernel_size=cfg.loss.ncc_window)
    w = cfg.loss

    def fn(model: nn.Module, batch: dict, generator: torch.Generator) -> Tensor:
        f = batch["image"]
        m = template.to(f).expand_as(f)
        t = process.sample_t(f.shape[0], generator=generator, device="cpu").to(f.device)
        noise = randn_like(f, generator)
        x_t = process.q_sample(f, t, noise)
        net: DiffuseMorph = model.module if hasattr(model, "module") else model  # type: ignore[assignment]
        eps = net.score(x_t, t, m, f)
        v = net.velocity(m, f, 1.0, feature=eps)
        u = net.displacement(v)
        loss = w.lam * (ncc(warp(m, u), f) + w.smooth * smoothness(u))
        if w.diffusion > 0:
            loss = loss + w.diffusion * F.mse_loss(eps, noise)
        return loss

    return fn


def _run_config(cfg: DeformConfig, data: Path, stage: str) -> dict:
    return {"method": NAME, "stage": stage, "cache": str(Path(data).resolve()), **to_dict(cfg)}


def train_register(cfg: DeformConfig, data: Path, out: Path, device, resume: bool) -> Path:
    out = Path(out)
    aligned_path = out / FOLDER / "aligned_train.pt"
    if not (aligned_path.is_file() and (out / FOLDER / "template_T1w.nii.gz").is_file()):
        build_template(data, cfg.data.downsample, cfg.data.affine_iterations, out,
                       given=cfg.data.template)  # fmt: skip
    # always the stored copies (uint8 images): a resumed run trains on exactly the same data
    template, _ = load_template(out)
    aligned = Aligned.load(aligned_path)
    seed_everything(cfg.train_register.seed)
    t = torch.from_numpy(template.data)[None, None] * SCALE + OFFSET
    trainer = Trainer(
        build_register(cfg),
        register_loss(cfg, t),
        Images(aligned.images, cfg.data.mirror),
        cfg.train_register,
        out / "register",
        config_dict=_run_config(cfg, data, "register"),
        device=device,
        meta={"method": NAME, "stage": "register"},
    )
    if resume:
        trainer.resume()
    trainer.fit()
    return out


@torch.no_grad()
def velocities(model: nn.Module, template: Tensor, images: Tensor, batch: int = 4) -> Tensor:
    """v (N, 3, *S) registering ``template`` (1, 1, *S) to each of ``images`` (N, 1, *S), model
    units."""
    out = []
    for i in range(0, len(images), batch):
        f = images[i : i + batch]
        out.append(model.velocity(template.expand_as(f), f))  # type: ignore[operator]
    return torch.cat(out)


def pool_fields(v: Tensor, d: int, multiple: int) -> Tensor:
    """Average-pool (N, 3, *S) fields by ``d`` and end-pad (zeros: no motion) to ``multiple``."""
    p = F.avg_pool3d(v, d) if d > 1 else v
    return pad_to(p, padded_shape(tuple(p.shape[2:]), multiple))


def train_fields(cfg: DeformConfig, data: Path, out: Path, device, resume: bool) -> Path:
    out = Path(out)
    folder = out / "fields"
    folder.mkdir(parents=True, exist_ok=True)
    cache_path = folder / VELOCITIES
    if not cache_path.is_file():
        _, reg, _ = load_network(out, "register", device)
        template, _ = load_template(out)
        aligned = Aligned.load(out / FOLDER / "aligned_train.pt")
        images = Images(aligned.images, cfg.data.mirror)
        x = torch.stack([images[i]["image"] for i in range(len(images))]).to(device)
        t = (torch.from_numpy(template.data)[None, None] * SCALE + OFFSET).to(device)
        v = velocities(reg, t, x).cpu()
        if load_sharp_template(out) is None:  # the originals' velocities come first in ``x``
            sharp_template(out, device, reg, v[: len(aligned.ids)].to(device))
        pooled = pool_fields(v, cfg.fields.downsample, fields_multiple(cfg))
        std = float(pooled.std())
        if not std > 0 or not torch.isfinite(pooled).all():
            raise InputError(out, "the registration gave empty or non-finite velocity fields")
        tmp = cache_path.with_suffix(".tmp")
        torch.save(
            {"fields": pooled / std, "std": std, "shape": list(v.shape[2:]), "ids": aligned.ids},
            tmp,
        )
        tmp.replace(cache_path)
    if load_sharp_template(out) is None:  # a run whose velocities were cached before
        sharp_template(out, device)
    saved = torch.load(cache_path, weights_only=True)
    seed_everything(cfg.train_fields.seed)
    run_cfg = {**_run_config(cfg, data, "fields"), "field_std": saved["std"]}
    run_cfg["field_shape"] = saved["shape"]
    process, covariates = fields_process(cfg), None
    loss = diffusion_loss(process, key="image")
    if cfg.fields.conditioning:
        covariates, known = field_covariates(cfg, data, saved["ids"], len(saved["fields"]))
        run_cfg.update(known)
        loss = conditioned_loss(process, "crossattn", cfg.fields.cond_dropout, key="image")
    trainer = Trainer(
        build_fields_model(cfg),
        loss,
        _Fields(saved["fields"], covariates),
        cfg.train_fields,
        folder,
        config_dict=run_cfg,
        device=device,
        meta={"method": NAME, "stage": "fields"},
    )
    if resume:
        trainer.resume()
    trainer.fit()
    return out


def field_covariates(cfg: DeformConfig, data: Path, ids: list[str], n: int) -> tuple[Tensor, dict]:
    """(n, K) normalised ``fields.conditioning`` covariates of the ``n`` cached fields (those of
    the training subjects ``ids`` from the cache manifest, then of their mirrors: the same), and
    what sampling needs in the run's config: the cache's normaliser and the training subjects'
    covariates. A missing value is the training mean, as in ldm (``methods.conditioning``)."""
    rows = training_rows(data, ids)
    if n % len(rows):
        raise InputError(data, f"{n} cached velocity fields do not fit its {len(rows)} subjects")
    norm = CovariateNormaliser.from_dict(read_cache_info(data)["covariate_normaliser"])
    vec = covariate_vectors(norm, rows, cfg.fields.conditioning).repeat(n // len(rows), 1)
    return vec, {"covariate_normaliser": norm.to_dict(), "training_covariates": rows}


class _Fields(Dataset):
    """``{"image": (3, *s)}`` pooled fields, with ``"covariates"`` (K,) when conditioned."""

    def __init__(self, fields: Tensor, covariates: Tensor | None = None):
        self.fields, self.covariates = fields, covariates

    def __len__(self) -> int:
        return len(self.fields)

    def __getitem__(self, i: int) -> dict:
        if self.covariates is None:
            return {"image": self.fields[i]}
        return {"image": self.fields[i], "covariates": self.covariates[i]}


def train(
    cfg: DeformConfig,
    data: Path | None,
    out: Path,
    device: torch.device | str | None = None,
    resume: bool = False,
    stage: str = "register",
) -> Path:
    """Stage ``register`` or ``fields`` of a deform run in ``out`` (see the module notes)."""
    if data is None:
        raise InputError(None, "method deform trains on a cache: pass --data CACHE")
    if stage not in STAGES:
        raise InputError(None, f"unknown stage {stage!r}; use register or fields")
    if stage == "register":
        return train_register(cfg, Path(data), out, device, resume)
    if not (Path(out) / "register" / "checkpoints").is_dir():
        raise InputError(out, "stage fields needs the trained registration: run --stage register")
    return train_fields(cfg, Path(data), out, device, resume)
