"""Inputs of ``brainsynth evaluate``: listing the volumes of a set and reading them.

Preprocessing, identical for both sets: reorient to RAS (exact axis permutation), intensities mapped
by ``intensity``:

``unit`` (default)
    uint8 files are divided by 255 (the cache's storage); other files must already lie in [0, 1]
    (±0.01), else an error says to choose ``robust`` or ``raw``. ``data_range = 1``.
``robust``
    each volume divided by the 99.5th percentile of its positive voxels, clipped to [0, 1].
    ``data_range = 1``.
``raw``
    values as stored; ``data_range`` given, or max - min over the real set (stated in the output).
"""

from __future__ import annotations

import csv
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from brainsynth.data.datasets import volume_stem
from brainsynth.errors import InputError
from brainsynth.io import Volume, read_volume

Intensity = Literal["unit", "robust", "raw"]
VOLUME_SUFFIXES = (".nii.gz", ".nii", ".mgz")


@dataclass
class Item:
    """One input volume: ``id`` (subject or file stem), ``image`` path, optional ``labels`` path."""

    id: str
    image: Path
    labels: Path | None = None


def _list_manifest(path: Path) -> list[Item]:
    """Items of a CSV/TSV manifest (see :func:`_list_volumes`)."""
    if path.suffix.lower() not in (".csv", ".tsv"):
        raise InputError(path, "expected a folder of NIfTI files or a .csv/.tsv manifest")
    delim = "," if path.suffix.lower() == ".csv" else "\t"
    with open(path, newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.DictReader(fh, delimiter=delim))
    if not rows:
        raise InputError(path, "manifest has no rows")
    col = "image" if "image" in rows[0] else "t1" if "t1" in rows[0] else None
    if col is None:
        raise InputError(path, f"manifest needs an 'image' or 't1' column; has {list(rows[0])}")
    items = []
    for i, r in enumerate(rows):
        img = path.parent / r[col]
        lab = r.get("labels") or ""
        sid = r.get("subject") or volume_stem(img) or f"row{i + 2}"
        items.append(Item(sid, img, path.parent / lab if lab and lab != "n/a" else None))
    return items


def _list_volumes(path: str | Path) -> list[Item]:
    """Fallback reader: a folder of ``*.nii``/``*.nii.gz``/``*.mgz`` (``*_dseg`` files are taken as
    label maps of the same stem) or a CSV/TSV manifest with an ``image`` or ``t1`` column (optional
    ``subject`` and ``labels``; relative paths resolved against the manifest's folder)."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "not found")
    if path.is_dir() and (path / "manifest.tsv").exists():
        path = path / "manifest.tsv"
    if path.is_file():
        return _list_manifest(path)
    files = sorted(
        p for p in path.iterdir() if p.is_file() and p.name.lower().endswith(VOLUME_SUFFIXES)
    )
    labels = {volume_stem(p)[: -len("_dseg")]: p for p in files if volume_stem(p).endswith("_dseg")}
    items = [
        Item(volume_stem(p), p, labels.get(volume_stem(p)))
        for p in files
        if not volume_stem(p).endswith("_dseg")
    ]
    if not items:
        raise InputError(path, "no NIfTI/MGZ volumes found")
    return items


def list_inputs(path: str | Path) -> list[Item]:
    """Volumes of a folder, BIDS folder or manifest: ``brainsynth.data.datasets.load_subjects`` when
    available (BIDS, manifests, folders), else :func:`_list_volumes`."""
    try:
        from brainsynth.data.datasets import load_subjects
    except ImportError:  # pragma: no cover - the data layer is part of the package
        return _list_volumes(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unknown manifest columns etc. do not matter here
        subjects = load_subjects(path)
    return [Item(s.id, Path(s.t1), None if s.labels is None else Path(s.labels)) for s in subjects]


def load_image(item: Item, intensity: Intensity) -> tuple[np.ndarray, Volume]:
    """(RAS float32 array mapped by ``intensity``, the RAS Volume as read)."""
    from brainsynth.data.preprocess import reorient_ras

    vol = reorient_ras(read_volume(item.image, dtype=None))
    raw = vol.data
    x = raw.astype(np.float32)
    if intensity == "unit":
        if raw.dtype == np.uint8:
            x = x / 255.0
        elif x.size and (x.min() < -0.01 or x.max() > 1.01):
            raise InputError(
                item.image,
                f"intensities {x.min():.3g}..{x.max():.3g} are not in [0, 1] (and not uint8): "
                "use --intensity robust (per-volume 99.5th percentile -> 1) or --intensity raw",
            )
        x = np.clip(x, 0.0, 1.0)
    elif intensity == "robust":
        pos = x[x > 0]
        hi = float(np.percentile(pos, 99.5)) if pos.size else 1.0
        x = np.clip(x / (hi if hi > 0 else 1.0), 0.0, 1.0)
    elif intensity != "raw":
        raise ValueError(f"unknown intensity mode {intensity!r}")
    return np.ascontiguousarray(x, dtype=np.float32), vol


def _maybe_tqdm(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="vol", dynamic_ncols=True, leave=False)


class _VolumeStore:
    """Arrays of one set: kept in memory within a budget, re-read from disk beyond it."""

    def __init__(self, items: Sequence[Item], intensity: Intensity, budget_bytes: float):
        self.items, self.intensity, self.budget = list(items), intensity, budget_bytes
        self.kept: dict[int, np.ndarray] = {}
        self.used = 0.0

    def offer(self, i: int, x: np.ndarray) -> None:
        if self.used + x.nbytes <= self.budget:
            self.kept[i] = x
            self.used += x.nbytes

    def get(self, i: int) -> np.ndarray:
        if i in self.kept:
            return self.kept[i]
        return load_image(self.items[i], self.intensity)[0]
