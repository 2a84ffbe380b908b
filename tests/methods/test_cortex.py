"""The cortex method on tiny sizes: shape channels from label maps, the bridge trains, resumes and
samples a volume in the given surfaces' world space; the grid helpers' geometry."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from brainsynth.config import load_config
from brainsynth.data.datasets import Subject
from brainsynth.data.prepare import PrepareOptions, prepare_cache
from brainsynth.io import Volume, write_volume

REPO = Path(__file__).resolve().parents[2]
CORTEX_TINY = REPO / "configs" / "cortex_tiny.yaml"


def _ball(shape, centre, radii) -> np.ndarray:
    g = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    return (((g - np.asarray(centre)) / np.asarray(radii)) ** 2).sum(-1) <= 1


def _subject(root: Path, sid: str, seed: int) -> Subject:
    """A 32 x 28 x 28 2 mm head (RAS) in FreeSurfer labels: two hemispheres, each a WM ellipsoid
    (2 / 41) in a cortex shell (3 / 42), a little different per subject."""
    rng = np.random.default_rng(seed)
    shape = (32, 28, 28)
    lab = np.zeros(shape, np.uint16)
    r = 1 + 0.5 * (seed % 2)
    for x, wm, ctx in ((10, 2, 3), (21, 41, 42)):
        lab[_ball(shape, (x, 14, 14), (5 + r, 9, 8))] = ctx
        lab[_ball(shape, (x, 14, 14), (3 + r, 7, 6))] = wm
    t1 = np.select([np.isin(lab, (2, 41)), np.isin(lab, (3, 42))], [110.0, 70.0], 5.0)
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    aff[:3, 3] = (-31.0, -27.0, -27.0)
    t1_path = write_volume(
        Volume((t1 + rng.normal(0, 2, shape)).astype(np.float32), aff), root / f"{sid}.nii.gz"
    )
    lab_path = write_volume(Volume(lab, aff), root / f"{sid}_dseg.nii.gz")
    return Subject(sid, t1_path, lab_path, {}, {"age": 30.0 + seed, "sex": float(seed % 2)})


@pytest.fixture(scope="module")
def cortex_cache(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cortex")
    subs = [_subject(root / "src", f"s{i}", i) for i in range(5)]
    opts = PrepareOptions(spacing=2.0, shape=(32, 28, 28))
    prepare_cache(subs, root / "cache", opts, split=(0.4, 0.4, 0.2), progress=False)
    return root / "cache"


@pytest.fixture(scope="module")
def cortex_run(cortex_cache, tmp_path_factory) -> Path:
    from brainsynth.methods import cortex

    cfg = load_config(cortex.CortexConfig, CORTEX_TINY)
    return cortex.train(cfg, cortex_cache, tmp_path_factory.mktemp("crun") / "run", "cpu")


def test_pooled_affine_puts_each_voxel_at_the_centre_of_its_block():
    from brainsynth.methods.cortex.data import pooled_affine

    aff = np.array([[0, 0, 2.0, -20], [-2.0, 0, 0, 25], [0, 2.0, 0, -22], [0, 0, 0, 1]])
    p = pooled_affine(aff, 2)
    block = np.array([[i, j, k, 1.0] for i in (4, 5) for j in (2, 3) for k in (6, 7)])
    np.testing.assert_allclose(p @ [2, 1, 3, 1], (aff @ block.T).mean(1))


def test_pad_channels_fills_with_the_values_far_outside_the_brain():
    from brainsynth.methods.cortex.data import OUTSIDE, pad_channels

    ch = torch.zeros(5, 3, 3, 3)
    out = pad_channels(ch, (4, 4, 4))
    assert out.shape == (5, 4, 4, 4)
    assert torch.equal(out[:, :3, :3, :3], ch)
    assert torch.equal(out[:, 3, 0, 0], torch.tensor(OUTSIDE))


def test_grid_affine_puts_the_pial_centre_at_the_training_centre():
    from brainsynth.io import Surface
    from brainsynth.methods.cortex.sample import grid_affine

    tri = np.array([[0, 1, 2], [0, 2, 3], [0, 3, 1], [1, 3, 2]])
    v = np.array([[10.0, 20, 30], [14, 20, 30], [10, 26, 30], [10, 20, 38]])
    surfaces = {("lh", "pial"): Surface(v, tri)}
    grid = {"spacing": 4.0, "cortex_centre": [5.0, 6.0, 7.0], "shape": [16, 14, 14]}
    aff = grid_affine(surfaces, grid)
    np.testing.assert_allclose(aff @ [5, 6, 7, 1], [12, 23, 34, 1])
    np.testing.assert_allclose(np.diag(aff)[:3], 4.0)


def test_shape_channels_of_a_label_map_have_the_ribbon_where_the_cortex_is(cortex_cache):
    from brainsynth.data.cache import CacheDataset
    from brainsynth.io import read_volume
    from brainsynth.methods import cortex

    item = CacheDataset(cortex_cache, "train")[0]
    lab = read_volume(cortex_cache / "subjects" / f"{item['subject']}_dseg.nii.gz", dtype=None)
    ch, aff, surfaces, reports = cortex.subject_shapes(
        lab.data.astype(np.int64), lab.affine, load_config(cortex.CortexConfig, None)
    )
    assert ch.shape == (5, *lab.data.shape)  # downsample 1 here
    np.testing.assert_allclose(aff, lab.affine)
    assert set(surfaces) == {(h, k) for h in ("lh", "rh") for k in ("white", "pial")}
    ribbon = ch[4] > 0.5
    cortex_vox = np.isin(lab.data, (3, 42))
    # the ribbon is the cortex up to the surfaces' sub-voxel placement
    dice = 2 * (ribbon & cortex_vox).sum() / (ribbon.sum() + cortex_vox.sum())
    assert dice > 0.6
    assert np.all(ch[0][ribbon] == 0)  # S_c is 0 in the ribbon


def test_train_sample_and_resume(cortex_run, cortex_cache, tmp_path):
    from brainsynth.io import read_volume
    from brainsynth.methods import cortex
    from brainsynth.training.checkpoint import read_meta

    grid = read_meta(cortex_run)["config"]["grid"]
    assert grid["shape"] == [16, 14, 14]
    assert grid["spacing"] == 4.0
    # the test subject's surfaces were written: sample a volume from them
    folder = next(p for p in (cortex_run / "shapes").iterdir() if p.is_dir())
    paths = cortex.sample(cortex_run, folder, tmp_path / "out", n=2, steps=3)
    assert len(paths) == 2
    vol = read_volume(paths[0])
    assert vol.data.shape == (16, 14, 14)
    assert np.isfinite(vol.data).all() and vol.data.min() >= 0 and vol.data.max() <= 1
    # world space of the surfaces: the grid centre is near the surfaces' centre
    surfaces = cortex.read_surfaces(folder)
    v = np.concatenate([s.vertices for s in surfaces.values()])
    centre = vol.affine @ [7.5, 6.5, 6.5, 1]
    assert np.abs(centre[:3] - (v.min(0) + v.max(0)) / 2).max() < 8.0
    assert (tmp_path / "out" / "montage.png").is_file()
    # resume: a second call with --resume continues from the last step
    cfg = load_config(cortex.CortexConfig, CORTEX_TINY, ["train.steps=6"])
    cortex.train(cfg, cortex_cache, cortex_run, "cpu", resume=True)
    assert read_meta(cortex_run)["step"] == 6


def test_atrophy_pair_differs_only_where_the_cortex_thinned(cortex_run, tmp_path):
    import json

    from brainsynth.io import read_volume
    from brainsynth.methods import cortex
    from brainsynth.methods.cortex.atrophy import atrophy_pair

    folder = next(p for p in (cortex_run / "shapes").iterdir() if p.is_dir())
    atrophy_pair(cortex_run, folder, tmp_path / "a", 1.0, steps=2)
    body = json.loads((tmp_path / "a" / "atrophy.json").read_text())
    for hemi in ("lh", "rh"):
        assert -1.05 < body["mean_thickness_change_mm"][hemi] < -0.3
    before = read_volume(tmp_path / "a" / "before_T1w.nii.gz")
    after = read_volume(tmp_path / "a" / "after_T1w.nii.gz")
    np.testing.assert_array_equal(before.affine, after.affine)
    assert len(cortex.read_surfaces(tmp_path / "a" / "surfaces")) == 4


def test_exported_model_samples_by_name_like_the_run(cortex_run, models, tmp_path):
    from typer.testing import CliRunner

    from brainsynth.cli.main import app
    from brainsynth.io import read_volume

    runner = CliRunner()
    r = runner.invoke(app, ["export", "--run", str(cortex_run), "--name", "cortex-tiny"])
    assert r.exit_code == 0, r.output
    info = json.loads((models / "cortex-tiny" / "model.json").read_text())
    assert info["method"] == "cortex" and info["grid"] == {"shape": [16, 14, 14], "spacing": 4.0}
    assert not any(f.startswith("shapes/") for f in info["files"])  # training data stays behind
    folder = next(p for p in (cortex_run / "shapes").iterdir() if p.is_dir())
    vols = []
    for ckpt, out in ((str(cortex_run), "a"), ("cortex-tiny", "b")):
        r = runner.invoke(app, ["sample", "cortex", "--ckpt", ckpt, "--surfaces", str(folder),
                                "--out", str(tmp_path / out), "-n", "1", "--steps", "2"])  # fmt: skip
        assert r.exit_code == 0, r.output
        vols.append(read_volume(next((tmp_path / out).glob("*_T1w.nii.gz"))).data)
    assert np.abs(vols[0] - vols[1]).max() < 0.02  # float16 weights: the same volume


# --- baselines and ablation: the same method with model.kind / data.channels switched ------------

VARIANTS = {
    "ddpm": ["model.kind=ddpm"],
    "regression": ["model.kind=regression"],
    "fused": ["data.channels=fused"],
}


@pytest.fixture(scope="module")
def variant_runs(cortex_run, cortex_cache, tmp_path_factory) -> dict[str, Path]:
    """Each variant trained for 2 steps, reusing the bridge run's shape channels (copied)."""
    import shutil

    from brainsynth.methods import cortex

    runs = {}
    for name, sets in VARIANTS.items():
        out = tmp_path_factory.mktemp(f"crun_{name}") / "run"
        shutil.copytree(cortex_run / "shapes", out / "shapes")
        cfg = load_config(cortex.CortexConfig, CORTEX_TINY, [*sets, "train.steps=2"])
        runs[name] = cortex.train(cfg, cortex_cache, out, "cpu")
    return runs


