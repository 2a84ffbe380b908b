"""Config: YAML + dotted overrides with type coercion and clear errors."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from brainsynth.config import TrainConfig, dump_yaml, load_config, to_dict
from brainsynth.errors import InputError


@dataclass(frozen=True)
class Model:
    preset: str = "tiny"
    channels: tuple[int, ...] = (8, 16)
    context: int | None = None


@dataclass(frozen=True)
class Run:
    train: TrainConfig = field(default_factory=TrainConfig)
    model: Model = field(default_factory=Model)


def test_yaml_and_overrides(tmp_path):
    (tmp_path / "c.yaml").write_text("train:\n  lr: 3.0e-4\n  steps: 10\nmodel:\n  preset: small\n")
    cfg = load_config(Run, tmp_path / "c.yaml", ["train.steps=20", "train.amp=off", "model.channels=[4,8,16]", "model.context=4", "train.betas=0.5,0.9"])
    assert cfg.train.lr == 3e-4 and cfg.train.steps == 20 and cfg.train.amp == "off"
    assert cfg.model.channels == (4, 8, 16) and cfg.model.context == 4 and cfg.train.betas == (0.5, 0.9)
    again = load_config(Run, None, base=to_dict(cfg))
    assert again == cfg
    assert "preset: small" in dump_yaml(cfg)


@pytest.mark.parametrize(
    "override,match",
    [
        ("train.stepz=3", r"unknown config key\(s\) \['train.stepz'\]"),
        ("train.amp=fp8", "must be one of"),
        ("train.steps=abc", "must be int"),
        ("train.grad_checkpointing=maybe", "true or false"),
        ("oops", "key.sub=value"),
    ],
)
def test_override_errors(override, match):
    with pytest.raises(InputError, match=match):
        load_config(Run, None, [override])
