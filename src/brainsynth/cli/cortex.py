"""CLI of method ``cortex``: ``brainsynth train cortex``, ``brainsynth sample cortex`` (a T1w from
given surfaces), ``brainsynth atrophy`` (the same surfaces with a thinner cortex, before/after)
and ``brainsynth surfaces`` (white and pial surfaces from a label map)."""

from __future__ import annotations

from pathlib import Path

import typer

from brainsynth.cli.options import (
    CONFIG,
    DEVICE,
    OVERWRITE,
    SET,
    check_run_dir,
    existing,
    resolve_ckpt,
    resolve_device,
)
from brainsynth.cli.sample import ETA, SEED, STEPS, N

SURFACES = typer.Option(
    ...,
    "--surfaces",
    help="folder with lh/rh pial and white surfaces (FreeSurfer surf/ or *hemi-L_pial.surf.gii)",
)


def train_cortex(
    data: Path = typer.Option(..., "--data", help="cache (with label maps) from `prepare`"),
    out: Path = typer.Option(..., "--out", help="run folder (shapes/, checkpoints/, log.jsonl)"),
    config: Path = CONFIG,
    overrides: list[str] = SET,
    resume: bool = typer.Option(False, "--resume", help="continue the run in --out exactly"),
    jobs: int = typer.Option(1, "--jobs", "-j", help="processes for the surface extraction"),
    device: str = DEVICE,
) -> None:
    """Surfaces from every subject's label map, their shape channels, then the network of the
    config's model.kind (bridge, ddpm or regression)."""
    from brainsynth.config import load_config
    from brainsynth.methods import cortex

    sets = [*overrides, f"train.device={device}"] if device else list(overrides)
    cfg = load_config(cortex.CortexConfig, config, sets)
    existing(data / "cache.json", "cache (run `brainsynth prepare` first)")
    check_run_dir(out, resume)
    cortex.train(cfg, data, out, resolve_device(device), resume, jobs=jobs)
    typer.echo(f"done: {out}")


def sample_cortex(
    ckpt: Path = typer.Option(..., "--ckpt", help="cortex run folder or model name"),
    surfaces: Path = SURFACES,
    out: Path = typer.Option(..., "--out", help="folder for T1w, S_c, montage, samples.tsv"),
    n: int = N,
    steps: int = STEPS,
    eta: float = ETA,
    seed: int = SEED,
    device: str = DEVICE,
    overwrite: bool = OVERWRITE,
) -> None:
    """T1w volumes whose cortex follows the given surfaces, in their world space."""
    from brainsynth.cli.sample import progress_bar
    from brainsynth.methods.cortex import sample

    with progress_bar(f"sample {n}") as progress:
        paths = sample(
            resolve_ckpt(ckpt, "cortex run"), existing(surfaces, "surface folder"), out, n=n,
            steps=steps, eta=eta, seed=seed, device=resolve_device(device), progress=progress,
            overwrite=overwrite,
        )  # fmt: skip
    typer.echo(f"{len(paths)} volumes in {out} (montage.png)")


def atrophy_cmd(
    ckpt: Path = typer.Option(..., "--ckpt", help="cortex run folder or model name"),
    surfaces: Path = SURFACES,
    mm: float = typer.Option(..., "--mm", help="cortical thinning in mm (pial moved inward)"),
    out: Path = typer.Option(..., "--out", help="output folder"),
    region: str = typer.Option(
        None,
        "--region",
        help="thin only this region: an annotation name (precentral) or a "
        "label of --region-map; default: the whole cortex",
    ),  # fmt: skip
    region_map: Path = typer.Option(
        None,
        "--region-map",
        help="label volume in the surfaces' space for --region (default: "
        "FreeSurfer label/?h.aparc.annot beside the surfaces)",
    ),  # fmt: skip
    taper: int = typer.Option(
        2, "--taper", help="vertex rings over which a region's thinning ramps up from its border"
    ),  # fmt: skip
    steps: int = STEPS,
    seed: int = SEED,
    device: str = DEVICE,
    overwrite: bool = OVERWRITE,
) -> None:
    """The scan of the given surfaces and of the same surfaces with a cortex thinner by --mm
    (same noise): ``before_*``, ``after_*`` and the atrophied surfaces in OUT/surfaces."""
    from brainsynth.methods.cortex.atrophy import atrophy_pair

    written = atrophy_pair(
        resolve_ckpt(ckpt, "cortex run"), existing(surfaces, "surface folder"), out, mm,
        steps=steps, seed=seed, region=region,
        region_map=None if region_map is None else existing(region_map, "region map"),
        taper_rings=taper, device=resolve_device(device), overwrite=overwrite,
    )  # fmt: skip
    typer.echo(f"{len(written)} files in {out}")