def test_fused_ablation_network_sees_s_c_alone():
    from brainsynth.methods import cortex
    from brainsynth.methods.cortex.data import select_channels

    cfg = load_config(cortex.CortexConfig, CORTEX_TINY, ["data.channels=fused"])
    assert cortex.build_model(cfg).concat_channels == 1
    assert cortex.build_model(load_config(cortex.CortexConfig, CORTEX_TINY)).concat_channels == 5
    ch = torch.arange(5.0).reshape(1, 5, 1, 1, 1).expand(2, 5, 2, 2, 2)
    assert torch.equal(select_channels(ch, cfg), ch[:, :1])  # S_c is the first channel


def test_regression_input_is_constant():
    from brainsynth.methods.cortex.networks import regression_input

    x, t = regression_input(torch.randn(3, 5, 4, 4, 4))
    assert x.shape == (3, 1, 4, 4, 4) and not x.any()
    assert t.shape == (3,) and t.dtype == torch.long and not t.any()


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_variant_trains_and_samples_a_volume(name, variant_runs, tmp_path):
    from brainsynth.io import read_volume
    from brainsynth.methods import cortex
    from brainsynth.training.checkpoint import read_meta

    run = variant_runs[name]
    assert read_meta(run)["step"] == 2
    cfg, model, _ = cortex.load_model(run)  # the checkpoint's config rebuilds the right network
    assert (cfg.model.kind, cfg.data.channels) == {
        "ddpm": ("ddpm", "all"),
        "regression": ("regression", "all"),
        "fused": ("bridge", "fused"),
    }[name]
    assert model.concat_channels == (1 if name == "fused" else 5)
    folder = next(p for p in (run / "shapes").iterdir() if p.is_dir())
    paths = cortex.sample(run, folder, tmp_path / "out", n=2, steps=2, seed=3)
    a, b = (read_volume(p).data for p in paths)
    for v in (a, b):
        assert v.shape == (16, 14, 14)
        assert np.isfinite(v).all() and v.min() >= 0 and v.max() <= 1
    if name == "regression":
        np.testing.assert_array_equal(a, b)  # one forward pass: no noise anywhere
        from brainsynth.methods.cortex.atrophy import atrophy_pair

        atrophy_pair(run, folder, tmp_path / "atrophy", 1.0)
        diff = read_volume(tmp_path / "atrophy" / "difference.nii.gz").data
        assert np.isfinite(diff).all() and np.abs(diff).max() > 0
    else:
        assert not np.array_equal(a, b)  # two noise draws


