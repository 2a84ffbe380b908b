"""The models folder without trained models: where it is, listing it (``brainsynth models``), model
names in place of checkpoint paths, and export's checks before any work. Exports of trained runs
are tested in tests/methods/test_export.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from brainsynth.cli.main import app
from brainsynth.cli.options import resolve_ckpt
from brainsynth.errors import InputError
from brainsynth.export import export_model, half
from brainsynth.models import find_model, list_models, models_dir

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


def _fake(root: Path, name: str, card: str | None = None, **info) -> Path:
    """A model folder with only a model.json (and a card): enough to list and find it."""
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "model.json").write_text(json.dumps({"name": name, **info}))
    if card is not None:
        (folder / "README.md").write_text(card)
    return folder


def test_models_dir_is_the_env_var_else_models_beside_src(monkeypatch, tmp_path):
    monkeypatch.delenv("BRAINSYNTH_MODELS", raising=False)
    assert models_dir() == REPO / "models"
    monkeypatch.setenv("BRAINSYNTH_MODELS", str(tmp_path))
    assert models_dir() == tmp_path


def test_models_command_with_no_models_says_so(models):
    r = runner.invoke(app, ["models"])
    assert r.exit_code == 0 and f"no models in {models}" in r.output
    models.mkdir()
    assert f"no models in {models}" in runner.invoke(app, ["models"]).output


def test_models_command_lists_name_method_size_step_and_card(models):
    card = "\n# Restore prior, 4 mm\n\nTrained on IXI.\n"
    _fake(models, "b-prior", card, method="restore", step=1200, total_bytes=2_500_000)
    _fake(models, "a-cortex", method="cortex", step=7, total_bytes=1000)
    (models / "broken").mkdir()
    (models / "broken" / "model.json").write_text("{not json")
    (models / ".b-prior.1a2b3c").mkdir()  # an export in progress
    (models / "notes").mkdir()  # no model.json: not a model
    assert [m.name for m in list_models()] == ["a-cortex", "b-prior", "broken"]
    r = runner.invoke(app, ["models"])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0].split() == ["name", "method", "MB", "step", "description"]
    assert lines[2].split() == ["b-prior", "restore", "2.5", "1200", "Restore", "prior,", "4", "mm"]
    assert lines[3].startswith("broken") and "model.json unreadable" in lines[3]
    assert f"(3 in {models})" in lines[-1]


def test_a_name_stands_for_its_model_and_a_path_wins(models, tmp_path, monkeypatch):
    folder = _fake(models, "prior", method="restore")
    assert resolve_ckpt(Path("prior"), "prior") == folder
    assert find_model("prior") == folder and find_model("../models/prior") is None
    monkeypatch.chdir(tmp_path)
    (tmp_path / "prior").mkdir()  # a folder of that name where the command runs: the path
    assert resolve_ckpt(Path("prior"), "prior") == Path("prior")


def test_an_unknown_name_names_the_path_and_the_models(models):
    _fake(models, "restore-4mm", method="restore")
    _fake(models, "cortex-4mm", method="cortex")
    with pytest.raises(InputError) as e:
        resolve_ckpt(Path("restor-4mm"), "prior")
    assert e.value.path == "restor-4mm"
    assert "prior not found" in str(e.value) and "cortex-4mm, restore-4mm" in str(e.value)
    with pytest.raises(InputError, match="missing/run: checkpoint not found"):
        resolve_ckpt(Path("missing/run"), "checkpoint")
    # through a command: the same error, before anything is loaded
    r = runner.invoke(app, ["sample", "restore", "--ckpt", "nope", "--out", str(models / "x")])
    assert isinstance(r.exception, InputError) and "restore-4mm" in str(r.exception)


def test_an_unknown_name_without_models_says_there_are_none(models):
    with pytest.raises(InputError, match=f"no models in {models}"):
        resolve_ckpt(Path("restore-4mm"), "prior")


def test_half_casts_floats_keeps_integers_and_refuses_overflow(tmp_path):
    w = {"w": torch.tensor([1.0, -2.5, 1e-3]), "n": torch.tensor([3], dtype=torch.long)}
    out = half(w, tmp_path)
    assert out["w"].dtype == torch.float16 and torch.equal(out["n"], w["n"])
    assert torch.equal(out["w"], w["w"].half())
    with pytest.raises(InputError, match="tensor big has values beyond float16"):
        half({"big": torch.tensor([1e6])}, tmp_path)
    assert torch.isinf(half({"inf": torch.tensor([float("inf")])}, tmp_path)["inf"]).all()


def test_export_checks_the_name_and_the_run_first(tmp_path, models):
    with pytest.raises(InputError, match="letters, digits"):
        export_model(tmp_path, "a/b", models)
    with pytest.raises(InputError, match="run folder not found"):
        export_model(tmp_path / "none", "m", models)
    with pytest.raises(InputError, match="no checkpoint here"):
        export_model(tmp_path, "m", models)
    assert not models.exists() or not any(models.iterdir())  # nothing left behind
