"""Frozen dataclass schemas, YAML values, dotted overrides."""

from brainsynth.config.load import apply_overrides, dump_yaml, from_dict, load_config, to_dict
from brainsynth.config.schema import TrainConfig

__all__ = ["TrainConfig", "apply_overrides", "dump_yaml", "from_dict", "load_config", "to_dict"]
