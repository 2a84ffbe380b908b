"""`brainsynth demo` (the README's first command) end to end, with a few subjects and steps."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from brainsynth.cli.main import app
from brainsynth.io import read_volume


@pytest.mark.slow
def test_demo_runs_the_whole_pipeline(tmp_path):
    out = tmp_path / "demo"
    r = CliRunner().invoke(
        app, ["demo", "--out", str(out), "-n", "6", "--ae-steps", "3", "--steps", "3"]
    )
    assert r.exit_code == 0, r.output
    ae_log = [json.loads(line) for line in open(out / "ae" / "log.jsonl")]
    assert max(row["step"] for row in ae_log if "step" in row) == 3  # --ae-steps reaches stage 1
    for folder, n in (("samples", 4), ("samples_age30", 2), ("samples_age75", 2)):
        vols = sorted((out / folder).glob("sample_*_T1w.nii.gz"))
        assert len(vols) == n and (out / folder / "montage.png").exists()
    v = read_volume(vols[0])
    assert v.shape == (48, 56, 48) and v.orientation == "RAS"
    assert (out / "eval" / "metrics.json").exists() and (out / "eval" / "report.html").exists()
