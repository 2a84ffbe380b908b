"""Unconditional DDIM samples of the prior, for checking it by eye: NIfTI on the prior's grid in
cache units ([0, 1]) + a montage."""

from __future__ import annotations

from pathlib import Path

import torch

from brainsynth.config import dump_yaml, to_dict
from brainsynth.errors import InputError
from brainsynth.io import Volume, write_text_atomic, write_volume
from brainsynth.io.outdir import claim_output_dir
from brainsynth.methods.ldm.data import crop_to
from brainsynth.methods.restore.prior import load_prior
from brainsynth.sampling import batch_progress, ddim_sample
from brainsynth.viz import montage

OWNED = ("sample_*_T1w.nii.gz", "montage.png", "config.yaml")  # what --overwrite may replace


def sample(
    ckpt: str | Path,
    out: str | Path,
    *,
    n: int = 4,
    steps: int | None = None,
    eta: float | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    batch_size: int = 4,
    progress=None,
    overwrite: bool = False,
) -> list[Path]:
    """``n`` volumes ``sample_###_T1w.nii.gz`` into ``out`` (which must be empty unless
    ``overwrite``), plus montage.png and config.yaml (the run's config with the values used)."""
    if n < 1:
        raise InputError(None, f"the number of volumes must be at least 1, got {n}")
    out = claim_output_dir(out, OWNED, overwrite=overwrite)
    cfg, model, process, info = load_prior(ckpt, device)
    steps = cfg.sample.steps if steps is None else steps
    eta = cfg.sample.eta if eta is None else eta
    lo, hi = info.to_model(torch.tensor(0.0)), info.to_model(torch.tensor(1.0))
    g = torch.Generator().manual_seed(seed)
    paths, vols = [], []
    n_batches = -(-n // batch_size)
    for start in range(0, n, batch_size):
        b = min(batch_size, n - start)
        x_T = torch.randn((b, 1, *info.padded_shape), generator=g).to(device)
        x = ddim_sample(
            model,
            process,
            x_T,
            steps=steps,
            eta=eta,
            generator=g,
            clip_x0=(float(lo), float(hi)),
            progress=batch_progress(progress, start // batch_size, n_batches),
        )
        x = info.from_model(crop_to(x, info.shape)).clamp(0, 1).float().cpu().contiguous()
        for j in range(b):
            vol = Volume(x[j, 0].numpy(), info.affine_array)
            paths.append(write_volume(vol, out / f"sample_{start + j:03d}_T1w.nii.gz"))
            vols.append(vol.data)
    montage(vols[:8], out / "montage.png", [f"sample {i:03d}" for i in range(len(vols[:8]))], 1.0)
    used = {"ckpt": str(ckpt), "n": n, "seed": seed, "steps": steps, "eta": eta}
    write_text_atomic(
        out / "config.yaml", dump_yaml({**used, "prior": to_dict(info), **to_dict(cfg)})
    )
    return paths
