"""CLI of method ``restore``: ``brainsynth restore`` (restore scans with a prior),
``brainsynth degrade`` (simulated inputs from clean scans) and ``brainsynth sample restore``
(unconditional samples of a prior). ``brainsynth train restore`` is the common train command."""

from __future__ import annotations

from pathlib import Path

import typer

from brainsynth.cli.options import (
    COUNT,
    DEVICE,
    NON_NEGATIVE,
    OVERWRITE,
    POSITIVE,
    existing,
    number,
    resolve_ckpt,
    resolve_device,
)
from brainsynth.cli.sample import ETA, SEED, STEPS, N


def sample_restore(
    ckpt: Path = typer.Option(
        ..., "--ckpt", help="prior run folder (or a step_* folder in it) or model name"
    ),
    out: Path = typer.Option(..., "--out", help="folder for the NIfTI samples and montage.png"),
    n: int = N,
    steps: int = STEPS,
    eta: float = ETA,
    seed: int = SEED,
    device: str = DEVICE,
    overwrite: bool = OVERWRITE,
) -> None:
    """Unconditional DDIM samples of a restore prior, to check it by eye."""
    from brainsynth.cli.sample import progress_bar
    from brainsynth.methods.restore.sample import sample

    with progress_bar(f"sample {n} volumes") as progress:
        paths = sample(
            resolve_ckpt(ckpt, "checkpoint"),
            out,
            n=n,
            steps=steps,
            eta=eta,
            seed=seed,
            device=resolve_device(device),
            progress=progress,
            overwrite=overwrite,
        )
    typer.echo(f"{len(paths)} volumes in {out} (montage.png)")


def restore_scans(
    prior: Path = typer.Option(
        ..., "--prior", help="restore prior run folder (or a step_* folder) or model name"
    ),
    input: Path = typer.Option(..., "--input", help="a NIfTI scan, a folder of them, or BIDS"),
    task: str = typer.Option(..., "--task", help="superres | bias | inpaint | refine"),
    out: Path = typer.Option(..., "--out", help="output folder"),
    mask: Path = typer.Option(
        None,
        "--mask",
        help="inpaint: voxels to fill (on the scan's grid), or a folder of STEM_mask.nii.gz",
    ),
    brain_mask: Path = typer.Option(
        None,
        "--brain-mask",
        help="brain mask on the scan's grid (default: the scan's non-zero voxels)",
    ),
    samples: int = typer.Option(
        None,
        "--samples",
        help="posterior samples per scan (default: the prior's config)",
        callback=COUNT,
    ),
    align: str = typer.Option(
        "header",
        "--align",
        help="header (the scan's field of view) | centre (its brain) | affine (registration to the prior's template)",
    ),
    slice_thickness: float = typer.Option(
        None,
        "--slice-thickness",
        help="mm (default: the BIDS sidecar's SliceThickness, else the spacing)",
        callback=POSITIVE,
    ),
    profile: str = typer.Option(
        "box", "--profile", help="slice profile: box | triangle | gaussian"
    ),
    trust: float = typer.Option(
        0.1,
        "--trust",
        help="refine: std of the input's error (normalised units)",
        callback=POSITIVE,
    ),
    levels: int = typer.Option(
        None, "--levels", help="DAPS annealing levels (default: config)", callback=COUNT
    ),
    ode_steps: int = typer.Option(
        None, "--ode-steps", help="PF-ODE steps per level (default: config)", callback=COUNT
    ),
    sigma_max: float = typer.Option(
        None, "--sigma-max", help="first annealing level (default: config)", callback=POSITIVE
    ),
    tau: float = typer.Option(
        None, "--tau", help="likelihood std in Langevin (default: config)", callback=POSITIVE
    ),
    config: Path = typer.Option(
        None, "--config", help="YAML whose daps/restore sections replace the prior's own"
    ),
    seed: int = typer.Option(0, "--seed", callback=NON_NEGATIVE),
    device: str = DEVICE,
    overwrite: bool = OVERWRITE,
) -> None:
    """Restore thick-slice, biased or lesioned scans with a diffusion prior (DAPS posterior sampling).

    Writes, per scan: STEM_restored.nii.gz and STEM_std.nii.gz (the input's world space, isotropic at
    the prior's spacing), the same on the prior's grid (*_prior.nii.gz), the bias field (task bias),
    a montage (PNG), and restore.tsv (status, seconds and network evaluations per scan). Scans that
    fail are listed there with the reason; the others are still restored (exit code 1 then)."""
    from brainsynth.cli.sample import progress_bar
    from brainsynth.methods.restore.restore import restore
    from brainsynth.methods.restore.scan import ScanOptions

    opts = ScanOptions(
        task=task, align=align, slice_thickness=slice_thickness, profile=profile, trust=trust
    )
    overrides = {
        k: v
        for k, v in (
            ("annealing_steps", levels),
            ("ode_steps", ode_steps),
            ("sigma_max", sigma_max),
            ("tau", tau),
        )
        if v is not None
    }
    with progress_bar(f"restore ({task})") as progress:
        rows = restore(
            resolve_ckpt(prior, "prior"),
            input,
            out,
            opts,
            mask=mask,
            brain_mask=brain_mask,
            samples=samples,
            daps_overrides=overrides,
            config=None if config is None else existing(config, "config"),
            seed=seed,
            device=resolve_device(device),
            overwrite=overwrite,
            progress=progress,
        )
    _report(rows, out / "restore.tsv")


