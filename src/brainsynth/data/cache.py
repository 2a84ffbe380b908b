"""The preprocessed cache (written by ``brainsynth prepare``) and the torch dataset that reads it.

Layout::

    CACHE/cache.json                 format, spacing, shape, split, covariate normaliser, parameters
    CACHE/manifest.tsv               subject, image, labels, age, sex, ventricle_volume,
                                     brain_volume, split  (sex as F/M, missing as n/a)
    CACHE/failures.tsv               subjects that could not be prepared, with the reason (if any)
    CACHE/subjects/<id>_T1w.nii.gz   skull-stripped image, [0, 1] stored as uint8: round(x * 255)
    CACHE/subjects/<id>_dseg.nii.gz  label map (uint16), when the subject has one
    CACHE/subjects/<id>.json         preprocessing record + covariates (written last: "done")

Every subject file carries its own affine (RAS, ``spacing`` mm, brain-centred), so any output
made on the cache grid can be mapped back to the subject's scan with
``preprocess.to_original(output, PreprocessRecord.from_dict(json["record"]))``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from brainsynth.data.covariates import (
    COVARIATES,
    CovariateNormaliser,
    format_value,
    missing_mask,
    parse_value,
)
from brainsynth.errors import InputError
from brainsynth.io import read_volume, write_text_atomic

CACHE_FORMAT = 1
IMAGE_SCALE = 255.0
SPLITS = ("train", "val", "test")
MANIFEST_COLUMNS = ("subject", "image", "labels", *COVARIATES, "split")


def subject_paths(cache: Path, sid: str) -> tuple[Path, Path, Path]:
    """(image, labels, record JSON) paths of one subject in the cache."""
    d = Path(cache) / "subjects"
    return d / f"{sid}_T1w.nii.gz", d / f"{sid}_dseg.nii.gz", d / f"{sid}.json"


def check_split_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    f = tuple(float(x) for x in fractions)
    if len(f) != 3 or not all(x >= 0 for x in f) or not abs(sum(f) - 1.0) <= 1e-6:  # NaN: refused
        raise InputError(
            None, f"split needs 3 non-negative fractions summing to 1, got {fractions}"
        )
    return f  # type: ignore[return-value]


def split_assignment(
    ids: Sequence[str], fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0
) -> dict[str, str]:
    """Deterministic train/val/test split with exact proportions (largest remainder).

    Subjects are ranked by a seeded hash of their id, not by their position in a list, so adding
    or removing a subject moves at most a few others across a split boundary.
    """
    f = check_split_fractions(fractions)
    n = len(ids)
    raw = np.asarray(f) * n
    counts = np.floor(raw).astype(int)
    counts[np.argsort(-(raw - counts), kind="stable")[: n - counts.sum()]] += 1
    ranked = sorted(ids, key=lambda s: hashlib.sha256(f"{seed}:{s}".encode()).hexdigest())
    bounds = np.cumsum(counts)
    return {
        sid: SPLITS[int(np.searchsorted(bounds, r, side="right"))] for r, sid in enumerate(ranked)
    }


def write_manifest(cache: Path, rows: Sequence[dict]) -> None:
    """Write manifest.tsv atomically (covariates in natural units; sex as M/F; n/a for missing)."""
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter="\t", lineterminator="\n")
    writer.writerow(MANIFEST_COLUMNS)
    for row in rows:
        writer.writerow(
            [row["subject"], row["image"], row.get("labels") or "n/a"]
            + [format_value(k, row.get(k)) for k in COVARIATES]
            + [row["split"]]
        )
    write_text_atomic(Path(cache) / "manifest.tsv", buf.getvalue())


def read_cache_info(cache: str | Path) -> dict:
    """Contents of ``cache.json`` (clear error when the folder is not a cache)."""
    path = Path(cache) / "cache.json"
    if not path.exists():
        raise InputError(cache, "not a brainsynth cache (no cache.json; run `brainsynth prepare`)")
    try:
        info = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(path, f"unreadable cache description ({e})") from e
    if info.get("format") != CACHE_FORMAT:
        raise InputError(
            path, f"cache format {info.get('format')} is not {CACHE_FORMAT}: re-run prepare"
        )
    return info


def read_cache_manifest(cache: str | Path, split: str | None = None) -> list[dict]:
    """Rows of manifest.tsv, covariates parsed (None when missing), optionally one split."""
    if split is not None and split not in SPLITS:
        raise InputError(None, f"unknown split {split!r}; use one of {SPLITS} or None for all")
    path = Path(cache) / "manifest.tsv"
    try:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
    except OSError as e:
        raise InputError(path, f"cannot read the cache manifest ({e})") from e
    for row in rows:
        for name in COVARIATES:
            row[name] = parse_value(name, row.get(name))
        row["labels"] = None if row.get("labels") in (None, "", "n/a") else row["labels"]
    return [r for r in rows if split is None or r["split"] == split]


class CacheDataset(Dataset):
    """A split of a prepared cache as a map-style torch dataset.

    Items (dict): ``image`` float32 (1, X, Y, Z) in [0, 1]; ``labels`` int64 (1, X, Y, Z) when the
    subject has a label map (and ``with_labels``); ``covariates`` float32 (4,) normalised with the
    cache's training-split normaliser (missing -> mean); ``covariates_missing`` bool (4,);
    ``covariates_raw`` dict of floats in natural units (NaN when missing, so batches collate);
    ``subject`` str. ``transform`` (optional) is applied to each item. ``preload`` keeps every
    uint8 volume in memory (about 1 MB per subject at 96x112x96).
    """

    def __init__(
        self,
        cache: str | Path,
        split: str | None = "train",
        with_labels: bool = True,
        transform: Callable[[dict], dict] | None = None,
        preload: bool = False,
    ):
        self.cache = Path(cache)
        self.info = read_cache_info(self.cache)
        self.rows = read_cache_manifest(self.cache, split)
        if not self.rows:
            raise InputError(self.cache, f"no subjects in split {split!r}")
        self.normaliser = CovariateNormaliser.from_dict(self.info["covariate_normaliser"])
        self.with_labels = with_labels
        self.transform = transform
        self._memory: dict[int, tuple[np.ndarray, np.ndarray | None]] = {}
        if preload:
            self._memory = {i: self._read(i) for i in range(len(self.rows))}

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.info["shape"])  # type: ignore[return-value]

    def __len__(self) -> int:
        return len(self.rows)

    def _read(self, i: int) -> tuple[np.ndarray, np.ndarray | None]:
        row = self.rows[i]
        img = read_volume(self.cache / row["image"], dtype=None).data
        if img.shape != self.shape:
            raise InputError(
                self.cache / row["image"], f"shape {img.shape} is not the cache's {self.shape}"
            )
        lab = None
        if self.with_labels and row["labels"] is not None:
            lab = read_volume(self.cache / row["labels"], dtype=None).data
        return img, lab

    def __getitem__(self, i: int) -> dict:
        row = self.rows[i]
        img, lab = self._memory[i] if i in self._memory else self._read(i)
        raw = {k: row[k] for k in COVARIATES}
        item = {
            "image": torch.from_numpy(img.astype(np.float32) / IMAGE_SCALE)[None],
            "covariates": torch.from_numpy(self.normaliser.transform(raw)),
            "covariates_missing": torch.from_numpy(missing_mask(raw)),
            "covariates_raw": {k: float("nan") if v is None else float(v) for k, v in raw.items()},
            "subject": row["subject"],
        }
        if lab is not None:
            item["labels"] = torch.from_numpy(lab.astype(np.int64))[None]
        return self.transform(item) if self.transform is not None else item
