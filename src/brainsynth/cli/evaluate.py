"""``brainsynth evaluate``: real vs synthetic (or paired) metrics into metrics.json + report.html."""

from __future__ import annotations

from pathlib import Path

import typer

from brainsynth.cli.options import COUNT, NON_NEGATIVE, OVERWRITE, POSITIVE, UNIT


def evaluate(
    real: Path = typer.Option(
        ..., "--real", help="real volumes: folder of NIfTI, BIDS folder or CSV/TSV manifest"
    ),
    synthetic: Path = typer.Option(
        ..., "--synthetic", help="synthetic (or restored) volumes, same forms"
    ),
    out: Path = typer.Option(..., "--out", "-o", help="output folder (metrics.json, report.html)"),
    paired: bool = typer.Option(
        False, "--paired", help="match files by name; MAE/PSNR/SSIM/MS-SSIM/4-G-R-SSIM per pair"
    ),
    mask_threshold: float = typer.Option(
        0.05,
        "--mask-threshold",
        help="brain mask: intensity > this (after --intensity mapping), in [0, 1]",
        callback=UNIT,
    ),
    intensity: str = typer.Option(
        "unit",
        "--intensity",
        help="unit: uint8/255 or already [0,1]; robust: /99.5th pct of positive voxels; raw: as stored",
    ),
    data_range: float = typer.Option(
        None,
        "--data-range",
        help="intensity range for PSNR/SSIM with --intensity raw",
        callback=POSITIVE,
    ),
    features_weights: Path = typer.Option(
        None,
        "--features-weights",
        help="MedicalNet ResNet .pth (local); default: random-resnet10-seed0 (no download)",
    ),
    no_features: bool = typer.Option(False, "--no-features", help="skip FID/MMD"),
    n_pairs: int = typer.Option(
        100, "--n-pairs", help="random pairs for MS-SSIM diversity", callback=COUNT
    ),
    permutations: int = typer.Option(
        500, "--permutations", help="MMD permutation-test draws", callback=NON_NEGATIVE
    ),
    seed: int = typer.Option(
        0,
        "--seed",
        help="seed of pairs, permutations, GMM and random features",
        callback=NON_NEGATIVE,
    ),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda (feature extractor)"),
    progress: bool = typer.Option(True, help="show progress bars"),
    overwrite: bool = OVERWRITE,
) -> None:
    """Evaluate synthetic volumes against real ones.

    Unpaired (default): FID and MMD on 3D-network features (the extractor's name is in every
    output), MS-SSIM diversity within each set, tissue/ventricle/brain volume distributions (KS, W1),
    intensity histograms. --paired: per-pair image metrics inside the reference brain mask and over
    the whole volume. Writes OUT/metrics.json, OUT/per_subject.tsv or per_pair.tsv, OUT/report.html.
    """
    _check_inputs(intensity, real, synthetic, features_weights)
    opts = _options(
        intensity=intensity,
        data_range=data_range,
        mask_threshold=mask_threshold,
        features_weights=features_weights,
        features=not no_features,
        n_pairs=n_pairs,
        n_permutations=permutations,
        seed=seed,
        device=device,
        progress=progress,
    )
    _run(real, synthetic, out, opts, paired, overwrite)


def _check_inputs(
    intensity: str, real: Path, synthetic: Path, features_weights: Path | None
) -> None:
    """Exit 2 (InputError) on an unknown --intensity or a missing input path."""
    from brainsynth.cli.options import existing
    from brainsynth.errors import InputError

    if intensity not in ("unit", "robust", "raw"):
        raise InputError(None, f"--intensity must be unit, robust or raw, got {intensity!r}")
    existing(real, "--real")
    existing(synthetic, "--synthetic")
    if features_weights is not None:
        existing(features_weights, "--features-weights")


def _options(*, device: str, **kw):
    """EvalOptions of the command line: ``device`` resolved (auto -> cuda/cpu), the command
    recorded."""
    import shlex
    import sys

    from brainsynth.cli.options import resolve_device
    from brainsynth.evaluation.run import EvalOptions

    return EvalOptions(
        **kw,
        device=str(resolve_device(device)),
        command=shlex.join(["brainsynth", *sys.argv[1:]]),
    )


def _run(real: Path, synthetic: Path, out: Path, opts, paired: bool, overwrite: bool) -> None:
    """Run the evaluation and print its headline figures, warnings and output paths."""
    from brainsynth.evaluation.run import run_evaluation

    m = run_evaluation(
        real, synthetic, out, opts, paired=paired, log=typer.echo, overwrite=overwrite
    )
    if paired:
        _echo_paired(m)
    else:
        _echo_sets(m)
    for w in m.get("warnings", []):
        typer.secho(f"warning: {w}", fg=typer.colors.YELLOW, err=True)
    typer.echo(f"wrote {out / 'metrics.json'} and {out / 'report.html'}")


def _echo_paired(m: dict) -> None:
    s = m["summary"]
    for k in ("mask_mae", "mask_psnr", "mask_ssim", "mask_ms_ssim", "mask_4g_r_ssim"):
        if k in s:
            typer.echo(f"{k}: {_summary_line(s[k])}")


def _summary_line(e: dict) -> str:
    """``mean ± sd (n=...)`` of a per-pair summary; infinite values (PSNR of identical images) are
    counted, not averaged: ``inf for all 3 pairs`` or ``... (n=2; 1 infinite)``."""
    n_inf = e.get("n_infinite", 0)
    if e["mean"] is None:
        return f"inf for all {n_inf} pairs (identical images)" if n_inf else "no finite value"
    text = f"{e['mean']:.4g} ± {e['std'] or 0:.2g} (n={e['n']}"
    return text + (f"; {n_inf} infinite)" if n_inf else ")")


def _echo_sets(m: dict) -> None:
    if "fid" in m:
        typer.echo(f"features: {m['fid']['features']}")
        typer.echo(
            f"FID: {m['fid']['fid']:.4g} (n_real={m['fid']['n_real']}, n_synthetic={m['fid']['n_synthetic']}, dim={m['fid']['dim']})"
        )
        typer.echo(
            f"MMD^2 (Gaussian RBF, unbiased, median bandwidth): {m['mmd']['mmd2_rbf_unbiased']:.4g} "
            f"(permutation p={m['mmd']['permutation_pvalue']:.3g})"
        )
    d = m.get("diversity_ms_ssim")
    if d:
        for name in ("synthetic", "real"):
            e = d[name]
            if "mean" in e and e["mean"] is not None:
                typer.echo(f"MS-SSIM within {name}: {e['mean']:.4f} ({e['n_pairs']} pairs)")


def register(app: typer.Typer) -> None:
    app.command()(evaluate)
