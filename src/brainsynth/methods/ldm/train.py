"""Method ``ldm``: conditional latent diffusion of whole-brain T1w volumes (Pinaya et al. 2022).

Stage ``ae``: a KL autoencoder (L1 + KL, optional patch-adversarial term) compresses the volume;
the latent scale factor (1 / std of the training latents) is computed from data at the end.
Stage ``diffusion``: a Gaussian diffusion in latent space conditioned on (age, sex, ventricle
volume, brain volume), with condition dropout for classifier-free guidance; DDIM sampling.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from monai.networks.nets import PatchDiscriminator

from brainsynth.config import config_from_meta as _config_from_meta
from brainsynth.config import load_config, to_dict
from brainsynth.data.cache import read_cache_info, read_cache_manifest
from brainsynth.data.covariates import COVARIATES
from brainsynth.diffusion.gaussian import GaussianProcess
from brainsynth.errors import InputError
from brainsynth.io import write_text_atomic
from brainsynth.methods.conditioning import training_rows
from brainsynth.methods.ldm.config import LDMConfig
from brainsynth.methods.ldm.data import (
    ImageSet,
    LatentNorm,
    LatentSet,
    crop_to,
    encode_all,
    padded_shape,
    region_weight,
)
from brainsynth.methods.ldm.losses import AEWithDiscriminator, ae_loss, diffusion_loss
from brainsynth.nn.autoencoder import build_autoencoder, downsample_factor
from brainsynth.nn.layout import set_memory_format
from brainsynth.nn.presets import UNET_PRESETS
from brainsynth.nn.unet import build_unet
from brainsynth.training.checkpoint import load_checkpoint
from brainsynth.training.trainer import Trainer

N_COV = len(COVARIATES)


def load_ldm_config(path=None, overrides=None, base: dict | None = None) -> LDMConfig:
    return load_config(LDMConfig, path, overrides, base)


def config_from_meta(meta: dict) -> LDMConfig:
    """The LDMConfig stored in a checkpoint's resolved config (``brainsynth.config``)."""
    return _config_from_meta(LDMConfig, meta)


