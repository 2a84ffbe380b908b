"""Build the cache (``brainsynth prepare``): preprocess every subject once, in parallel, resumably.

Bad subjects never stop the batch: each failure is kept with its reason, every good subject is
written, the manifest lists the good ones, and the caller gets both (the CLI exits 1 if any failed).
A subject is skipped on a re-run when its record JSON (written last, atomically) exists and says it
was made from the same source file (path, size, mtime) with the same parameters.

Bad options and an unusable ``out`` are InputErrors before any subject is read. The index
(manifest.tsv, cache.json, failures.tsv) is written only by a run that has at least one good
subject: a run where every subject fails leaves an existing cache's index as it was.
Warnings (about the table, or a subject's files) are collected into the result for the CLI to print.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import math
import os
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from tqdm import tqdm

from brainsynth import __version__
from brainsynth.data.cache import (
    CACHE_FORMAT,
    IMAGE_SCALE,
    check_split_fractions,
    split_assignment,
    subject_paths,
    write_manifest,
)
from brainsynth.data.covariates import COVARIATES, UNITS, CovariateNormaliser
from brainsynth.data.datasets import Subject, load_subjects
from brainsynth.data.labels import (
    LabelScheme,
    check_scheme,
    label_counts,
    label_volumes,
    resolve_scheme,
)
from brainsynth.data.parallel import run_tasks
from brainsynth.data.preprocess import preprocess_subject
from brainsynth.errors import InputError
from brainsynth.io import Volume, read_volume, write_bytes_atomic, write_text_atomic
from brainsynth.io.outdir import check_output_dir
from brainsynth.io.volume import AssumedSpacingWarning


def _finite(value: float) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


@dataclass(frozen=True)
class PrepareOptions:
    """Preprocessing parameters; a cached subject is reused only if these are unchanged.

    Checked when made: a bad value is an InputError naming its command-line option.
    ``assume_spacing`` (mm) is the voxel size of files that give none (pixdim 0, no qform/sform);
    it is not in ``to_dict`` (the reuse key): it changes nothing for the other files, so a subject
    records the value it used (``assumed_spacing``) and is redone only when that one changes.
    """

    spacing: float = 2.0
    shape: tuple[int, int, int] = (96, 112, 96)
    low: float = 0.5  # intensity percentiles mapped to 0 and 1
    high: float = 99.5
    scheme: str | None = None  # label scheme: None (auto), "freesurfer" or "dlmuse"
    keep_labels: bool = True  # False: labels still skull-strip and give volumes, but are not stored
    assume_spacing: float | None = None

    def __post_init__(self) -> None:
        if not (_finite(self.spacing) and self.spacing > 0):
            raise InputError(None, f"--spacing must be a finite number > 0, got {self.spacing}")
        shape = tuple(self.shape)
        if len(shape) != 3 or not all(isinstance(n, (int, np.integer)) and n >= 1 for n in shape):
            raise InputError(None, f"--shape must be three integers >= 1, got {self.shape}")
        if not (_finite(self.low) and _finite(self.high) and 0 <= self.low < self.high <= 100):
            raise InputError(
                None, f"--percentiles must be LOW HIGH with 0 <= LOW < HIGH <= 100, "
                f"got {self.low:g} {self.high:g}",
            )  # fmt: skip
        a = self.assume_spacing
        if a is not None and not (_finite(a) and a > 0):
            raise InputError(None, f"--assume-spacing must be a finite number > 0, got {a}")
        check_scheme(self.scheme)

    def to_dict(self) -> dict:
        d = asdict(self)
        del d["assume_spacing"]
        d["shape"] = [int(n) for n in self.shape]
        return d


@dataclass
class PrepareResult:
    """Good subjects' records (manifest order), failures {id: reason}, how many were reused,
    warnings about the source as a whole (``notes``: its table, subjects without a row), and
    whether the index was written (not when no subject is good)."""

    records: list[dict]
    failures: dict[str, str] = field(default_factory=dict)
    reused: int = 0
    notes: list[str] = field(default_factory=list)
    index_written: bool = True

    def __iter__(self):
        """``good, failures = prepare_cache(...)`` unpacks (records, failures)."""
        return iter((self.records, self.failures))

    @property
    def warnings(self) -> dict[str, str]:
        """Good subjects worth a look: warnings from reading their files (e.g. an assumed voxel
        size), not skull-stripped (no labels), or brain cut by the crop."""
        out = {}
        for r in self.records:
            rec = r["record"]
            found = list(r.get("warnings", []))
            if rec.get("mask_source") == "foreground":
                found.append("no label map: whole head kept (not skull-stripped)")
            elif rec.get("mask_voxels_cropped", 0) > 0:
                n = rec["mask_voxels_cropped"]
                found.append(f"{n} brain-mask voxels fall outside the output grid")
            if found:
                out[r["subject"]] = "; ".join(found)
        return out


def write_compact(volume: Volume, path: Path, level: int = 6) -> None:
    """Atomic .nii.gz at gzip level 6 (nibabel writes level 1; 9 is 3x slower for 1% less) and a
    zero gzip timestamp: label maps 35% smaller, identical bytes for identical data."""
    img = nib.Nifti1Image(volume.data, volume.affine)
    img.set_qform(volume.affine, code=1)
    img.set_sform(volume.affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    write_bytes_atomic(path, gzip.compress(img.to_bytes(), compresslevel=level, mtime=0))


def _source_stamp(path: Path | None) -> dict | None:
    if path is None:
        return None
    st = path.stat()
    return {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _is_done(out: Path, subject: Subject, opts: PrepareOptions) -> dict | None:
    """The subject's record if its cached files are present and current, else None."""
    img, lab, rec = subject_paths(out, subject.id)
    if not (rec.exists() and img.exists()):
        return None
    try:
        info = json.loads(rec.read_text())
        sources = {"t1": _source_stamp(subject.t1), "labels": _source_stamp(subject.labels)}
    except (OSError, json.JSONDecodeError):
        return None
    current = (
        info.get("format") == CACHE_FORMAT
        and info.get("params") == opts.to_dict()
        and info.get("sources") == sources
        and info.get("table_covariates") == subject.covariates
        and info.get("assumed_spacing") in (None, opts.assume_spacing)
        and not subject.problems
    )
    return info if current and (not info.get("has_labels") or lab.exists()) else None


