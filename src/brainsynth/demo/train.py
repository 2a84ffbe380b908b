"""The demo's fallbacks: a phantom cohort and its cache, and a tiny run per method trained on it.

Used only for a method whose model is not shipped (``demo.sources``). The configs are the
``configs/*_tiny.yaml`` values (written out here: an installed package has no ``configs/``), with
these changes for the phantoms' whole brains (96 x 112 x 96 at 2 mm):

- ldm at 4 mm (pooled by 2) as the demo always did: its tiny autoencoder compresses by 4, so the
  diffusion model works on 12 x 14 x 12 latents.
- cortex, deform and restore at 8 mm (pooled by 4, 24 x 28 x 24) without attention: their networks
  work on the image grid, and at 4 mm one tiny-UNet step costs ~1.7 s of CPU (measured), too much
  for a demo of minutes. The tiny preset's attention at its second level would see every voxel
  of a 24 x 28 x 24 grid as a token.
- no validation, a checkpoint at the last step only.

cortex trains on the phantoms' own surfaces (fsaverage5 warped with each phantom, written by
``make_cohort(surfaces=True)``) instead of surfaces extracted from their label maps: the same
cortex, and ~20 s of CPU less per subject. They go where ``cortex.train`` keeps its shape channels
(``methods.cortex.data.save_shapes``); it skips the subjects found there.
"""

from __future__ import annotations

from pathlib import Path

from brainsynth.errors import InputError

COHORT_SPACING = 2.0
COHORT_SHAPE = (96, 112, 96)
FAST = 4  # cortex, deform, restore: the 2 mm cache pooled by 4 (8 mm)
TINY_UNET = {"preset": "tiny", "channels": [8, 16], "attention_levels": [False, False]}


def _schedule(steps: int) -> dict:
    """A trainer's steps with logging every 10 steps, no validation, one checkpoint at the end."""
    return {"steps": steps, "log_every": 10, "val_every": 0, "ckpt_every": 0, "keep_last": 1}


def ldm_config(ae_steps: int, steps: int) -> dict:
    """The demo's ldm values (tiny networks, a smoke run); ``--config`` values override them."""
    return {
        "data": {"downsample": 2},
        "ae": {"preset": "tiny"},
        "diffusion": {"preset": "tiny", "center": True, "min_snr_gamma": 5.0},
        "train_ae": {**_schedule(ae_steps), "batch_size": 2, "lr": 2e-3, "ema_decay": 0.95},
        "train_diffusion": {**_schedule(steps), "batch_size": 4, "lr": 1e-3, "ema_decay": 0.95},
        "sample": {"steps": 25, "guidance": 1.5},
    }


def cortex_config(steps: int) -> dict:
    """configs/cortex_tiny.yaml at 8 mm (schema defaults elsewhere: the paper's bridge); the SDF
    clipped at two voxels (16 mm) instead of 5 mm, which would lie inside one voxel."""
    return {
        "data": {"downsample": FAST, "clip_mm": 16.0, "val_images": 0},
        "model": TINY_UNET,
        "train": {**_schedule(steps), "batch_size": 2, "lr": 1e-3, "ema_decay": 0.9},
        "sample": {"steps": 4, "eta": 1.0},
    }


def deform_config(steps: int) -> dict:
    """configs/deform_tiny.yaml at 8 mm (schema defaults elsewhere), ``steps`` for each stage."""
    train = {**_schedule(steps), "batch_size": 2, "lr": 1e-3, "ema_decay": 0.9}
    return {
        "data": {"downsample": FAST},
        "model": {**TINY_UNET, "deform_channels": [8, 16], "integration_steps": 5},
        "loss": {"ncc_window": 3},
        "train_register": train,
        "fields": {"downsample": 2, "preset": "tiny"},
        "train_fields": train,
        "sample": {"steps": 4, "eta": 0.0},
    }


