"""Frozen dataclass schemas, YAML values, dotted ``--set a.b=c`` overrides."""

from brainsynth.config.load import (
    apply_overrides,
    config_from_meta,
    dump_yaml,
    from_dict,
    known_keys,
    load_config,
    parse_override,
    read_yaml,
    to_dict,
    write_config,
)
from brainsynth.config.schema import (
    DiffusionConfig,
    ModelConfig,
    SampleConfig,
    StepsEta,
    TrainConfig,
)

__all__ = [
    "DiffusionConfig",
    "ModelConfig",
    "SampleConfig",
    "StepsEta",
    "TrainConfig",
    "apply_overrides",
    "config_from_meta",
    "dump_yaml",
    "from_dict",
    "known_keys",
    "load_config",
    "parse_override",
    "read_yaml",
    "to_dict",
    "write_config",
]