def test_cpu_variant_configs_differ_from_the_bridge_only_in_what_they_test():
    from brainsynth.methods import cortex

    def load(name):
        return load_config(cortex.CortexConfig, REPO / "configs" / f"cortex_{name}.yaml")

    base = load("cpu")
    for name, kind, channels in (("cpu_ddpm", "ddpm", "all"),
                                 ("cpu_regression", "regression", "all"),
                                 ("cpu_fused", "bridge", "fused")):  # fmt: skip
        cfg = load(name)
        assert (cfg.model.kind, cfg.data.channels) == (kind, channels)
        assert cfg.train == base.train
        assert (cfg.model.preset, cfg.model.channels) == (base.model.preset, base.model.channels)
        assert cfg.data.downsample == base.data.downsample and cfg.data.clip_mm == base.data.clip_mm
        assert cfg.sample.steps == base.sample.steps  # the same 10 network evaluations
    assert load("gpu").data.downsample == 1


def test_cli_train_sample_atrophy_surfaces(cortex_cache, tmp_path):
    from typer.testing import CliRunner

    from brainsynth.cli.main import app

    runner = CliRunner()
    run = tmp_path / "run"
    r = runner.invoke(app, ["train", "cortex", "--data", str(cortex_cache), "--out", str(run),
                            "--config", str(CORTEX_TINY), "--set", "train.steps=2"])  # fmt: skip
    assert r.exit_code == 0, r.output
    folder = next(p for p in (run / "shapes").iterdir() if p.is_dir())
    r = runner.invoke(app, ["sample", "cortex", "--ckpt", str(run), "--surfaces", str(folder),
                            "--out", str(tmp_path / "s"), "-n", "1", "--steps", "2"])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert len(list((tmp_path / "s").glob("*_T1w.nii.gz"))) == 1
    r = runner.invoke(app, ["atrophy", "--ckpt", str(run), "--surfaces", str(folder), "--mm",
                            "0.5", "--out", str(tmp_path / "a"), "--steps", "2"])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert (tmp_path / "a" / "after_T1w.nii.gz").is_file()
    lab = cortex_cache / "subjects" / f"{folder.name}_dseg.nii.gz"
    _check_regional_atrophy_cli(runner, app, run, folder, lab, tmp_path / "region")
    r = runner.invoke(app, ["surfaces", "--labels", str(lab), "--out", str(tmp_path / "surf")])
    assert r.exit_code == 0, r.output
    assert len(list((tmp_path / "surf").glob("*.surf.gii"))) == 4


