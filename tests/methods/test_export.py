"""``brainsynth export`` of tiny trained runs (restore, deform, ldm): float16 EMA weights only, the
files each sampler reads, sizes in model.json; the model loads where the run does (by path or by
name) and gives the run's outputs within float16 precision; damage is caught by the checksums."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from brainsynth.cli.main import app
from brainsynth.errors import InputError
from brainsynth.io import read_volume
from brainsynth.training.checkpoint import load_checkpoint, read_meta

runner = CliRunner()


def _ok(result) -> None:
    if result.exit_code != 0:
        raise AssertionError(f"{result.output}\n{result.exception!r}") from result.exception


def _export(run: Path, name: str, *more: str):
    return runner.invoke(app, ["export", "--run", str(run), "--name", name, *more])


def _files(model: Path) -> dict[str, int]:
    return {
        str(p.relative_to(model)): p.stat().st_size
        for p in model.rglob("*")
        if p.is_file() and p.name != "model.json"
    }


def _check_weights(model: Path, run: Path) -> None:
    """The model's weights are the run's EMA weights, floats as float16; nothing else is kept."""
    src = load_checkpoint(run, names=("ema",), with_state=False)
    exp = load_checkpoint(model, names=("ema",), with_state=False)
    assert sorted(p.name for p in exp["dir"].iterdir()) == ["ema.safetensors", "meta.json"]
    assert set(exp["meta"]["files"]) == {"ema.safetensors"}
    assert exp["meta"]["step"] == src["meta"]["step"]
    assert exp["meta"].get("method") == src["meta"].get("method")
    assert set(exp["ema"]) == set(src["ema"])
    for k, v in src["ema"].items():
        want = v.half() if v.is_floating_point() else v
        assert exp["ema"][k].dtype == want.dtype and torch.equal(exp["ema"][k], want), k


def _close(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray, rel: float) -> None:
    a, b = torch.as_tensor(np.asarray(a)).double(), torch.as_tensor(np.asarray(b)).double()
    assert (a - b).abs().max() <= rel * a.abs().max(), float((a - b).abs().max())


def test_restore_prior_exports_float16_weights_files_and_sizes(tiny_prior, models, tmp_path):
    from brainsynth.methods.restore import load_prior

    card = tmp_path / "card.md"
    card.write_text("# Tiny restore prior\n\nNot a useful model.\n")
    (tmp_path / "eval.json").write_text('{"psnr": 20.0}')
    _ok(_export(tiny_prior, "restore-tiny", "--card", str(card), "--eval", str(tmp_path / "eval.json")))  # fmt: skip
    model = models / "restore-tiny"
    assert sorted(p.name for p in models.iterdir()) == ["restore-tiny"]  # no temp folder left
    _check_weights(model, tiny_prior)
    info = json.loads((model / "model.json").read_text())
    step = read_meta(tiny_prior)["step"]
    assert (info["name"], info["method"], info["step"]) == ("restore-tiny", "restore", step)
    assert info["grid"] == {"shape": [8, 10, 8], "spacing": 4.0}
    files = _files(model)
    assert info["files"] == files and info["total_bytes"] == sum(files.values())
    ckpt = f"checkpoints/step_{step:07d}"
    assert set(files) == {
        "README.md", "eval.json", "template.nii.gz", "config.yaml", "log.jsonl",
        "checkpoints/latest", f"{ckpt}/ema.safetensors", f"{ckpt}/meta.json",
    }  # fmt: skip
    assert (model / "README.md").read_text() == card.read_text()
    assert (model / "config.yaml").read_bytes() == (tiny_prior / "config.yaml").read_bytes()
    n = sum(v.numel() for v in load_checkpoint(model, names=("ema",), with_state=False)["ema"].values())  # fmt: skip
    assert info["parameters"] == n
    # the network gives the run's outputs within float16 precision
    _, net, _, grid = load_prior(tiny_prior)
    _, net16, _, grid16 = load_prior(model)
    assert grid16 == grid
    x = torch.randn(2, 1, *grid.padded_shape, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([10, 900])
    with torch.no_grad():
        _close(net(x, t), net16(x, t), 1e-2)


def test_a_model_name_works_as_ckpt_and_samples_like_the_run(tiny_prior, models, tmp_path):
    _ok(_export(tiny_prior, "prior"))
    cmd = ["sample", "restore", "-n", "1", "--steps", "2", "--device", "cpu", "--out"]
    _ok(runner.invoke(app, [*cmd, str(tmp_path / "by-name"), "--ckpt", "prior"]))
    _ok(runner.invoke(app, [*cmd, str(tmp_path / "by-run"), "--ckpt", str(tiny_prior)]))
    a, b = (read_volume(next((tmp_path / d).glob("*.nii.gz"))) for d in ("by-run", "by-name"))
    _close(a.data, b.data, 2e-2)
    np.testing.assert_array_equal(a.affine, b.affine)
    r = runner.invoke(app, ["models"])
    assert r.exit_code == 0 and "prior" in r.output and "restore" in r.output
    # an unknown name, for --prior too: the error names the path and the models there are
    r = runner.invoke(
        app, ["restore", "--prior", "prio", "--input", str(tmp_path), "--task", "bias", "--out", str(tmp_path / "r")]
    )  # fmt: skip
    assert isinstance(r.exception, InputError)
    assert r.exception.path == "prio" and f"models in {models}: prior" in str(r.exception)


def test_export_replaces_a_model_only_with_overwrite(tiny_prior, models):
    _ok(_export(tiny_prior, "m"))
    before = (models / "m" / "model.json").read_text()
    r = _export(tiny_prior, "m")
    assert isinstance(r.exception, InputError) and "--overwrite" in str(r.exception)
    assert (models / "m" / "model.json").read_text() == before
    _ok(_export(tiny_prior, "m", "--overwrite"))
    assert sorted(p.name for p in models.iterdir()) == ["m"]
    _check_weights(models / "m", tiny_prior)


def test_a_damaged_model_file_is_reported_by_the_checksums(tiny_prior, models):
    from brainsynth.methods.restore import load_prior

    _ok(_export(tiny_prior, "m"))
    ema = next((models / "m" / "checkpoints").glob("step_*/ema.safetensors"))
    data = ema.read_bytes()
    ema.write_bytes(data[:-100])  # truncated: the size in meta.json tells
    with pytest.raises(InputError, match="truncated or damaged weights file"):
        load_prior(models / "m")
    ema.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # same size, one bit flipped
    with pytest.raises(InputError, match="sha256 checksum mismatch"):
        load_prior(models / "m")
    r = runner.invoke(app, ["sample", "restore", "--ckpt", "m", "--out", str(models / "x")])
    assert isinstance(r.exception, InputError) and "checksum" in str(r.exception)


def test_deform_model_keeps_both_stages_and_the_templates(deform_run, models, tmp_path):
    from brainsynth.methods import deform
    from brainsynth.methods.ldm.data import padded_shape

    _ok(_export(deform_run, "deform-tiny"))
    model = models / "deform-tiny"
    for stage in ("register", "fields"):
        _check_weights(model / stage, deform_run / stage)
        assert (model / stage / "config.yaml").is_file() and (model / stage / "log.jsonl").is_file()
    files = _files(model)
    for f in ("template_T1w", "template_dseg", "sharp_T1w", "sharp_dseg"):
        assert f"template/{f}.nii.gz" in files
    configs = {p.name for p in deform_run.glob("config_*.yaml")}  # the CLI writes them
    assert configs == {f for f in files if f.startswith("config_")}
    assert not any(f.endswith(".pt") for f in files)  # training data stays behind
    info = json.loads((model / "model.json").read_text())
    assert info["method"] == "deform" and info["files"] == files
    steps = {s: read_meta(deform_run / s)["step"] for s in ("register", "fields")}
    assert info["step"] == steps["fields"]
    assert {s: p["step"] for s, p in info["parts"].items()} == steps
    assert info["grid"] == {"shape": [8, 10, 8], "spacing": 4.0}
    # both networks give the run's outputs
    _, fields, _ = deform.load_network(deform_run, "fields")
    _, fields16, meta = deform.load_network(model, "fields")
    shape = padded_shape((4, 5, 4), fields.spatial_multiple)  # the 8 x 10 x 8 grid pooled by 2
    x = torch.randn(1, 3, *shape, generator=torch.Generator().manual_seed(0))
    assert meta["field_std"] == read_meta(deform_run / "fields")["config"]["field_std"]
    with torch.no_grad():
        _close(fields(x, torch.tensor([500])), fields16(x, torch.tensor([500])), 1e-2)
    # sampled by name, with the run's sharp template and labels
    cmd = ["sample", "deform", "-n", "1", "--device", "cpu", "--out"]
    _ok(runner.invoke(app, [*cmd, str(tmp_path / "a"), "--ckpt", str(deform_run)]))
    _ok(runner.invoke(app, [*cmd, str(tmp_path / "b"), "--ckpt", "deform-tiny"]))
    a, b = (read_volume(tmp_path / d / "sample_000_T1w.nii.gz") for d in "ab")
    _close(a.data, b.data, 5e-2)


@pytest.mark.slow
def test_ldm_model_carries_its_autoencoder_and_can_be_moved(ldm_run, models, tmp_path):
    from brainsynth.methods.ldm import sample_ldm

    _ok(_export(ldm_run, "ldm-tiny"))
    moved = tmp_path / "elsewhere" / "ldm-tiny"
    shutil.move(models / "ldm-tiny", moved)  # the model refers to nothing outside itself
    config = read_meta(moved)["config"]
    assert (config["ae_dir"], config["latent_norm"]) == ("ae", "latent_norm.safetensors")
    ae_run = Path(read_meta(ldm_run)["config"]["ae_dir"])
    _check_weights(moved / "ae", ae_run)
    for f in ("latent_stats.json", "config.yaml", "log.jsonl"):
        assert (moved / "ae" / f).read_bytes() == (ae_run / f).read_bytes()
    assert "ae_dir: ae" in (moved / "config.yaml").read_text()
    info = json.loads((moved / "model.json").read_text())
    assert set(info["parts"]) == {"model", "ae"} and info["grid"]["shape"] == [16, 20, 16]
    a = sample_ldm(ldm_run, {}, 1, tmp_path / "a", steps=2, seed=3)
    b = sample_ldm(moved, {}, 1, tmp_path / "b", steps=2, seed=3)
    _close(read_volume(a[0]).data, read_volume(b[0]).data, 5e-2)
