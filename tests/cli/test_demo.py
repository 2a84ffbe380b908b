"""`brainsynth demo` (the README's first command) end to end, with a few subjects and steps: with no
model shipped (every method falls back to a phantom model, and says so), with the four planned
models shipped (exported from those phantom runs: nothing is trained), and with a damaged model
(one line naming it, exit code 1)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from tests.bad_inputs.cli import assert_clean_error, run_cli
from typer.testing import CliRunner

from brainsynth.cli.main import app
from brainsynth.demo import MODEL_NAMES
from brainsynth.io import read_volume

runner = CliRunner()
FAST = ["-n", "6", "--ae-steps", "3", "--steps", "3", "--fallback-steps", "2", "--device", "cpu"]
MONTAGES = (
    "ldm/age30/montage.png", "ldm/age75/montage.png", "ldm/ventricles15ml/montage.png",
    "ldm/ventricles40ml/montage.png", "cortex/atrophy/montage.png", "deform/samples/montage.png",
    "deform/labels.png", "restore/montage.png",
)  # fmt: skip


def _ok(result) -> None:
    if result.exit_code != 0:
        raise AssertionError(f"{result.output}\n{result.exception!r}") from result.exception


def _links(out: Path) -> set[str]:
    """The files the report links to (relative to it); each must exist."""
    page = (out / "report.html").read_text()
    links = set(re.findall(r'href="([^"]+)"', page))
    assert links and all((out / link).is_file() for link in links), links
    return links


@pytest.fixture(scope="module")
def fallback(tmp_path_factory) -> tuple[Path, str]:
    """The demo with an empty models folder: (its output folder, its console output)."""
    root = tmp_path_factory.mktemp("demo")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BRAINSYNTH_MODELS", str(root / "no-models"))
        r = runner.invoke(app, ["demo", "--out", str(root / "out"), *FAST])
    _ok(r)
    return root / "out", r.output


@pytest.mark.slow
def test_without_models_every_method_falls_back_and_says_so(fallback):
    out, output = fallback
    for k in range(1, 8):
        assert f"{k}/7 " in output
    page = (out / "report.html").read_text()
    for name in MODEL_NAMES.values():
        said = f"model {name} not found in {out.parent / 'no-models'}: trained a"
        assert said in output and said in page
    assert output.count("phantom model instead; it shows the pipeline, not the quality") == 4
    assert set(MONTAGES) <= _links(out) and "eval/report.html" in page
    ae_log = [json.loads(line) for line in open(out / "train" / "ae" / "log.jsonl")]
    assert max(row["step"] for row in ae_log if "step" in row) == 3  # --ae-steps reaches stage 1
    for folder, n in (("samples", 4), ("age30", 2), ("ventricles40ml", 2)):
        assert len(list((out / "ldm" / folder).glob("sample_*_T1w.nii.gz"))) == n
    v = read_volume(out / "ldm" / "age75" / "sample_000_T1w.nii.gz")
    assert v.shape == (48, 56, 48) and v.orientation == "RAS"
    assert (out / "eval" / "metrics.json").exists() and (out / "eval" / "report.html").exists()
    scores = json.loads((out / "restore" / "metrics.json").read_text())["scores"]
    assert set(scores) == {"cubic B-spline", "restored"} and scores["cubic B-spline"]["psnr"] > 10
    assert len(list((out / "deform" / "samples").glob("sample_*_dseg.nii.gz"))) == 3
    change = json.loads((out / "cortex" / "atrophy" / "atrophy.json").read_text())
    assert -1.05 < change["mean_thickness_change_mm"]["lh"] < -0.5


@pytest.mark.slow
def test_shipped_models_are_used_instead_of_phantom_runs(fallback, models, tmp_path):
    runs = fallback[0] / "train"
    card = tmp_path / "card.md"
    card.write_text("# ldm for the demo test\n\nThree steps on six phantoms.\n")
    (tmp_path / "eval.json").write_text(json.dumps({"fid": 12.5, "ssim": {"mean": 0.81}}))
    for method, name in MODEL_NAMES.items():
        extra = ["--card", str(card), "--eval", str(tmp_path / "eval.json")] if method == "ldm" else []  # fmt: skip
        _ok(runner.invoke(app, ["export", "--run", str(runs / method), "--name", name, *extra]))
    out = tmp_path / "out"
    for old in ("ae", "samples_age30", "real_at_training_resolution"):  # an earlier demo's layout
        (out / old).mkdir(parents=True)
    r = runner.invoke(app, ["demo", "--out", str(out), "--overwrite", *FAST])
    _ok(r)
    assert sorted(p.name for p in out.iterdir()) == ["cortex", "deform", "ldm", "report.html", "restore"]  # fmt: skip
    assert "not found" not in r.output and "training a" not in r.output
    page = (out / "report.html").read_text()
    for name in MODEL_NAMES.values():
        assert f"model {name} from {models / name}" in r.output and f"Shipped model {name}" in page
    assert "Phantom fallback" not in page and "ldm for the demo test" in page  # the card
    assert page.count("<td>size</td>") == 4  # model.json's facts
    assert "ssim.mean" in page and "12.5" in page  # the shipped eval.json's figures
    assert set(MONTAGES) <= _links(out) and not (out / "ldm" / "samples").exists()
    # a shipped model with a damaged part: one line naming it, before anything is written
    shutil.rmtree(models / "ldm-4mm" / "ae" / "checkpoints")
    code, text = run_cli("demo", "--out", str(tmp_path / "again"))
    assert_clean_error(code, text, 2, ("ldm-4mm", "not usable", "brainsynth export"))
    assert len(text.strip().splitlines()) == 1 and not (tmp_path / "again").exists()


def test_a_model_without_its_checkpoint_is_one_line_naming_it(models, tmp_path):
    folder = models / "restore-4mm"
    folder.mkdir(parents=True)
    (folder / "model.json").write_text(json.dumps({"name": "restore-4mm", "method": "restore"}))
    code, text = run_cli("demo", "--out", str(tmp_path / "out"))
    assert_clean_error(code, text, 2, (str(folder), "model restore-4mm", "no checkpoint"))
    assert len(text.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_a_foreign_file_in_out_is_refused_even_with_overwrite(models, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    code, text = run_cli("demo", "--out", str(tmp_path / "out"), "--overwrite")
    assert_clean_error(code, text, 2, ("notes.txt", "not this command's outputs"))
    assert (tmp_path / "out" / "notes.txt").read_text() == "mine"