@contextlib.contextmanager
def _collect_warnings(into: list[warnings.WarningMessage]) -> Iterator[None]:
    """Keep the UserWarnings raised inside in ``into`` (for the result, and so the CLI prints
    them: a worker process's warnings would be lost); others go on as usual."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for w in caught:
        if issubclass(w.category, UserWarning):
            into.append(w)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def _read_inputs(subject: Subject, assume_spacing: float | None) -> tuple[Volume, Volume | None]:
    t1 = read_volume(subject.t1, assume_spacing=assume_spacing)
    if subject.labels is None:
        return t1, None
    labels = read_volume(subject.labels, dtype=None, assume_spacing=assume_spacing)
    if not t1.same_grid(labels):
        raise InputError(
            subject.labels,
            f"label map grid {labels.shape} does not match the T1w grid {t1.shape} of "
            f"{subject.t1.name} (shape or affine differ)",
        )
    if labels.data.min() < 0 or labels.data.max() > np.iinfo(np.uint16).max:
        raise InputError(subject.labels, "label values must lie in 0..65535")
    if np.issubdtype(labels.data.dtype, np.floating) and np.any(labels.data % 1):
        raise InputError(subject.labels, "label map holds non-integer values")
    return t1, labels


def _label_scheme(
    subject: Subject, labels: Volume | None, scheme: str | None
) -> LabelScheme | None:
    """The label map's scheme, checked here so that its problems name the label file."""
    if labels is None:
        return None
    try:
        return resolve_scheme(label_counts(labels.data), scheme)
    except InputError as e:
        raise InputError(subject.labels, e.problem) from e


def _covariates(
    subject: Subject, labels: Volume | None, scheme: LabelScheme | None
) -> tuple[dict, dict]:
    """(covariates: table values, missing ones measured on the labels; measured values)."""
    measured = label_volumes(labels.data, labels.affine, scheme) if labels is not None else {}
    cov = {k: subject.covariates.get(k) for k in COVARIATES}
    for k, v in measured.items():
        if cov[k] is None:
            cov[k] = v
    return cov, measured


def process_subject(subject: Subject, out: Path, opts: PrepareOptions) -> dict:
    """Preprocess one subject into the cache; returns its record. Raises InputError naming the
    file at fault: the table, the label map (unreadable, off-grid, no brain labels) or the T1w."""
    if subject.problems:
        raise InputError(None, "; ".join(subject.problems))
    caught: list[warnings.WarningMessage] = []
    with _collect_warnings(caught):
        t1, labels = _read_inputs(subject, opts.assume_spacing)
    scheme = _label_scheme(subject, labels, opts.scheme)
    try:  # the label map is checked: what fails now is about the image
        cov, measured = _covariates(subject, labels, scheme)
        img, lab, record = preprocess_subject(
            t1, labels, opts.spacing, opts.shape, low=opts.low, high=opts.high, scheme=scheme
        )
    except (InputError, ValueError) as e:
        raise InputError(subject.t1, e.problem if isinstance(e, InputError) else str(e)) from e
    assumed = any(issubclass(w.category, AssumedSpacingWarning) for w in caught)
    img_path, lab_path, rec_path = subject_paths(out, subject.id)
    write_compact(img.with_data(np.round(img.data * IMAGE_SCALE).astype(np.uint8)), img_path)
    lab = lab if opts.keep_labels else None
    if lab is not None:
        write_compact(lab.with_data(lab.data.astype(np.uint16)), lab_path)
    info = {
        "format": CACHE_FORMAT,
        "subject": subject.id,
        "params": opts.to_dict(),
        "sources": {"t1": _source_stamp(subject.t1), "labels": _source_stamp(subject.labels)},
        "surfaces": {k: str(v) for k, v in subject.surfaces.items()},
        "table_covariates": subject.covariates,
        "covariates": cov,
        "measured": measured,
        "has_labels": lab is not None,
        "record": record.to_dict(),
        "assumed_spacing": opts.assume_spacing if assumed else None,
        "warnings": [str(w.message) for w in caught],
    }
    write_text_atomic(rec_path, json.dumps(info, indent=1))  # last: marks the subject done
    return info


