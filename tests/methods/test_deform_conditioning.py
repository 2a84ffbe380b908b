"""Method deform with a fields model conditioned on age and sex (``fields.conditioning``): the tiny
fields stage trained and sampled through the CLI, the covariates reaching the network, guidance,
unconditional runs refusing covariates, and config errors."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from brainsynth.cli.main import app
from brainsynth.config import load_config, read_yaml
from brainsynth.data.covariates import CovariateNormaliser
from brainsynth.io import read_volume
from brainsynth.methods import deform
from brainsynth.methods.conditioning import covariate_vectors
from brainsynth.methods.deform.networks import config_from_meta
from brainsynth.methods.deform.train import field_covariates
from brainsynth.training.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "deform_tiny.yaml"
COND = ["--set", "fields.conditioning=[age,sex]", "--set", "fields.cond_dropout=0.5"]
runner = CliRunner()


@pytest.fixture(scope="module")
def cond_run(deform_run, restore_cache, tmp_path_factory) -> Path:
    """The tiny run's template, registration and cached velocities, with a fields stage trained
    again, conditioned on age and sex, through the CLI."""
    run = tmp_path_factory.mktemp("deform_cond") / "run"
    shutil.copytree(deform_run / "template", run / "template")
    shutil.copytree(deform_run / "register", run / "register")
    (run / "fields").mkdir()
    shutil.copy(deform_run / "fields" / "velocities.pt", run / "fields" / "velocities.pt")
    r = runner.invoke(
        app,
        ["train", "deform", "--stage", "fields", "--data", str(restore_cache), "--out", str(run),
         "--config", str(TINY), "--device", "cpu", *COND],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    return run


def _fields(run: Path, out: Path, **kw) -> np.ndarray:
    deform.sample(run, out, n=1, seed=3, overwrite=True, **kw)
    return read_volume(out / "sample_000_field.nii.gz", ndim=None).data


def test_conditional_fields_stage_trains_and_samples_through_the_cli(cond_run, tmp_path):
    cfg, model, meta = deform.load_network(cond_run, "fields")
    assert cfg.fields.conditioning == ("age", "sex") and model.context_dim == 2
    ages = sorted(r["age"] for r in meta["training_covariates"])
    assert len(ages) == 2 and all(30 <= a <= 34 for a in ages)  # the tiny cache's train split
    assert set(meta["covariate_normaliser"]["mean"]) >= {"age"}
    age = f"{(ages[0] + ages[-1]) / 2:g}"
    out = tmp_path / "s"
    r = runner.invoke(
        app,
        ["sample", "deform", "--ckpt", str(cond_run), "--out", str(out), "-n", "3",
         "--age", age, "--sex", "F", "--guidance", "2.0"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(open(out / "samples.tsv"), delimiter="\t"))
    assert [(x["age"], x["sex"]) for x in rows] == [(age, "F")] * 3
    assert all(int(x["folding_voxels"]) >= 0 for x in rows)
    used = read_yaml(out / "config.yaml")
    assert used["guidance"] == 2.0 and used["covariates"] == {"age": float(age), "sex": 0.0}
    # only --age given: sex is drawn from the training subjects, and written
    r = runner.invoke(
        app, ["sample", "deform", "--ckpt", str(cond_run), "--out", str(tmp_path / "a"),
              "-n", "2", "--age", age],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(open(tmp_path / "a" / "samples.tsv"), delimiter="\t"))
    assert all(x["age"] == age and x["sex"] in ("F", "M") for x in rows)


def test_the_covariates_reach_the_network_and_guidance_mixes_the_branches(cond_run, tmp_path):
    def fields(age: float, guidance: float) -> np.ndarray:
        with pytest.warns(UserWarning, match="outside the training range"):
            return _fields(cond_run, tmp_path / "o", covariates={"age": age, "sex": 1.0},
                           guidance=guidance)  # fmt: skip

    young, old = fields(20.0, 1.0), fields(80.0, 1.0)
    assert not np.allclose(young, old)  # the same seed, another age: another field
    # guidance 0 is the unconditional model: the covariates no longer matter
    np.testing.assert_array_equal(fields(20.0, 0.0), fields(80.0, 0.0))
    assert not np.allclose(fields(20.0, 0.0), young)
    assert not np.allclose(fields(20.0, 2.0), young)  # guidance 2 extrapolates past the condition


def test_an_unconditional_run_refuses_covariates_and_guidance(deform_run, tmp_path):
    for extra in (["--age", "70"], ["--sex", "F"], ["--guidance", "2"]):
        r = runner.invoke(
            app, ["sample", "deform", "--ckpt", str(deform_run), "--out", str(tmp_path / "o"),
                  *extra],
        )  # fmt: skip
        msg = str(r.exception)
        assert r.exit_code != 0 and str(deform_run) in msg and "unconditional" in msg, msg
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "extra,words",
    [
        (["--brain", "1.2e6"], ("conditioned on ['age', 'sex']", "brain_volume")),
        (["--age", "1e9"], ("requested age", "plausible range")),
        (["--sex", "X"], ("sex must be M or F",)),
    ],
)
def test_a_conditioned_run_checks_the_requested_covariates(cond_run, tmp_path, extra, words):
    r = runner.invoke(
        app, ["sample", "deform", "--ckpt", str(cond_run), "--out", str(tmp_path / "o"), *extra]
    )
    msg = str(r.exception)
    assert r.exit_code != 0 and all(w in msg for w in words), msg


def test_a_run_from_before_the_option_loads_unconditional(deform_run):
    meta = dict(load_checkpoint(deform_run / "fields", with_state=False)["meta"]["config"])
    new = ("conditioning", "cond_dropout", "embed")
    meta["fields"] = {k: v for k, v in meta["fields"].items() if k not in new}
    meta["sample"] = {k: v for k, v in meta["sample"].items() if k != "guidance"}
    cfg = config_from_meta(meta)
    assert cfg.fields.conditioning == () and cfg == load_config(deform.DeformConfig, TINY)
    weights = load_checkpoint(deform_run / "fields", names=("ema",), with_state=False)["ema"]
    deform.build_fields_model(cfg).load_state_dict(weights)


def test_field_covariates_follow_the_subjects_and_their_mirrors(deform_run, restore_cache):
    cfg = load_config(deform.DeformConfig, TINY, ["fields.conditioning=[sex,age]"])
    saved = torch.load(deform_run / "fields" / "velocities.pt", weights_only=True)
    ids, n = saved["ids"], len(saved["fields"])
    vec, known = field_covariates(cfg, restore_cache, ids, n)
    assert vec.shape == (n, 2) and n == 2 * len(ids)
    assert torch.equal(vec[: len(ids)], vec[len(ids) :])  # a mirror keeps its subject's
    ages = [r["age"] for r in known["training_covariates"]]
    norm = CovariateNormaliser.from_dict(known["covariate_normaliser"])
    expected = [(a - norm.mean["age"]) / norm.std["age"] for a in ages]
    np.testing.assert_allclose(vec[: len(ids), 1].numpy(), expected, rtol=1e-5)
    # a subject with a missing covariate is conditioned on the training mean, as in ldm
    missing = {"age": None, "sex": None, "ventricle_volume": None, "brain_volume": None}
    got = covariate_vectors(norm, [missing], ("age", "sex"))
    np.testing.assert_allclose(got.numpy(), [[0.0, norm.sex_fraction_male]])


@pytest.mark.parametrize(
    "setting,words",
    [
        ("fields.conditioning=[age,weight]", ("fields.conditioning[1]", "age", "sex")),
        ("fields.conditioning=[age,age]", ("fields.conditioning", "twice")),
        ("fields.cond_dropout=1", ("fields.cond_dropout", "[0, 1)")),
        ("sample.guidance=-1", ("sample.guidance", ">= 0")),
    ],
)
def test_bad_conditioning_settings_are_config_errors(tmp_path, setting, words):
    r = runner.invoke(
        app, ["train", "deform", "--stage", "fields", "--data", str(tmp_path), "--out",
              str(tmp_path / "o"), "--config", str(TINY), "--set", setting],
    )  # fmt: skip
    msg = str(r.exception)
    assert r.exit_code != 0 and all(w in msg for w in words), msg


def test_conditioning_benchmark_measures_the_labels_and_resumes(cond_run, restore_cache, tmp_path):
    """benchmarks/deform_conditioning.py on the tiny run: one folder per age level, the slopes in
    its summary, the training split's slope from the manifest, and a rerun reuses the samples."""
    import json
    import subprocess
    import sys

    script = REPO / "benchmarks" / "deform_conditioning.py"
    cmd = [sys.executable, str(script), "--run", str(cond_run), "--cache", str(restore_cache),
           "--out", str(tmp_path), "--covariate", "age", "--levels", "30,34", "-n", "2"]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads((tmp_path / "summary_age.json").read_text())
    assert summary["levels"] == [30.0, 34.0] and len(summary["per_level_mean_ml"]) == 2
    assert "real_slope" in summary and np.isfinite(summary["slope"])
    with open(tmp_path / "age_30" / "samples.tsv", newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    assert len(rows) == 2 and all(float(x["age"]) == 30 for x in rows)
    stamp = (tmp_path / "age_30" / "samples.tsv").stat().st_mtime_ns
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "age_30" / "samples.tsv").stat().st_mtime_ns == stamp