def _check_regional_atrophy_cli(runner, app, run, folder, lab, out):
    """--region with a label volume: only the region's pial vertices move; a label no vertex
    carries is a clear error."""
    import json

    from brainsynth.geometry.region import mask_from_volume
    from brainsynth.io import read_volume
    from brainsynth.methods import cortex

    surf, vol = cortex.read_surfaces(folder), read_volume(lab, dtype=None)
    pial, white = surf["lh", "pial"], surf["lh", "white"]
    region = next(  # a label that holds some but not all lh mid-thickness points
        str(v) for v in np.unique(vol.data)[1:]
        if 0 < mask_from_volume(lab, vol.data, vol.affine, str(v), pial, white).mean() < 1
    )  # fmt: skip
    mask = mask_from_volume(lab, vol.data, vol.affine, region, pial, white)
    r = runner.invoke(app, ["atrophy", "--ckpt", str(run), "--surfaces", str(folder), "--mm", "0.5",
                            "--region", region, "--region-map", str(lab), "--taper", "0",
                            "--out", str(out), "--steps", "1"])  # fmt: skip
    assert r.exit_code == 0, r.output
    body = json.loads((out / "atrophy.json").read_text())
    assert body["region"] == region and body["region_vertices"]["lh"] == mask.sum()
    after = cortex.read_surfaces(out / "surfaces")["lh", "pial"]
    np.testing.assert_allclose(after.vertices[~mask], pial.vertices[~mask], atol=1e-4)
    assert np.abs(after.vertices[mask] - pial.vertices[mask]).max() > 0.1
    r = runner.invoke(app, ["atrophy", "--ckpt", str(run), "--surfaces", str(folder), "--mm", "0.5",
                            "--region", "9999", "--region-map", str(lab),
                            "--out", str(out.parent / "r2")])  # fmt: skip
    assert r.exit_code != 0 and "no pial vertex lies in region '9999'" in str(r.exception)
    assert lab.name in str(r.exception)


