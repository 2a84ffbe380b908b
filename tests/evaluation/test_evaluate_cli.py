"""``brainsynth evaluate`` end to end on tiny phantom volumes (sets and paired modes)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage
from typer.testing import CliRunner

from brainsynth.cli.main import app
from brainsynth.errors import InputError
from brainsynth.evaluation import run
from brainsynth.io import Volume, write_volume

AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])
FAST = ["--n-pairs", "3", "--permutations", "50", "--device", "cpu", "--no-progress"]


def _brain(seed: int, shape=(32, 32, 32)) -> np.ndarray:
    """A small 'brain': CSF/GM/WM ellipsoid shells in [0, 1] with a random size and noise."""
    rng = np.random.default_rng(seed)
    g = np.stack(np.meshgrid(*[np.arange(s) - (s - 1) / 2 for s in shape], indexing="ij"))
    radii = np.array([13, 12, 11]) * rng.uniform(0.85, 1.05)
    r = np.sqrt(((g / radii[:, None, None, None]) ** 2).sum(0))
    img = np.zeros(shape, np.float32)
    img[r < 1] = 0.25
    img[r < 0.88] = 0.55
    img[r < 0.6] = 0.85
    img = ndimage.gaussian_filter(img, 0.6) + 0.03 * rng.standard_normal(shape) * (r < 1)
    return np.clip(img, 0, 1).astype(np.float32)


def _write_set(folder: Path, seeds, uint8: bool, suffix: str = "") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for s in seeds:
        x = _brain(s)
        data = np.round(x * 255).astype(np.uint8) if uint8 else x
        paths.append(write_volume(Volume(data, AFFINE), folder / f"sub-{s:02d}{suffix}.nii.gz"))
    return paths


def _ok(result) -> None:
    if result.exit_code != 0:
        raise AssertionError(f"{result.output}\n{result.exception!r}") from result.exception


def test_evaluate_sets_writes_named_metrics_and_report(tmp_path):
    real, synth, out = tmp_path / "real", tmp_path / "synth", tmp_path / "out"
    _write_set(real, range(5), uint8=True)  # cache-style uint8
    _write_set(synth, range(10, 15), uint8=False)  # sampler-style float [0, 1]
    res = CliRunner().invoke(
        app, ["evaluate", "--real", str(real), "--synthetic", str(synth), "--out", str(out), *FAST]
    )
    _ok(res)
    m = json.loads((out / "metrics.json").read_text())
    name = m["features"]["name"]
    assert name.startswith("random-resnet10-seed0:")
    assert m["fid"]["features"] == m["mmd"]["features"] == name
    assert m["fid"]["n_real"] == 5 and m["fid"]["n_synthetic"] == 5 and m["fid"]["dim"] == 512
    assert m["inputs"]["n_real"] == 5 and m["inputs"]["n_synthetic"] == 5
    assert m["mmd"]["bandwidth_rule"].startswith("median") and "unbiased" in m["mmd"]["estimator"]
    assert m["brainsynth_version"] and m["preprocessing"]["data_range"] == 1.0
    d = m["diversity_ms_ssim"]
    assert d["synthetic"]["n_pairs"] == 3 and d["real"]["n_pairs"] == 3
    assert d["params"]["kernel_size"] == 3 and d["params"]["levels"] == 4
    assert set(m["anatomy"]["gmm"]["volumes"]) >= {"gm", "wm", "csf", "ventricles", "brain"}
    assert m["anatomy"]["gmm"]["volumes"]["gm"]["ks_statistic"] is not None
    assert name in res.output
    html = (out / "report.html").read_text()
    assert name in html and "data:image/png;base64" in html
    rows = list(csv.DictReader(open(out / "per_subject.tsv"), delimiter="\t"))
    assert len(rows) == 10 and float(rows[0]["gmm_gm_mm3"]) > 0
    assert (out / "figures" / "volumes_gmm.png").exists()


def test_identical_sets_give_zero_fid_and_nonpositive_mmd(tmp_path):
    real = tmp_path / "real"
    _write_set(real, range(4), uint8=True)
    items = run.list_inputs(real)
    opts = run.EvalOptions(n_pairs=2, n_permutations=10, progress=False, n_montage=0)
    m, _ = run.evaluate_sets(items, items, opts)
    assert m["fid"]["fid"] == pytest.approx(0.0, abs=1e-6)
    n = len(items)
    # Unbiased MMD^2 of a set with itself is -(2/n)(1 - mean k) in [-2/n, 0].
    assert -2 / n <= m["mmd"]["mmd2_rbf_unbiased"] <= 0
    assert m["anatomy"]["gmm"]["volumes"]["gm"]["ks_statistic"] == 0
    assert m["intensity"]["wasserstein1_pooled_histogram"] == pytest.approx(0.0, abs=1e-12)


def test_evaluate_paired(tmp_path):
    real, restored, out = tmp_path / "gt", tmp_path / "restored", tmp_path / "out"
    paths = _write_set(real, range(3), uint8=False)
    restored.mkdir()
    rng = np.random.default_rng(0)
    for p in paths:
        x = run.load_image(run.Item("x", p), "unit")[0]
        y = np.clip(x + 0.02 * rng.standard_normal(x.shape), 0, 1).astype(np.float32)
        write_volume(Volume(y, AFFINE), restored / p.name.replace(".nii.gz", "_restored.nii.gz"))
    write_volume(Volume(x, AFFINE), restored / "sub-99_restored.nii.gz")  # no partner
    res = CliRunner().invoke(
        app,
        [
            "evaluate",
            "--paired",
            "--real",
            str(real),
            "--synthetic",
            str(restored),
            "--out",
            str(out),
            *FAST,
        ],
    )
    _ok(res)
    m = json.loads((out / "metrics.json").read_text())
    assert m["mode"] == "paired" and m["inputs"]["n_pairs"] == 3
    assert m["inputs"]["unmatched_synthetic"] == ["sub-99_restored"]
    s = m["summary"]
    assert 20 < s["mask_psnr"]["mean"] < 50 and 0 < s["mask_ssim"]["mean"] < 1
    assert s["whole_mae"]["mean"] < s["mask_mae"]["mean"]  # the noise-free background
    assert {"mask_ms_ssim", "mask_4g_r_ssim", "whole_ms_ssim"} <= set(s)
    assert m["settings"]["ms_ssim"]["kernel_size"] == 3
    rows = list(csv.DictReader(open(out / "per_pair.tsv"), delimiter="\t"))
    assert len(rows) == 3
    assert (out / "report.html").exists()


def test_inputs_and_intensity_errors(tmp_path):
    folder = tmp_path / "vols"
    paths = _write_set(folder, range(2), uint8=True)
    manifest = tmp_path / "list.tsv"
    manifest.write_text(
        "subject\timage\n" + "".join(f"s{i}\tvols/{p.name}\n" for i, p in enumerate(paths))
    )
    for reader in (run.list_inputs, run._list_volumes):
        items = reader(manifest)
        assert [i.id for i in items] == ["s0", "s1"] and items[0].image.exists()
        assert [i.id for i in reader(folder)] == ["sub-00", "sub-01"]
    big = write_volume(
        Volume(np.full((8, 8, 8), 300.0, np.float32), AFFINE), tmp_path / "big.nii.gz"
    )
    with pytest.raises(InputError, match="--intensity robust"):
        run.load_image(run.Item("big", big), "unit")
    x = run.load_image(run.Item("big", big), "robust")[0]
    assert x.max() == pytest.approx(1.0)
    assert run._pair_key("sub-01_T1w_restored") == "sub-01"