def _worker(args: tuple[Subject, Path, PrepareOptions]) -> tuple[str, dict | None, str | None]:
    subject, out, opts = args
    try:
        return subject.id, process_subject(subject, out, opts), None
    except InputError as e:
        return subject.id, None, str(e)
    except Exception as e:  # noqa: BLE001 - a batch job reports every failure and goes on
        return subject.id, None, f"{subject.t1}: unexpected {type(e).__name__}: {e}"


def _run(tasks: list, jobs: int) -> Iterator[tuple[str, dict | None, str | None]]:
    for task, result, exc in run_tasks(_worker, tasks, jobs):
        yield result if exc is None else (task[0].id, None, f"worker failed: {exc}")


def prepare_cache(
    src: str | Path | Iterable[Subject],
    out: str | Path,
    opts: PrepareOptions = PrepareOptions(),
    jobs: int = 1,
    split: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    progress: bool = True,
) -> PrepareResult:
    """Preprocess every subject of ``src`` (path for ``load_subjects``, or Subjects) into ``out``."""
    out = Path(out)
    split = check_split_fractions(split)
    if not (isinstance(jobs, int) and jobs >= 1):
        raise InputError(None, f"--jobs must be an integer >= 1, got {jobs}")
    check_output_dir(out, create=False)  # a file, or unwritable: before reading anything
    notes: list[warnings.WarningMessage] = []
    with _collect_warnings(notes):
        subjects = load_subjects(src) if isinstance(src, (str, os.PathLike)) else list(src)
    check_output_dir(out)
    (out / "subjects").mkdir(exist_ok=True)
    records: dict[str, dict] = {}
    todo = []
    for s in subjects:
        done = _is_done(out, s, opts)
        if done is not None:
            records[s.id] = done
        else:
            todo.append((s, out, opts))
    reused = len(records)
    failures: dict[str, str] = {}
    bar = tqdm(
        total=len(subjects), initial=reused, desc="prepare", unit="subject", disable=not progress
    )
    for sid, info, err in _run(todo, jobs):
        if info is not None:
            records[sid] = info
        else:
            failures[sid] = err or "unknown error"
        bar.update(1)
    bar.close()
    good = [records[s.id] for s in subjects if s.id in records]
    if good:  # an empty run must not replace a good cache's index with an empty one
        write_index(out, good, opts, split, seed, failures)
    failed = {s.id: failures[s.id] for s in subjects if s.id in failures}
    return PrepareResult(good, failed, reused, [str(w.message) for w in notes], bool(good))


def reference_affine(spacing: float, shape: Sequence[int]) -> np.ndarray:
    """RAS grid of ``shape`` voxels of ``spacing`` mm centred on the world origin: a neutral grid
    for outputs that belong to no subject (e.g. unconditional samples)."""
    aff = np.diag([spacing, spacing, spacing, 1.0])
    aff[:3, 3] = -spacing * (np.asarray(shape, dtype=np.float64) - 1) / 2.0
    return aff


def write_index(
    out: Path, good: list[dict], opts: PrepareOptions, split, seed: int, failures: dict[str, str]
) -> None:
    """manifest.tsv, cache.json (normaliser fitted on the train split) and failures.tsv."""
    splits = split_assignment([g["subject"] for g in good], split, seed)
    rows = []
    for g in good:
        img, lab, _ = subject_paths(Path("."), g["subject"])
        rows.append(
            {
                "subject": g["subject"],
                "image": img.as_posix(),
                "labels": lab.as_posix() if g.get("has_labels") else None,
                **g["covariates"],
                "split": splits[g["subject"]],
            }
        )
    train = [r for r in rows if r["split"] == "train"] or rows
    info = {
        "format": CACHE_FORMAT,
        "version": __version__,
        "spacing": opts.spacing,
        "shape": list(opts.shape),
        "orientation": "RAS",
        "n_subjects": len(rows),
        "split": {
            "fractions": list(split),
            "seed": seed,
            "counts": {s: sum(r["split"] == s for r in rows) for s in ("train", "val", "test")},
        },
        "image": "skull-stripped; percentiles low/high inside the brain -> 0/1; uint8 = round(x*255)",
        "image_scale": 1.0 / IMAGE_SCALE,
        "covariates": list(COVARIATES),
        "covariate_units": UNITS,
        "covariate_normaliser": CovariateNormaliser.fit(train).to_dict(),
        "reference_affine": reference_affine(opts.spacing, opts.shape).tolist(),
        "params": opts.to_dict(),
    }
    write_manifest(out, rows)
    write_text_atomic(out / "cache.json", json.dumps(info, indent=1))
    fail_path = out / "failures.tsv"
    if failures:
        lines = ["subject\treason"] + [f"{k}\t{' '.join(v.split())}" for k, v in failures.items()]
        write_text_atomic(fail_path, "\n".join(lines) + "\n")
    else:
        fail_path.unlink(missing_ok=True)