def test_bad_surfaces_and_label_maps_are_clear_errors(cortex_run, tmp_path):
    import shutil

    from brainsynth.errors import InputError
    from brainsynth.geometry.extract import surfaces_from_labels
    from brainsynth.io import Surface, read_surface, write_surface
    from brainsynth.methods import cortex

    folder = next(p for p in (cortex_run / "shapes").iterdir() if p.is_dir())
    # a hemisphere missing
    missing = tmp_path / "missing"
    shutil.copytree(folder, missing)
    next(missing.glob("*hemi-R_pial.surf.gii")).unlink()
    with pytest.raises(InputError, match="missing surface.*rh.pial"):
        cortex.sample(cortex_run, missing, tmp_path / "o1")
    # an open mesh: one face removed
    open_ = tmp_path / "open"
    shutil.copytree(folder, open_)
    p = next(open_.glob("*hemi-L_white.surf.gii"))
    s = read_surface(p)
    write_surface(Surface(s.vertices, s.faces[1:]), p)
    with pytest.raises(InputError, match="open mesh") as e:
        cortex.sample(cortex_run, open_, tmp_path / "o2")
    assert "hemi-L_white" in str(e.value)
    # surfaces in metres * 1000 (far larger than any brain): refused, naming the folder
    big = tmp_path / "big"
    shutil.copytree(folder, big)
    for q in big.glob("*.surf.gii"):
        s = read_surface(q)
        write_surface(Surface(s.vertices * 1000, s.faces), q)
    with pytest.raises(InputError, match="more than the model's grid") as e:
        cortex.sample(cortex_run, big, tmp_path / "o3")
    assert "big" in str(e.value)
    # a label map without cortex labels
    lab = np.zeros((20, 20, 20), np.int64)
    lab[4:9, 5:15, 5:15], lab[11:16, 5:15, 5:15] = 2, 41
    with pytest.raises(InputError, match="no cortex label"):
        surfaces_from_labels(lab, np.eye(4))


def test_resume_of_a_run_stopped_before_its_first_checkpoint_starts_training(
    cortex_run, cortex_cache, tmp_path
):
    import shutil

    from brainsynth.methods import cortex
    from brainsynth.training.checkpoint import read_meta

    run = tmp_path / "run"
    shutil.copytree(cortex_run / "shapes", run / "shapes")  # the extraction was done, no step
    cfg = load_config(cortex.CortexConfig, CORTEX_TINY, ["train.steps=2"])
    cortex.train(cfg, cortex_cache, run, "cpu", resume=True)
    assert read_meta(run)["step"] == 2


