"""The engine benchmark runs (figures are printed by benchmarks/engine.py, never asserted)."""

from __future__ import annotations

from brainsynth.cli.bench import header, measure, row


def test_measure_runs_and_formats():
    r = measure("tiny", 8, 1, "cpu", spatial_dims=2, steps=1)
    assert r.params_m > 0 and r.train_s > 0 and r.sample_s > 0 and r.amp == "fp32"
    line = row(r)
    assert line.startswith("| cpu | tiny |") and "8x8" in line
    assert header().count("|") > 10
