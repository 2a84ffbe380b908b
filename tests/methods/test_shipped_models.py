"""The models shipped in the repository's ``models/`` load and sample (``model_check.smoke_sample``:
one step of each method's own sampler, on CPU) and ship together; and the check itself, on a tiny
exported ldm run, by the library and by ``brainsynth models --check``. The shipped models are
looked for in the repository's folder, never ``$BRAINSYNTH_MODELS``; without them, their tests
skip."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

import brainsynth
from brainsynth.cli.main import app
from brainsynth.errors import InputError
from brainsynth.export import export_model
from brainsynth.model_check import smoke_sample
from brainsynth.models import list_models

REPO = Path(brainsynth.__file__).resolve().parents[2]
SHIPPED_DIR = REPO / "models"
SHIPPED = ("ldm-4mm", "cortex-4mm", "deform-4mm", "restore-4mm")  # each named by its method
runner = CliRunner()


@pytest.mark.parametrize("name", SHIPPED)
def test_a_shipped_model_loads_and_samples_one_step(name):
    folder = SHIPPED_DIR / name
    if not SHIPPED_DIR.is_dir():
        pytest.skip(
            f"no models folder in this checkout ({SHIPPED_DIR}): no shipped models to check"
        )
    if not folder.is_dir():
        pytest.skip(f"{folder} is not there (a partial shipment fails the completeness test)")
    info = json.loads((folder / "model.json").read_text())
    r = smoke_sample(folder)
    assert r["method"] == info["method"] == name.split("-")[0]
    assert r["finite"], f"{name}: the sample has NaN/inf"
    if info.get("grid"):
        assert r["shape"] == info["grid"]["shape"]


def test_the_shipped_models_are_all_there_or_none():
    found = {m.name for m in list_models(SHIPPED_DIR)}
    if found:
        missing = sorted(set(SHIPPED) - found)
        assert not missing, f"{SHIPPED_DIR} holds {sorted(found)} but not {missing}"


@pytest.fixture(scope="module")
def ldm_model(ldm_run, tmp_path_factory) -> Path:
    """The tiny ldm run of conftest.py exported as a model."""
    return export_model(ldm_run, "ldm-tiny", tmp_path_factory.mktemp("ldm") / "models")


def test_smoke_sample_decodes_one_ddim_step_of_a_tiny_ldm_model(ldm_model):
    r = smoke_sample(ldm_model)
    grid = json.loads((ldm_model / "model.json").read_text())["grid"]
    assert (r["method"], r["shape"], r["finite"]) == ("ldm", grid["shape"], True)
    assert r["shape"] == [16, 20, 16] and r["seconds"] >= 0


def test_smoke_sample_refuses_a_folder_that_is_not_a_model(tmp_path):
    with pytest.raises(InputError, match="not a model folder") as e:
        smoke_sample(tmp_path)
    assert e.value.path == str(tmp_path)


def test_models_check_says_ok_per_model_and_fails_on_a_broken_one(
    ldm_model, tiny_prior, deform_run, models
):
    """ldm, restore and deform (a tiny cortex grid cannot hold the fsaverage5 surfaces: cortex is
    checked on the shipped model only)."""
    shutil.copytree(ldm_model, models / "ldm-tiny")
    export_model(tiny_prior, "restore-tiny", models)
    export_model(deform_run, "deform-tiny", models)
    r = runner.invoke(app, ["models", "--check"])
    assert r.exit_code == 0, f"{r.output}\n{r.exception!r}"
    lines = [x for x in r.output.splitlines() if x.startswith("check ")]
    assert [x.split(":")[0] for x in lines] == [
        "check deform-tiny", "check ldm-tiny", "check restore-tiny"
    ]  # fmt: skip
    assert all(": ok, " in x and x.endswith(" s") for x in lines), lines
    (models / "broken").mkdir()
    (models / "broken" / "model.json").write_text("{not json")
    r = runner.invoke(app, ["models", "--check"])
    assert r.exit_code == 1
    assert "check broken: FAILED (InputError: " in r.output and "check ldm-tiny: ok" in r.output
