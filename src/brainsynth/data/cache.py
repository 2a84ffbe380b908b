"""The preprocessed cache: one compact file per subject + manifest.tsv + cache.json.

Layout::

    CACHE/cache.json             spacing, shape, version, covariate normaliser, reference affine
    CACHE/manifest.tsv           subject, image, labels, age, sex, ventricle_volume, brain_volume, split
    CACHE/subjects/<id>_T1w.nii.gz    skull-stripped, [0, 1] stored as uint8 (value / 255)
    CACHE/subjects/<id>_dseg.nii.gz   labels (uint16), when the subject has a label map
    CACHE/subjects/<id>.json          preprocessing record + covariates (written last: "done" marker)
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from brainsynth.data.covariates import COVARIATES, CovariateNormaliser
from brainsynth.errors import InputError
from brainsynth.io import read_volume, write_text_atomic

MANIFEST_COLUMNS = ("subject", "image", "labels", *COVARIATES, "split")


def split_assignment(ids: list[str], fractions=(0.8, 0.1, 0.1), seed: int = 0) -> dict[str, str]:
    """Deterministic train/val/test split: a seeded permutation of the sorted ids."""
    if len(fractions) != 3 or abs(sum(fractions) - 1.0) > 1e-6 or min(fractions) < 0:
        raise InputError(
            None, f"split fractions must be 3 non-negative numbers summing to 1: {fractions}"
        )
    ids = sorted(ids)
    order = np.random.default_rng(seed).permutation(len(ids))
    n_train = int(round(fractions[0] * len(ids)))
    n_val = int(round(fractions[1] * len(ids)))
    out = {}
    for rank, i in enumerate(order):
        out[ids[i]] = "train" if rank < n_train else "val" if rank < n_train + n_val else "test"
    return out


def write_manifest(cache: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, MANIFEST_COLUMNS, delimiter="\t", extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow(
            {k: ("n/a" if row.get(k) is None else row.get(k)) for k in MANIFEST_COLUMNS}
        )
    write_text_atomic(cache / "manifest.tsv", buf.getvalue())


def read_cache_info(cache: str | Path) -> dict:
    path = Path(cache) / "cache.json"
    if not path.exists():
        raise InputError(cache, "not a brainsynth cache (no cache.json; run `brainsynth prepare`)")
    return json.loads(path.read_text())


def read_cache_manifest(cache: str | Path, split: str | None = None) -> list[dict]:
    path = Path(cache) / "manifest.tsv"
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    for row in rows:
        for name in COVARIATES:
            row[name] = None if row[name] in ("", "n/a") else float(row[name])
    return [r for r in rows if split is None or r["split"] == split]


class CacheDataset(Dataset):
    """Items: image (1, X, Y, Z) float32 in [0, 1]; labels (1, X, Y, Z) int64 when present;
    covariates (4,) float32 normalised; covariates_raw dict; subject id."""

    def __init__(self, cache: str | Path, split: str | None = "train", with_labels: bool = False):
        self.cache = Path(cache)
        self.info = read_cache_info(self.cache)
        self.rows = read_cache_manifest(self.cache, split)
        if not self.rows:
            raise InputError(self.cache, f"no subjects in split {split!r}")
        self.normaliser = CovariateNormaliser.from_dict(self.info["covariate_normaliser"])
        self.with_labels = with_labels

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        row = self.rows[i]
        vol = read_volume(self.cache / row["image"], dtype=None)
        item = {
            "image": torch.from_numpy(vol.data.astype(np.float32) / 255.0)[None],
            "covariates": torch.from_numpy(
                self.normaliser.transform({k: row[k] for k in COVARIATES})
            ),
            "covariates_raw": {k: row[k] for k in COVARIATES},
            "subject": row["subject"],
        }
        if self.with_labels and row.get("labels") not in (None, "", "n/a"):
            lab = read_volume(self.cache / row["labels"], dtype=None).data
            item["labels"] = torch.from_numpy(lab.astype(np.int64))[None]
        return item