def test_shape_model_from_the_registration_fits_and_draws_corresponded_surfaces(
    cortex_cache, tmp_path
):
    from typer.testing import CliRunner

    from brainsynth.cli.main import app
    from brainsynth.methods import deform
    from brainsynth.methods.cortex.sample import read_surfaces

    runner = CliRunner()
    deform_run = tmp_path / "deform"
    dcfg = load_config(deform.DeformConfig, REPO / "configs" / "deform_tiny.yaml")
    deform.train(dcfg, cortex_cache, deform_run, "cpu", stage="register")

    r = runner.invoke(app, ["shape-model", "fit", "--deform", str(deform_run),
                            "--out", str(tmp_path / "m")])  # fmt: skip
    assert r.exit_code == 0, r.output
    codes = json.loads((tmp_path / "m" / "codes.json").read_text())
    a, b = sorted(codes)[:2]
    r = runner.invoke(app, ["shape-model", "sample", "--model", str(tmp_path / "m"), "--out",
                            str(tmp_path / "s"), "--slerp", a, b, "--phi", "0"])  # fmt: skip
    assert r.exit_code == 0, r.output
    mid = read_surfaces(tmp_path / "s" / "shape_000")
    tmpl = read_surfaces(tmp_path / "m" / "template")
    for key, s in mid.items():  # the same mesh (faces) as the template: vertex-corresponded
        assert np.array_equal(s.faces, tmpl[key].faces)
    # phi = 0 is subject a itself (the slerp's identities are tested in tests/geometry; two
    # training subjects here give one component, with opposite codes)
    from brainsynth.geometry.shape_model import load_shape_model

    model = load_shape_model(tmp_path / "m" / "shape_model.safetensors")
    z = model.encode({f"{h}_{k}": s for (h, k), s in mid.items()})
    np.testing.assert_allclose(z, codes[a], atol=1e-4)
    r = runner.invoke(app, ["shape-model", "sample", "--model", str(tmp_path / "m"), "--out",
                            str(tmp_path / "d"), "-n", "2"])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert len(list((tmp_path / "d").iterdir())) == 2
    r = runner.invoke(app, ["shape-model", "sample", "--model", str(tmp_path / "m"), "--out",
                            str(tmp_path / "e"), "--slerp", "nobody", b])  # fmt: skip
    assert r.exit_code != 0 and "unknown subject" in str(r.exception)


def test_cortex_eval_benchmark_runs_and_resumes(cortex_run, cortex_cache, tmp_path):
    """benchmarks/cortex_eval.py on the tiny run: rows for the run and the real floor, atrophy
    rows for the first run only, and a rerun keeps the rows instead of recomputing them."""
    import csv
    import subprocess
    import sys

    script = Path(__file__).parents[2] / "benchmarks" / "cortex_eval.py"
    cmd = [sys.executable, str(script), "--cache", str(cortex_cache), "--out", str(tmp_path),
           "--runs", f"a={cortex_run}", f"b={cortex_run}", "-n", "1", "--steps", "1",
           "--margin", "4", "--atrophy", "1", "--atrophy-oracle"]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]

    def rows(name):
        with open(tmp_path / name, newline="") as fh:
            return list(csv.DictReader(fh, delimiter="\t"))

    first = rows("subjects.tsv")
    assert sorted(rw["run"] for rw in first) == ["a", "b", "real"]
    assert {rw["run"] for rw in rows("atrophy.tsv")} == {"a", "oracle_pv"}
    a, b = (next(rw for rw in first if rw["run"] == n) for n in "ab")
    assert a["psnr"] == b["psnr"]  # one run twice, one seed: the same scan
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert rows("subjects.tsv") == first  # resumed: nothing recomputed or repeated


def test_ranks_share_the_shape_extraction(cortex_cache, tmp_path):
    """shard=(rank, world): each rank extracts its own slice of the subjects, together all."""
    from brainsynth.data.cache import read_cache_manifest
    from brainsynth.methods import cortex

    cfg = load_config(cortex.CortexConfig, CORTEX_TINY)
    made = []
    for rank in (0, 1):
        run = tmp_path / f"rank{rank}"
        assert cortex.build_shapes(cortex_cache, run, cfg, progress=False, shard=(rank, 2)) == {}
        made.append({p.stem for p in (run / "shapes").glob("*.npz")})
    subjects = {r["subject"] for r in read_cache_manifest(cortex_cache) if r.get("labels")}
    assert made[0] | made[1] == subjects and not made[0] & made[1]
    assert abs(len(made[0]) - len(made[1])) <= 1
