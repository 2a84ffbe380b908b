"""Options of an evaluation run and what every ``metrics.json`` states about them: the header
(version, time, command, inputs, options) and the preprocessing (orientation, intensity mapping,
``data_range``, brain mask).

``data_range`` (PSNR/SSIM): 1 for the ``unit`` and ``robust`` intensity modes; for ``raw`` the
given ``data_range``, else max - min over the real set.

Brain mask: ``intensity > mask_threshold`` (after the mapping), holes filled, largest component.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from brainsynth import __version__
from brainsynth.evaluation.inputs import Intensity, Item, load_image


@dataclass
class EvalOptions:
    intensity: Intensity = "unit"
    data_range: float | None = None
    mask_threshold: float = 0.05
    features_weights: Path | None = None
    features: bool = True
    anatomy: bool = True
    diversity: bool = True
    n_pairs: int = 100
    n_permutations: int = 500
    seed: int = 0
    device: str = "cpu"
    progress: bool = True
    n_montage: int = 4
    memory_budget_gb: float = 2.0
    command: str | None = None  # the command line that asked for this run (recorded in outputs)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["features_weights"] = (
            None if self.features_weights is None else str(self.features_weights)
        )
        return d


def _data_range(real: Sequence[Item], opts: EvalOptions) -> tuple[float, str]:
    if opts.intensity != "raw":
        return 1.0, f"1 (intensity mode {opts.intensity!r}: images in [0, 1])"
    if opts.data_range is not None:
        return float(opts.data_range), "given (--data-range)"
    lo, hi = math.inf, -math.inf
    for item in real:
        x = load_image(item, "raw")[0]
        lo, hi = min(lo, float(x.min())), max(hi, float(x.max()))
    return hi - lo, "max - min over the real set"


def _header(opts: EvalOptions, mode: str, real_path, synth_path) -> dict:
    return {
        "brainsynth_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": opts.command,
        "mode": mode,
        "inputs": {"real": str(real_path), "synthetic": str(synth_path)},
        "options": opts.to_dict(),
    }


def _preprocessing(opts: EvalOptions, data_range: float, why: str) -> dict:
    return {
        "orientation": "RAS (exact axis permutation of the stored array)",
        "intensity": opts.intensity,
        "data_range": data_range,
        "data_range_source": why,
        "mask": (
            f"intensity > {opts.mask_threshold} after intensity mapping, holes filled, "
            "largest 26-connected component"
        ),
    }
