"""Does a trained ldm diffusion stage use its covariates at all? The denoising loss on held-out
latents (the cache's val split, encoded by the run's autoencoder) at fixed timesteps and noise,
with the true covariates, with one covariate shuffled across subjects, and with the context
dropped (the null token guidance contrasts with):

    python benchmarks/ldm_cond_probe.py RUN --cache CACHE [--t 50,150,300,500,700,900] [--repeats 4]

A model that follows a covariate denoises worse when that covariate is shuffled; if the loss with
the covariate shuffled (or the context dropped) is within the noise of the true one, the diffusion
stage has not learned it, whatever the guidance. Prints the loss (v-target MSE, unweighted) per
timestep and its relative change under each perturbation. Concat channels (``conditioning: both``)
are perturbed with the context.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from brainsynth.data.covariates import COVARIATES
from brainsynth.methods.conditioning import make_cond
from brainsynth.methods.ldm.data import ImageSet, LatentNorm, encode_all
from brainsynth.methods.ldm.train import (
    _multiple,
    build_denoiser,
    build_process,
    config_from_meta,
    load_autoencoder,
)
from brainsynth.training.checkpoint import load_checkpoint, path_in_run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("--cache", type=Path, required=True)
    ap.add_argument("--t", default="50,150,300,500,700,900")
    ap.add_argument("--repeats", type=int, default=4, help="noise draws per timestep")
    a = ap.parse_args()
    torch.set_grad_enabled(False)
    ck = load_checkpoint(a.run, names=("ema",), with_state=False, method="ldm")
    meta = ck["meta"]["config"]
    cfg = config_from_meta(meta)
    ae, _, _ = load_autoencoder(path_in_run(ck["dir"], meta["ae_dir"]), "cpu")
    norm_file = meta.get("latent_norm")
    norm = LatentNorm.load(
        None if norm_file is None else path_in_run(ck["dir"], norm_file), meta["scale_factor"]
    )
    images = ImageSet(a.cache, "val", cfg.data.downsample, _multiple(cfg))
    lat, cov = encode_all(ae, images, "cpu")
    z0 = norm.apply(lat)
    model = build_denoiser(cfg)
    model.load_state_dict({k: v.float() for k, v in ck["ema"].items()})
    model.eval()
    process = build_process(cfg)
    g = torch.Generator().manual_seed(0)
    perm = torch.roll(torch.arange(len(cov)), 1)
    cases = {"true": cov}
    for i, name in enumerate(COVARIATES):
        shuffled = cov.clone()
        shuffled[:, i] = cov[perm, i]
        cases[f"{name} shuffled"] = shuffled
    cases["all shuffled"] = cov[perm]
    cases["context dropped"] = torch.full_like(cov, float("nan"))
    ts = [int(t) for t in a.t.split(",")]
    print(f"{a.run}: {len(cov)} val subjects, {a.repeats} noise draws per timestep")
    print("t     " + "  ".join(f"{k:>18}" for k in cases))
    totals = {k: 0.0 for k in cases}
    for t in ts:
        losses = {k: 0.0 for k in cases}
        for _ in range(a.repeats):
            noise = torch.randn(z0.shape, generator=g)
            tt = torch.full((len(z0),), t, dtype=torch.long)
            x_t = process.q_sample(z0, tt, noise)
            target = process.target(z0, tt, noise)
            for k, c in cases.items():
                cond = make_cond(c, cfg.diffusion.conditioning, z0.shape[2:])
                if k == "context dropped" and cond.concat is not None:  # guidance keeps concat
                    cond = make_cond(cov, cfg.diffusion.conditioning, z0.shape[2:])
                    cond = type(cond)(cond.concat, c)
                out = model(x_t, tt, cond)
                losses[k] += float(((out - target) ** 2).mean()) / a.repeats
        base = losses["true"]
        cells = [f"{base:18.5f}"] + [f"{100 * (v / base - 1):+17.2f}%" for k, v in losses.items()][
            1:
        ]
        print(f"{t:<5} " + "  ".join(cells))
        for k in cases:
            totals[k] += losses[k] / len(ts)
    base = totals["true"]
    cells = [f"{base:18.5f}"] + [f"{100 * (v / base - 1):+17.2f}%" for v in totals.values()][1:]
    print("mean  " + "  ".join(cells))


if __name__ == "__main__":
    main()