def restore_config(steps: int) -> dict:
    """configs/restore_tiny.yaml at 8 mm (schema defaults elsewhere), restoring with one posterior
    sample of the cheapest DAPS budget of ``benchmarks/restore_eval.py --sweep`` (10 levels of one
    network evaluation, sigma 1 -> 0.1, started from the cubic B-spline interpolation): on the
    demo's thick-slice MNI152 a 100-step phantom prior then gives 19.3 dB where the tiny config's
    4 levels from sigma 100 give 16.1 dB of noise (cubic B-spline: 21.0 dB; measured)."""
    return {
        "data": {"downsample": FAST, "val_images": 0},
        "model": TINY_UNET,
        "train": {**_schedule(steps), "batch_size": 2, "lr": 1e-3, "ema_decay": 0.9},
        "sample": {"steps": 4, "eta": 0.0},
        "daps": {
            "annealing_steps": 10,
            "ode_steps": 1,
            "langevin_steps": 20,
            "step_size": 1e-4,
            "step_decay": 1.0,
            "sigma_max": 1.0,
            "sigma_min": 0.1,
            "tau": 0.01,
        },
        "restore": {"samples": 1, "init": "baseline"},
    }


def phantom_cache(out: Path, n: int) -> tuple[Path, Path]:
    """(BIDS cohort, prepared cache) of ``n`` phantoms with labels and surfaces, in ``out/phantoms``
    and ``out/cache``; an InputError naming the cache if a phantom fails to prepare."""
    from brainsynth.data.phantoms import make_cohort
    from brainsynth.data.prepare import PrepareOptions, prepare_cache

    bids = make_cohort(out / "phantoms", n=n, spacing=COHORT_SPACING, seed=0, surfaces=True)
    cache = out / "cache"
    _, failed = prepare_cache(bids, cache, PrepareOptions(COHORT_SPACING, COHORT_SHAPE), jobs=1)
    if failed:
        sid, why = next(iter(failed.items()))
        raise InputError(cache, f"{len(failed)} phantom(s) failed to prepare ({sid}: {why})")
    return bids, cache


def train_ldm(cache: Path, out: Path, config: Path | None, ae_steps: int, steps: int, device):
    """The tiny autoencoder (``out/ae``) and latent diffusion model (``out/ldm``); the latter."""
    from brainsynth.methods import ldm

    cfg = ldm.load_ldm_config(config, base=ldm_config(ae_steps, steps))
    ldm.train_autoencoder(cfg, cache, out / "ae", device=device)
    return ldm.train_diffusion(cfg, cache, out / "ae", out / "ldm", device=device)


def phantom_shapes(bids: Path, cache: Path, run: Path, cfg) -> int:
    """The shape channels of every cache subject from its phantom surfaces, written where
    ``cortex.train`` keeps them (module notes); how many."""
    from brainsynth.data.cache import read_cache_manifest
    from brainsynth.io import read_volume
    from brainsynth.methods.cortex import read_surfaces
    from brainsynth.methods.cortex.data import channels_from_surfaces, pooled_affine, save_shapes

    d = cfg.data.downsample
    rows = read_cache_manifest(cache)
    for row in rows:
        sid = row["subject"]
        grid = read_volume(cache / row["image"])
        surfaces = read_surfaces(bids / "derivatives" / "phantom" / sid / "anat")
        aff = pooled_affine(grid.affine, d)
        shape = tuple(s // d for s in grid.shape)
        save_shapes(run, sid, channels_from_surfaces(surfaces, shape, aff, cfg.data.clip_mm), aff)
    return len(rows)


def train_cortex(bids: Path, cache: Path, run: Path, steps: int, device) -> Path:
    """A tiny cortex bridge on the phantoms' own surfaces (module notes)."""
    from brainsynth.config import load_config
    from brainsynth.methods import cortex

    cfg = load_config(cortex.CortexConfig, base=cortex_config(steps))
    phantom_shapes(bids, cache, run, cfg)
    return cortex.train(cfg, cache, run, device)


def train_deform(cache: Path, run: Path, steps: int, device) -> Path:
    """A tiny deform run: the registration stage, then the fields model."""
    from brainsynth.config import dump_yaml, load_config
    from brainsynth.io import write_text_atomic
    from brainsynth.methods import deform

    cfg = load_config(deform.DeformConfig, base=deform_config(steps))
    for stage in ("register", "fields"):
        run.mkdir(parents=True, exist_ok=True)
        write_text_atomic(run / f"config_{stage}.yaml", dump_yaml(cfg))  # as the CLI does
        deform.train(cfg, cache, run, device, stage=stage)
    return run


def train_restore(cache: Path, run: Path, steps: int, device) -> Path:
    """A tiny restore prior."""
    from brainsynth.config import load_config
    from brainsynth.methods import restore

    cfg = load_config(restore.RestoreConfig, base=restore_config(steps))
    return restore.train(cfg, cache, run, device)