def latent_shape(cfg: LDMConfig, shape: tuple[int, ...]) -> tuple[int, ...]:
    """(C, *S) of the latents of an image grid ``shape`` (after padding to the networks' multiple)."""
    f = downsample_factor(cfg.ae.preset)
    return (cfg.ae.latent_channels, *(s // f for s in padded_shape(shape, _multiple(cfg))))


def _multiple(cfg: LDMConfig) -> int:
    unet_levels = len(UNET_PRESETS[cfg.diffusion.preset]["channels"])
    return downsample_factor(cfg.ae.preset) * 2 ** (unet_levels - 1)


def build_ae(cfg: LDMConfig, grad_ckpt: bool = False):
    return build_autoencoder(
        cfg.ae.preset, 3, 1, cfg.ae.latent_channels, grad_checkpointing=grad_ckpt
    )


def build_denoiser(cfg: LDMConfig, grad_ckpt: bool = False):
    c = cfg.diffusion.conditioning
    return build_unet(
        cfg.diffusion.preset,
        3,
        cfg.ae.latent_channels,
        cfg.ae.latent_channels,
        concat_channels=N_COV if c in ("concat", "both") else 0,
        context_dim=N_COV if c in ("crossattn", "both") else None,
        embed_context=cfg.diffusion.embed,
        grad_checkpointing=grad_ckpt,
    )


def build_process(cfg: LDMConfig) -> GaussianProcess:
    d = cfg.diffusion
    return GaussianProcess(d.num_timesteps, d.schedule, d.prediction, d.beta_start, d.beta_end)


def train_autoencoder(
    cfg: LDMConfig, cache: Path, out: Path, resume: bool = False, device=None
) -> Path:
    """Stage 1. Writes checkpoints, latent_stats.json and recon_metrics.json into ``out``."""
    train = ImageSet(cache, "train", cfg.data.downsample, _multiple(cfg))
    disc = None
    if cfg.ae.adv_weight > 0:
        disc = PatchDiscriminator(
            spatial_dims=3, channels=cfg.ae.disc_channels, in_channels=1, num_layers_d=3
        )
    perceptual = None
    if cfg.ae.perceptual_weight > 0:
        from brainsynth.training.perceptual import PerceptualLoss3D

        perceptual = PerceptualLoss3D(str(cfg.ae.perceptual_weights))
    model = AEWithDiscriminator(build_ae(cfg, cfg.train_ae.grad_checkpointing), disc)
    run_cfg = {"method": "ldm", "stage": "ae", "cache": str(cache), **to_dict(cfg)}
    if perceptual is not None:
        run_cfg["perceptual_network"] = perceptual.name
    a = cfg.ae
    trainer = Trainer(
        model,
        ae_loss(
            a.kl_weight,
            a.adv_weight,
            a.adv_start,
            a.sample_posterior,
            a.perceptual_weight,
            perceptual,
        ),
        train,
        cfg.train_ae,
        out,
        config_dict=run_cfg,
        device=device,
    )
    if resume:
        trainer.resume()
        model.step = trainer.step * cfg.train_ae.grad_accum
    trainer.fit()
    if trainer.dist.is_main:
        _finish_autoencoder(trainer.ema.model.ae, cfg, train, cache, out, trainer.device)
    return out


def _finish_autoencoder(
    ae, cfg: LDMConfig, train: ImageSet, cache: Path, out: Path, device
) -> None:
    lat, _ = encode_all(ae, train, device)
    stats = {
        "scale_factor": float(1.0 / lat.std()),
        "latent_shape": list(lat.shape[1:]),
        "n": len(lat),
    }
    write_text_atomic(out / "latent_stats.json", json.dumps(stats, indent=1))
    split = "val" if read_cache_manifest(cache, "val") else "train"
    metrics = reconstruction_metrics(
        ae, ImageSet(cache, split, cfg.data.downsample, _multiple(cfg)), device
    )
    write_text_atomic(out / "recon_metrics.json", json.dumps({"split": split, **metrics}, indent=1))


@torch.no_grad()
def reconstruction_metrics(ae, data: ImageSet, device) -> dict:
    """MAE / PSNR (data range 1) / SSIM of posterior-mean reconstructions, inside the image grid."""
    from monai.metrics import SSIMMetric

    ssim = SSIMMetric(spatial_dims=3, data_range=1.0, win_size=7)
    mae, psnr, ss = [], [], []
    ae.eval()
    for i in range(len(data)):
        x = data[i]["image"][None].to(device)
        mu, _ = ae.encode(x)
        r = ae.decode(mu).clamp(0, 1)
        x, r = crop_to(x, data.shape).float(), crop_to(r, data.shape).float()
        mae.append(float((x - r).abs().mean()))
        psnr.append(float(10 * torch.log10(1.0 / ((x - r) ** 2).mean().clamp_min(1e-12))))
        ss.append(float(torch.as_tensor(ssim(r.cpu(), x.cpu())).mean()))
    return {
        "mae": float(np.mean(mae)),
        "psnr": float(np.mean(psnr)),
        "ssim": float(np.mean(ss)),
        "n": len(mae),
    }


def load_autoencoder(ae_dir: Path, device) -> tuple:
    """(autoencoder with EMA weights, its LDMConfig, scale factor)."""
    ck = load_checkpoint(ae_dir, names=("ema",), with_state=False)
    meta = ck["meta"]["config"]
    cfg = config_from_meta(meta)
    ae = build_ae(cfg)
    ae.load_state_dict({k[len("ae.") :]: v for k, v in ck["ema"].items() if k.startswith("ae.")})
    stats_file = Path(ae_dir) / "latent_stats.json"
    if not stats_file.exists():
        raise InputError(stats_file, "missing: the autoencoder run did not finish")
    ae = set_memory_format(ae.to(device).eval(), device, cfg.train_ae.memory_format)
    return ae, cfg, json.loads(stats_file.read_text())["scale_factor"]


def _spatial3(x: torch.Tensor) -> tuple[int, int, int]:
    a, b, c = x.shape[2:]
    return int(a), int(b), int(c)


def train_diffusion(
    cfg: LDMConfig, cache: Path, ae_dir: Path, out: Path, resume: bool = False, device=None
) -> Path:
    """Stage 2: latent diffusion on the (scaled) posterior means of the training images."""
    from brainsynth.training.distributed import pick_device

    device = device or pick_device(cfg.train_diffusion.device)
    ae, ae_cfg, scale = load_autoencoder(ae_dir, device)
    # The autoencoder fixes the network and the resolution; mirroring is this stage's own choice.
    if (ae_cfg.ae, ae_cfg.data.downsample) != (cfg.ae, cfg.data.downsample):
        data = {**to_dict(cfg.data), "downsample": ae_cfg.data.downsample}
        cfg = load_ldm_config(base={**to_dict(cfg), "ae": to_dict(ae_cfg.ae), "data": data})
    images = ImageSet(cache, "train", cfg.data.downsample, _multiple(cfg))
    lat, cov = encode_all(ae, images, device, mirror=cfg.data.mirror)
    del ae
    norm = LatentNorm.fit(lat, cfg.diffusion.center, scale)
    norm_file = (Path(out) / "latent_norm.safetensors").resolve() if norm.mean is not None else None
    info = read_cache_info(cache)
    rows = training_rows(cache)
    run_cfg = {
        "method": "ldm",
        "stage": "diffusion",
        "cache": str(cache),
        "ae_dir": str(Path(ae_dir).resolve()),
        "scale_factor": norm.scale,
        "latent_norm": None if norm_file is None else str(norm_file),
        "covariate_normaliser": info["covariate_normaliser"],
        "training_covariates": rows,
        "reference_affine": info["reference_affine"],
        "cache_spacing": info["spacing"],
        "cache_shape": info["shape"],
        **to_dict(cfg),
    }
    d = cfg.diffusion
    weight = None
    if d.region_weight > 0:
        weight = region_weight(
            cache, cfg.data.downsample, images.padded, _spatial3(lat), d.region_weight
        )
    trainer = Trainer(
        build_denoiser(cfg, cfg.train_diffusion.grad_checkpointing),
        diffusion_loss(
            build_process(cfg), d.conditioning, d.cond_dropout, d.min_snr_gamma, weight=weight
        ),
        LatentSet(norm.apply(lat), cov),
        cfg.train_diffusion,
        out,
        config_dict=run_cfg,
        device=device,
    )
    if norm_file is not None and trainer.dist.is_main:
        norm.save(norm_file)
    if resume:
        trainer.resume()
    trainer.fit()
    return out