def degrade_scans(
    input: Path = typer.Option(
        ..., "--input", help="clean scans: a cache (its --split), a NIfTI file, a folder, BIDS"
    ),
    out: Path = typer.Option(..., "--out", help="output folder"),
    split: str = typer.Option("test", "--split", help="cache split to degrade: train | val | test"),
    slice_spacing: float = typer.Option(
        None,
        "--slice-spacing",
        help="mm between slice centres (none: no thick slices)",
        callback=POSITIVE,
    ),
    gap: float = typer.Option(
        0.0, "--gap", help="mm between slices (thickness = spacing - gap)", callback=NON_NEGATIVE
    ),
    axis: int = typer.Option(
        2,
        "--axis",
        help="slice axis (RAS): 0 sagittal, 1 coronal, 2 axial",
        callback=number(low=0, high=2),
    ),
    profile: str = typer.Option("box", "--profile", help="box | triangle | gaussian"),
    bias: float = typer.Option(
        0.0,
        "--bias",
        help="std of the log bias field over the brain (0.2: ~ +-20 %)",
        callback=NON_NEGATIVE,
    ),
    lesion_radius: float = typer.Option(
        0.0,
        "--lesion-radius",
        help="mm; a dark ellipsoid + its mask (0: none)",
        callback=NON_NEGATIVE,
    ),
    noise: float = typer.Option(
        0.0,
        "--noise",
        help="Gaussian noise std, fraction of the brain's 99.5th percentile",
        callback=NON_NEGATIVE,
    ),
    seed: int = typer.Option(0, "--seed", callback=NON_NEGATIVE),
    overwrite: bool = OVERWRITE,
) -> None:
    """Simulated degraded scans (bias, lesion, thick slices with a gap, noise) from clean ones."""
    from brainsynth.methods.restore.degrade import Degradation, degrade_batch

    d = Degradation(
        slice_spacing=slice_spacing, gap=gap, axis=axis, profile=profile, bias=bias,
        lesion_radius=lesion_radius, noise=noise, seed=seed,
    )  # fmt: skip
    _report(degrade_batch(existing(input, "input"), out, d, split, overwrite), out / "degrade.tsv")


def _report(rows: list[dict], table: Path) -> None:
    bad = [r for r in rows if r["status"] != "ok"]
    for r in bad:
        typer.secho(f"failed: {r['scan']}: {r['message']}", fg=typer.colors.RED, err=True)
    typer.echo(f"{len(rows) - len(bad)} of {len(rows)} scans written ({table})")
    if bad:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    from brainsynth.cli.sample import sample_app

    sample_app.command("restore")(sample_restore)
    app.command("restore")(restore_scans)
    app.command("degrade")(degrade_scans)
