"""``brainsynth demo``: the whole pipeline on the embedded phantom cohort, on a CPU, in minutes."""

from __future__ import annotations

from pathlib import Path

import typer

from brainsynth.cli.options import COUNT, OVERWRITE

# the folders a demo writes in --out, and so what --overwrite replaces
DEMO_FOLDERS = ("phantoms", "cache", "ae", "ldm", "samples*", "real_at_training_resolution", "eval")


def demo(
    out: Path = typer.Option(
        Path("demo_out"), "--out", help="folder for everything the demo writes"
    ),
    n: int = typer.Option(12, "-n", help="phantom subjects", callback=COUNT),
    config: Path = typer.Option(
        None, "--config", help="ldm config; its values override the demo's own tiny ones"
    ),
    ae_steps: int = typer.Option(
        60, "--ae-steps", help="autoencoder training steps", callback=COUNT
    ),
    steps: int = typer.Option(
        300, "--steps", help="latent diffusion training steps", callback=COUNT
    ),
    overwrite: bool = OVERWRITE,
) -> None:
    """Phantoms -> prepare -> train ldm (tiny) -> sample at two ages -> evaluate."""
    from brainsynth.data.phantoms import make_cohort
    from brainsynth.data.prepare import PrepareOptions, prepare_cache
    from brainsynth.io.outdir import claim_output_dir
    from brainsynth.methods import ldm
    from brainsynth.methods.ldm.sample import sample_ldm
    from brainsynth.training.distributed import pick_device

    cfg = ldm.load_ldm_config(config, base=_tiny_config(ae_steps, steps))
    claim_output_dir(out, DEMO_FOLDERS, overwrite=overwrite)
    dev = pick_device("auto")
    typer.echo("1/5 phantom cohort")
    bids = make_cohort(out / "phantoms", n=n, spacing=2.0, seed=0)
    typer.echo("2/5 prepare")
    good, failed = prepare_cache(bids, out / "cache", PrepareOptions(2.0, (96, 112, 96)), jobs=1)
    if failed:
        raise typer.Exit(1)
    typer.echo("3/5 train autoencoder and latent diffusion (tiny, a smoke run)")
    ldm.train_autoencoder(cfg, out / "cache", out / "ae", device=dev)
    ldm.train_diffusion(cfg, out / "cache", out / "ae", out / "ldm", device=dev)
    typer.echo("4/5 sample: 4 with covariates drawn from the cohort, 2 at age 30, 2 at age 75")
    sample_ldm(out / "ldm", {}, 4, out / "samples", device=dev, seed=0)
    # well inside the phantoms' U(20, 85) ages (80 lay past the 6-phantom cohort's range)
    for age in (30, 75):
        sample_ldm(
            out / "ldm", {"age": float(age)}, 2, out / f"samples_age{age}", device=dev, seed=age
        )
    typer.echo("5/5 evaluate the samples against the cohort at the training resolution")
    from brainsynth.evaluation.run import run_evaluation

    real = _pooled_real(out / "cache", out / "real_at_training_resolution", cfg.data.downsample)
    run_evaluation(real, out / "samples", out / "eval")
    typer.echo(f"done: see {out}/samples*/montage.png and {out}/eval/report.html")


def _tiny_config(ae_steps: int, steps: int) -> dict:
    """The demo's ldm values (tiny networks, a smoke run); ``--config`` values override them."""
    return {
        "data": {"downsample": 2},
        "ae": {"preset": "tiny"},
        "diffusion": {"preset": "tiny", "center": True, "min_snr_gamma": 5.0},
        "train_ae": {
            "steps": ae_steps,
            "batch_size": 2,
            "lr": 2e-3,
            "ema_decay": 0.95,
            "log_every": 10,
            "ckpt_every": 10_000,
        },
        "train_diffusion": {
            "steps": steps,
            "batch_size": 4,
            "lr": 1e-3,
            "ema_decay": 0.95,
            "log_every": 10,
            "ckpt_every": 10_000,
        },
        "sample": {"steps": 25, "guidance": 1.5},
    }


def _pooled_real(cache: Path, dest: Path, factor: int) -> Path:
    """The cache images average-pooled like the ldm training data, on the samples' grid."""
    import torch.nn.functional as F

    from brainsynth.data.cache import CacheDataset
    from brainsynth.data.prepare import reference_affine
    from brainsynth.io import Volume, write_volume

    ds = CacheDataset(cache, split=None, with_labels=False)
    spacing = float(ds.info["spacing"]) * factor
    for i in range(len(ds)):
        item = ds[i]
        x = F.avg_pool3d(item["image"][None], factor)[0, 0].numpy()
        write_volume(
            Volume(x, reference_affine(spacing, x.shape)), dest / f"{item['subject']}_T1w.nii.gz"
        )
    return dest


def register(app: typer.Typer) -> None:
    app.command()(demo)
