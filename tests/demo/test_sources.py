"""Which model the demo uses for each method, checked before any work: the planned names, a
missing model (a phantom fallback, said plainly), and models that cannot be used (one error naming
the model and what is wrong). No training here: the end-to-end runs are in tests/cli/test_demo.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from brainsynth.demo import MODEL_NAMES, OWNED, check_model, find_sources
from brainsynth.demo.steps import flatten
from brainsynth.errors import InputError
from brainsynth.io.outdir import claim_output_dir


def _model(root: Path, name: str, **info) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "model.json").write_text(json.dumps({"name": name, **info}))
    return folder


def test_the_planned_names_one_per_method():
    assert MODEL_NAMES == {
        "ldm": "ldm-4mm", "cortex": "cortex-4mm", "deform": "deform-4mm", "restore": "restore-4mm"
    }  # fmt: skip


def test_without_models_every_method_falls_back_and_says_why(models):
    sources = find_sources()
    assert list(sources) == list(MODEL_NAMES) and not any(s.shipped for s in sources.values())
    s = sources["cortex"]
    s.steps = 100
    assert s.summary() == (
        f"model cortex-4mm not found in {models}: trained a 100-step phantom model instead; it "
        "shows the pipeline, not the quality"
    )


def test_a_model_of_another_method_is_refused(models):
    folder = _model(models, "deform-4mm", method="restore")
    with pytest.raises(InputError) as e:
        find_sources()
    assert e.value.path == str(folder) and "'restore', the demo needs 'deform'" in str(e.value)


def test_an_unreadable_model_json_names_the_file(models):
    folder = _model(models, "ldm-4mm")
    (folder / "model.json").write_text("{not json")
    with pytest.raises(InputError, match="model ldm-4mm: unreadable model.json") as e:
        check_model("ldm", "ldm-4mm", folder)
    assert e.value.path == str(folder / "model.json")


@pytest.mark.parametrize("method", ["restore", "deform", "ldm"])
def test_a_model_without_checkpoints_is_not_usable(models, method):
    folder = _model(models, MODEL_NAMES[method], method=method)
    (folder / "fields").mkdir()  # deform's generating stage, empty
    with pytest.raises(InputError, match=f"model {MODEL_NAMES[method]} is not usable"):
        check_model(method, MODEL_NAMES[method], folder)


def test_overwrite_replaces_the_demo_outputs_old_and_new_only(tmp_path):
    for name in ("ae", "samples_age30", "train", "restore", "report.html", "notes.txt"):
        p = tmp_path / name
        p.mkdir() if "." not in name else p.write_text("x")
    with pytest.raises(InputError, match="notes.txt"):
        claim_output_dir(tmp_path, OWNED, overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_flatten_keeps_numbers_and_short_strings_under_dotted_keys():
    body = {"fid": 3.5, "split": "test", "ssim": {"mean": 0.8, "values": [1, 2]}, "long": "x" * 99}
    assert flatten(body) == [("fid", 3.5), ("split", "test"), ("ssim.mean", 0.8)]
    assert len(flatten({f"k{i}": i for i in range(100)}, limit=5)) == 5