def surfaces_cmd(
    labels: Path = typer.Option(..., "--labels", help="label map (FreeSurfer/SynthSeg or DLMUSE)"),
    out: Path = typer.Option(..., "--out", help="folder for the GIfTI surfaces + surfaces.json"),
) -> None:
    """White and pial surfaces per hemisphere from a label map (topology checked, reported)."""
    import json

    import numpy as np

    from brainsynth.errors import InputError
    from brainsynth.geometry.extract import surfaces_from_labels, write_surfaces
    from brainsynth.io import read_volume

    lab = read_volume(existing(labels, "label map"), dtype=None)
    try:
        surfaces, reports = surfaces_from_labels(lab.data.astype(np.int64), lab.affine)
    except InputError as e:
        raise e.at(labels) from e
    paths = write_surfaces(surfaces, out, reports=reports)
    for (h, k), r in reports.items():
        typer.echo(f"{h}.{k}: {json.dumps(r.as_dict())}")
    typer.echo(f"{len(paths)} surfaces in {out}")


shape_app = typer.Typer(
    help="The cortex shape model: fit it, draw new surfaces.", no_args_is_help=True
)


@shape_app.command("fit")
def shape_fit(
    deform: Path = typer.Option(..., "--deform", help="trained deform run (the correspondence)"),
    out: Path = typer.Option(..., "--out", help="model folder"),
    components: int = typer.Option(None, "-k", help="components to keep (default: all)"),
    device: str = DEVICE,
) -> None:
    """PCA of the training subjects' cortical surfaces, corresponded through the deform run's
    registration of its template."""
    from brainsynth.methods.cortex.shapes import fit

    model = fit(existing(deform, "deform run"), out, components, device=resolve_device(device))
    ratio = float(model.explained_variance_ratio.sum())
    typer.echo(f"{model.n_components} components ({ratio:.1%} of the variance) in {out}")


@shape_app.command("sample")
def shape_sample(
    model: Path = typer.Option(..., "--model", help="model folder from `shape-model fit`"),
    out: Path = typer.Option(..., "--out", help="folder for shape_###/ surface folders"),
    n: int = typer.Option(1, "-n", help="draws from the model's prior"),
    slerp: tuple[str, str] | None = typer.Option(None, "--slerp", help="two training subjects"),
    phi: float = typer.Option(0.5, "--phi", help="slerp position in [0, 1]"),
    seed: int = SEED,
) -> None:
    """New cortical surfaces: draws from the model, or the slerp between two subjects' codes."""
    from brainsynth.methods.cortex.shapes import new_shapes

    pair = None if not slerp or slerp[0] is None else (slerp[0], slerp[1])
    folders = new_shapes(existing(model, "shape model"), out, n=n, pair=pair, phi=phi, seed=seed)
    typer.echo(f"{len(folders)} surface folder(s) in {out} (use with `sample cortex --surfaces`)")


def register(app: typer.Typer) -> None:
    from brainsynth.cli.sample import sample_app
    from brainsynth.cli.train import train_app

    train_app.command("cortex")(train_cortex)
    sample_app.command("cortex")(sample_cortex)
    app.command("atrophy")(atrophy_cmd)
    app.command("surfaces")(surfaces_cmd)
    app.add_typer(shape_app, name="shape-model")
