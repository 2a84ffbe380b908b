"""Config: dataclass schema + YAML values + ``--set`` overrides with type coercion and clear errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest
import yaml

from brainsynth.config import (
    TrainConfig,
    apply_overrides,
    dump_yaml,
    from_dict,
    known_keys,
    load_config,
    to_dict,
    write_config,
)
from brainsynth.errors import InputError


@dataclass(frozen=True)
class Model:
    preset: str = "tiny"
    channels: tuple[int, ...] = (8, 16)
    context: int | None = None
    dims: Literal[2, 3] = 3
    shape: tuple[int, int, int] = (8, 8, 8)
    scale: float = 1.0
    path: Path | None = None
    names: list[str] = field(default_factory=list)
    extra: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Run:
    train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=300, lr=2e-3))
    model: Model = field(default_factory=Model)
    name: str = "run"


def test_defaults_round_trip_through_dict_and_yaml(tmp_path):
    cfg = Run()
    assert from_dict(Run, to_dict(cfg)) == cfg
    path = write_config(cfg, tmp_path / "c.yaml")
    assert load_config(Run, path) == cfg
    assert yaml.safe_load(dump_yaml(cfg))["train"]["betas"] == [0.9, 0.999]


def test_yaml_then_overrides(tmp_path):
    (tmp_path / "c.yaml").write_text(
        "train:\n  lr: 3.0e-4\n  steps: 10\nmodel:\n  preset: small\n  shape: [16, 16, 8]\n"
    )
    cfg = load_config(
        Run,
        tmp_path / "c.yaml",
        [
            "train.steps=20",
            "train.amp=off",  # YAML would read 'off' as False
            "model.channels=[4,8,16]",
            "model.context=4",
            "train.betas=0.5,0.9",
            "train.grad_checkpointing=yes",
            "model.dims=2",
            "model.scale=1e-3",  # YAML 1.1 would read this as a string
            "model.path=/tmp/x",
            "model.names=a,b",
            "model.extra={a: 1, b: 2.5}",
            "name=yes",  # a str field keeps the text
        ],
    )
    assert cfg.train.lr == 3e-4 and cfg.train.steps == 20 and cfg.train.amp == "off"
    assert cfg.model.preset == "small" and cfg.model.shape == (16, 16, 8)
    assert cfg.model.channels == (4, 8, 16) and cfg.model.context == 4
    assert cfg.train.betas == (0.5, 0.9) and cfg.train.grad_checkpointing is True
    assert cfg.model.dims == 2 and cfg.model.scale == 1e-3 and cfg.model.path == Path("/tmp/x")
    assert cfg.model.names == ["a", "b"] and cfg.model.extra == {"a": 1.0, "b": 2.5}
    assert cfg.name == "yes"
    assert load_config(Run, None, base=to_dict(cfg)) == cfg
    assert load_config(Run, None, ["model.context=null"]).model.context is None
    assert load_config(Run, None, ["train.steps=1e3"]).train.steps == 1000


def test_partial_section_keeps_the_fields_defaults():
    """Run.train defaults to steps=300, lr=2e-3: overriding one key must not reset the others to
    TrainConfig's own defaults."""
    cfg = load_config(Run, None, ["train.batch_size=2"])
    assert (cfg.train.steps, cfg.train.lr, cfg.train.batch_size) == (300, 2e-3, 2)
    assert from_dict(Run, {"train": {"seed": 3}}).train.steps == 300


@pytest.mark.parametrize(
    "override,match",
    [
        (
            "train.stepz=3",
            r"unknown config key\(s\) \['train.stepz'\] \(did you mean 'train.steps'\?\)",
        ),
        (
            "trian.steps=3",
            r"unknown config key\(s\) \['trian'\].*valid: \['train', 'model', 'name'\]",
        ),
        ("train.amp=fp8", r"'train.amp': must be one of \['auto', 'bf16', 'off'\], got 'fp8'"),
        ("train.steps=abc", "'train.steps': must be int"),
        ("train.steps=2.5", "'train.steps': must be int"),
        ("train.lr=fast", "'train.lr': must be float"),
        ("train.grad_checkpointing=maybe", "true or false"),
        ("model.shape=1,2", "needs 3 values"),
        ("model.dims=4", r"must be one of \[2, 3\]"),
        ("train=3", "is a section, not a value"),
        ("train.steps=0", "steps must be > 0"),
        ("train.ema_decay=2", r"ema_decay must be in \[0, 1\]"),
        ("oops", "key.sub=value"),
        ("=3", "key.sub=value"),
    ],
)
def test_override_errors(override, match):
    with pytest.raises(InputError, match=match):
        load_config(Run, None, [override])


def test_unknown_key_lists_the_valid_ones():
    with pytest.raises(InputError) as e:
        load_config(Run, None, ["train.stepz=3"])
    assert "train.batch_size" in str(e.value) and "train.device" in str(e.value)


def test_known_keys_drops_only_unknown_ones_at_any_depth():
    stored = {"train": {"steps": 5, "old_option": 1}, "model": {"scale": 2.0}, "gone": {"a": 1}}
    kept, dropped = known_keys(Run, stored)
    assert dropped == ["train.old_option", "gone"]
    assert kept == {"train": {"steps": 5}, "model": {"scale": 2.0}}
    assert load_config(Run, None, base=kept).train.steps == 5


def test_yaml_file_errors(tmp_path):
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(InputError, match="mapping"):
        load_config(Run, tmp_path / "list.yaml")
    (tmp_path / "bad.yaml").write_text("train: [\n")
    with pytest.raises(InputError, match="not valid YAML"):
        load_config(Run, tmp_path / "bad.yaml")
    with pytest.raises(InputError, match="cannot read"):
        load_config(Run, tmp_path / "missing.yaml")
    (tmp_path / "typo.yaml").write_text("train:\n  lr_schedul: cosine\n")
    with pytest.raises(InputError, match="did you mean 'train.lr_schedule'"):
        load_config(Run, tmp_path / "typo.yaml")
    (tmp_path / "empty.yaml").write_text("")
    assert load_config(Run, tmp_path / "empty.yaml") == Run()


def test_apply_overrides_is_pure_and_rejects_values_as_sections():
    base = {"train": {"steps": 1}}
    out = apply_overrides(base, ["train.lr=0.1"])
    assert base == {"train": {"steps": 1}} and out["train"]["lr"] == "0.1"
    with pytest.raises(InputError, match="is a value, not a section"):
        apply_overrides({"name": "x"}, ["name.sub=1"])


def test_configs_are_frozen():
    with pytest.raises(AttributeError):
        Run().train.steps = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    "module, cls",
    [
        ("ldm", "LDMSample"),
        ("restore", "RestoreSample"),
        ("deform", "DeformSample"),
        ("cortex", "CortexSample"),
    ],  # fmt: skip
)
def test_every_method_sample_section_checks_steps_and_eta(module, cls):
    import importlib

    sample = getattr(importlib.import_module(f"brainsynth.methods.{module}.config"), cls)
    assert sample(steps=3, eta=0.5).steps == 3
    with pytest.raises(ValueError, match="steps must be >= 1"):
        sample(steps=0)
    for eta in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="eta must be in"):
            sample(eta=eta)
