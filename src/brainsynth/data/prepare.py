"""``brainsynth prepare``: preprocess a dataset once into a cache, in parallel, resumably.

Bad subjects never stop the batch: each failure is recorded with its reason, every good subject is
written, and the caller gets both lists (the CLI exits non-zero when any subject failed).
"""

from __future__ import annotations

import json
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from brainsynth import __version__
from brainsynth.data.cache import split_assignment, write_manifest
from brainsynth.data.covariates import COVARIATES, CovariateNormaliser
from brainsynth.data.datasets import Subject, load_subjects
from brainsynth.data.labels import label_volumes
from brainsynth.data.preprocess import preprocess_subject
from brainsynth.errors import InputError
from brainsynth.io import Volume, read_volume, write_text_atomic, write_volume


@dataclass(frozen=True)
class PrepareOptions:
    spacing: float = 2.0
    shape: tuple[int, int, int] = (96, 112, 96)


def _paths(out: Path, sid: str) -> tuple[Path, Path, Path]:
    d = out / "subjects"
    return d / f"{sid}_T1w.nii.gz", d / f"{sid}_dseg.nii.gz", d / f"{sid}.json"


def _is_done(out: Path, subject: Subject, opts: PrepareOptions) -> dict | None:
    img, lab, rec = _paths(out, subject.id)
    if not (rec.exists() and img.exists()):
        return None
    info = json.loads(rec.read_text())
    same = info.get("spacing") == opts.spacing and info.get("shape") == list(opts.shape)
    return info if same and (subject.labels is None or lab.exists()) else None


def process_subject(subject: Subject, out: Path, opts: PrepareOptions) -> dict:
    """Preprocess one subject into the cache; returns its JSON record. Raises InputError."""
    t1 = read_volume(subject.t1)
    labels = read_volume(subject.labels, dtype=None) if subject.labels else None
    if labels is not None and not t1.same_grid(labels):
        raise InputError(
            subject.labels,
            f"label map grid {labels.shape} does not match T1w {subject.t1.name} grid {t1.shape}"
            " (shape or affine differ)",
        )
    try:
        img, lab, record = preprocess_subject(t1, labels, spacing=opts.spacing, shape=opts.shape)
    except ValueError as e:
        raise InputError(subject.t1, str(e)) from e
    cov = dict(subject.covariates)
    if labels is not None:
        measured = label_volumes(labels.data, labels.affine)
        for k, v in measured.items():
            if cov.get(k) is None:
                cov[k] = v
    img_path, lab_path, rec_path = _paths(out, subject.id)
    write_volume(Volume(np.round(img.data * 255).astype(np.uint8), img.affine), img_path)
    if lab is not None:
        write_volume(Volume(lab.data.astype(np.uint16), lab.affine), lab_path)
    info = {
        "subject": subject.id,
        "source": str(subject.t1),
        "spacing": opts.spacing,
        "shape": list(opts.shape),
        "covariates": {k: cov.get(k) for k in COVARIATES},
        "has_labels": lab is not None,
        "record": record.to_dict(),
    }
    write_text_atomic(rec_path, json.dumps(info, indent=1))  # last: marks the subject done
    return info


def _worker(args) -> tuple[str, dict | None, str | None]:
    subject, out, opts = args
    try:
        return subject.id, process_subject(subject, out, opts), None
    except InputError as e:
        return subject.id, None, str(e)
    except Exception as e:  # noqa: BLE001 - a batch job reports every failure and goes on
        return subject.id, None, f"{subject.t1}: {type(e).__name__}: {e}"


def reference_affine(spacing: float, shape: tuple[int, int, int]) -> np.ndarray:
    """RAS grid with the given spacing, centred on the world origin (for synthetic outputs)."""
    aff = np.diag([spacing, spacing, spacing, 1.0])
    aff[:3, 3] = -spacing * (np.asarray(shape) - 1) / 2.0
    return aff


def prepare_cache(
    src: str | Path,
    out: str | Path,
    opts: PrepareOptions = PrepareOptions(),
    jobs: int = 1,
    split=(0.8, 0.1, 0.1),
    seed: int = 0,
    progress: bool = True,
) -> tuple[list[dict], dict[str, str]]:
    """Preprocess every subject of ``src``; returns (records of good subjects, {id: error})."""
    out = Path(out)
    (out / "subjects").mkdir(parents=True, exist_ok=True)
    subjects = load_subjects(src)
    records: dict[str, dict] = {}
    todo = []
    for s in subjects:
        done = _is_done(out, s, opts)
        if done is not None:
            records[s.id] = done
        else:
            todo.append(s)
    failures: dict[str, str] = {}
    tasks = [(s, out, opts) for s in todo]
    bar = tqdm(
        total=len(subjects), initial=len(records), desc="prepare", unit="subj", disable=not progress
    )
    if jobs > 1 and len(tasks) > 1:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            results = pool.map(_worker, tasks, chunksize=1)
            _collect(results, records, failures, bar)
    else:
        _collect(map(_worker, tasks), records, failures, bar)
    bar.close()
    good = [records[s.id] for s in subjects if s.id in records]
    _write_index(out, good, opts, split, seed)
    return good, failures


def _collect(results, records, failures, bar) -> None:
    for sid, info, err in results:
        if info is not None:
            records[sid] = info
        else:
            failures[sid] = err or "unknown error"
        bar.update(1)


def _write_index(out: Path, good: list[dict], opts: PrepareOptions, split, seed: int) -> None:
    splits = split_assignment([g["subject"] for g in good], split, seed) if good else {}
    rows = []
    for g in good:
        sid = g["subject"]
        rows.append(
            {
                "subject": sid,
                "image": f"subjects/{sid}_T1w.nii.gz",
                "labels": f"subjects/{sid}_dseg.nii.gz" if g.get("has_labels") else None,
                **g["covariates"],
                "split": splits[sid],
            }
        )
    train = [r for r in rows if r["split"] == "train"] or rows
    info = {
        "version": __version__,
        "spacing": opts.spacing,
        "shape": list(opts.shape),
        "n_subjects": len(rows),
        "split_fractions": list(split),
        "split_seed": seed,
        "intensity": "skull-stripped, percentiles 0.5/99.5 -> [0, 1], stored as uint8 (x / 255)",
        "reference_affine": reference_affine(opts.spacing, opts.shape).tolist(),
        "covariate_normaliser": CovariateNormaliser.fit(train).to_dict(),
    }
    write_manifest(out, rows)
    write_text_atomic(out / "cache.json", json.dumps(info, indent=1))
