"""Subject lists from a BIDS folder, a CSV/TSV manifest or a plain folder of NIfTI files.

``load_subjects(path)`` picks the reader:

* a folder with ``participants.tsv`` or ``sub-*`` folders: ``read_bids``;
* a ``.csv``/``.tsv`` file (or a folder holding ``manifest.tsv``, e.g. a cache): ``read_manifest``;
* any other folder: one subject per ``.nii``/``.nii.gz``/``.mgz`` file (id = file name without
  suffix); a file ``<id>_dseg.nii.gz`` next to it is taken as its label map.

Covariates come from the table (``participants.tsv`` or the manifest) in natural units; missing
ones (``n/a``) are None and get computed from the label map when the cache is prepared.

A table is checked as a whole when read, with one warning per finding: no column for age or sex
(which a label map cannot give), and cells read as missing (``n/a``, ``nan``, empty; counted per
column). A value that is a number but implausible (``covariates.PLAUSIBLE``, e.g. an age of 1e9)
does not stop the reading: it goes into ``Subject.problems``, and ``prepare`` reports that subject
failed (naming the table, the subject and the column) while the others are prepared.
"""

from __future__ import annotations

import csv
import difflib
import re
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from brainsynth.data.covariates import ALIASES, UNMEASURABLE, implausible, is_missing, parse_value
from brainsynth.errors import InputError
from brainsynth.io.surface import surface_key

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".mgz")
SURFACE_KEYS = ("lh_pial", "lh_white", "rh_pial", "rh_white")
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # ids become file names in the cache
_MANIFEST_COLUMNS = {"subject", "t1", "image", "labels", "split", *SURFACE_KEYS, *ALIASES}


@dataclass
class Subject:
    """One subject: T1w path, optional label map and surfaces, covariates in natural units.

    ``surfaces`` keys are ``lh_pial``, ``lh_white``, ``rh_pial``, ``rh_white`` (those found).
    ``covariates`` holds the table's values (None for n/a); it may lack keys the table lacks.
    ``problems`` says why the subject's table row is unusable (an implausible value), if it is.
    """

    id: str
    t1: Path
    labels: Path | None = None
    surfaces: dict[str, Path] = field(default_factory=dict)
    covariates: dict[str, float | None] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def _is_volume(path: Path) -> bool:
    return path.name.lower().endswith(VOLUME_SUFFIXES)


def volume_stem(path: Path) -> str:
    """File name without its volume suffix (.nii.gz, .nii, .mgz, ...)."""
    name = path.name
    for s in VOLUME_SUFFIXES:
        if name.lower().endswith(s):
            return name[: -len(s)]
    return path.stem


def read_table(path: Path) -> list[dict[str, str]]:
    """Rows of a CSV (comma) or TSV (tab) file as dicts; clear errors for unreadable files."""
    delim = "," if path.suffix.lower() == ".csv" else "\t"
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh, delimiter=delim)
            rows = [r for r in reader if any((v or "").strip() for v in r.values())]
            header = reader.fieldnames or []
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise InputError(path, f"cannot read table ({e})") from e
    if not header:
        raise InputError(path, "empty table (no header)")
    if not rows:
        raise InputError(path, "table has a header but no rows")
    for i, row in enumerate(rows, start=2):
        if None in row:
            raise InputError(path, f"line {i} has more fields than the header")
    return [{k.strip(): (v or "").strip() for k, v in r.items()} for r in rows]


def _covariate_columns(header: list[str]) -> dict[str, str]:
    """{covariate: table column} (columns matched by ``covariates.ALIASES``; the first one wins)."""
    out: dict[str, str] = {}
    for col in header:
        name = ALIASES.get(col.lower())
        if name is not None:
            out.setdefault(name, col)
    return out


def covariates_from_row(
    row: dict[str, str], path: Path, what: str
) -> tuple[dict[str, float | None], list[str]]:
    """(covariates in a table row, problems): unparseable values are an InputError; implausible
    ones are kept and described in ``problems`` (table, ``what`` (the subject), column, value)."""
    out: dict[str, float | None] = {}
    problems = []
    for name, col in _covariate_columns(list(row)).items():
        try:
            out[name] = parse_value(name, row[col])
        except InputError as e:
            raise InputError(path, f"{what}, column {col!r}: {e.problem}") from e
        why = implausible(name, out[name])
        if why is not None:
            problems.append(f"{path}: {what}, column {col!r}: {why}")
    return out, problems


def _warn_about_table(path: Path, rows: list[dict[str, str]]) -> None:
    """One warning per finding on a covariate table as a whole (see the module docstring)."""
    columns = _covariate_columns(list(rows[0]))
    absent = [n for n in UNMEASURABLE if n not in columns]
    if absent:
        warnings.warn(
            f"{path}: no {' or '.join(absent)} column: missing for every subject "
            "(a label map cannot give it; a model conditioned on it gets the training mean)",
            stacklevel=3,
        )
    missing = {
        col: Counter(row[col].strip().lower() or "empty" for row in rows if is_missing(row[col]))
        for col in columns.values()
    }
    counts = [
        f"{col} {sum(c.values())} ({', '.join(f'{k} {n}' for k, n in sorted(c.items()))})"
        for col, c in missing.items()
        if c
    ]
    if counts:
        warnings.warn(
            f"{path}: cells read as missing, per column: {'; '.join(counts)} (volumes are then "
            "measured on the label maps; a missing age or sex gets the training mean)",
            stacklevel=3,
        )


def _participants(root: Path) -> dict[str, dict[str, str]]:
    table = root / "participants.tsv"
    if not table.exists():
        return {}
    rows = read_table(table)
    if "participant_id" not in rows[0]:
        raise InputError(table, f"no participant_id column (columns: {sorted(rows[0])})")
    out: dict[str, dict[str, str]] = {}
    for row in rows:
        pid = row["participant_id"]
        pid = pid if pid.startswith("sub-") else f"sub-{pid}"
        if pid in out:
            raise InputError(table, f"participant {pid} appears twice")
        out[pid] = row
    return out


def _pick(paths: list[Path], what: str, sid: str) -> Path | None:
    """First of several candidates, preferring native space; warn when the choice is ambiguous."""
    if not paths:
        return None
    native = [
        p for p in paths if "space-" not in p.name or re.search(r"space-(orig|T1w|native)", p.name)
    ]
    chosen = sorted(native or paths)
    if len(chosen) > 1:
        warnings.warn(f"{sid}: several {what} files, using {chosen[0].name}", stacklevel=3)
    return chosen[0]


def _t1_files(sub_dir: Path) -> dict[str, list[Path]]:
    """T1w files per session key (``sub-X`` or ``sub-X_ses-Y``)."""
    groups: dict[str, list[Path]] = {}
    for anat in [sub_dir / "anat", *sorted(sub_dir.glob("ses-*/anat"))]:
        for p in sorted(anat.glob("*_T1w.*")):
            if _is_volume(p):
                key = (
                    sub_dir.name if anat.parent == sub_dir else f"{sub_dir.name}_{anat.parent.name}"
                )
                groups.setdefault(key, []).append(p)
    return groups


def _derivative_files(root: Path, sub: str) -> list[Path]:
    files = [p for p in (root / "derivatives").glob(f"*/{sub}/**/*") if p.is_file()]
    files += [p for p in (root / sub).glob("**/surf/*") if p.is_file()]  # sub-X/surf (pycortex)
    return sorted(set(files))


def _match(files: list[Path], key: str, sub: str) -> tuple[Path | None, dict[str, Path]]:
    """Label map and surfaces for one session key from the subject's derivative files."""
    ses = key[len(sub) + 1 :] if key != sub else None
    mine = [p for p in files if ses is None or f"{key}_" in p.name or f"/{ses}/" in p.as_posix()]
    labels = _pick(
        [p for p in mine if _is_volume(p) and volume_stem(p).endswith("_dseg")], "dseg", key
    )
    surfaces: dict[str, Path] = {}
    for p in mine:
        hemi_kind = surface_key(p.name)
        if hemi_kind is not None:
            surfaces.setdefault("_".join(hemi_kind), p)
    return labels, surfaces


def read_bids(root: str | Path, require_covariates: bool = False) -> list[Subject]:
    """Subjects of a BIDS folder: ``sub-*/[ses-*/]anat/*_T1w.nii[.gz]``, ``participants.tsv``,
    label maps ``derivatives/*/sub-*/**/*_dseg.nii[.gz]`` and surfaces
    (``derivatives/*/sub-*/**/*hemi-{L,R}_{pial,white}.surf.gii``, FreeSurfer ``surf/lh.pial``).

    One subject per session when there are sessions (id ``sub-X_ses-Y``). A subject with a T1w
    but no participants.tsv row is kept with a warning (its covariates are then computed from its
    label map); with ``require_covariates=True`` that is an error naming the subject and the table.
    """
    root = Path(root)
    table = root / "participants.tsv"
    rows = _participants(root)
    if rows:
        _warn_about_table(table, list(rows.values()))
    subjects = []
    for sub_dir in sorted(p for p in root.glob("sub-*") if p.is_dir()):
        sid = sub_dir.name
        groups = _t1_files(sub_dir)
        if not groups:
            continue
        if sid not in rows and (require_covariates or table.exists()):
            t1 = next(iter(groups.values()))[0]
            msg = f"no row for {sid} (whose T1w is {t1})"
            if require_covariates:
                raise InputError(table, msg)
            warnings.warn(f"{table}: {msg}; its covariates will come from its labels", stacklevel=2)
        cov, problems = covariates_from_row(rows[sid], table, sid) if sid in rows else ({}, [])
        files = _derivative_files(root, sid)
        for key, t1s in groups.items():
            labels, surfaces = _match(files, key, sid)
            t1 = _pick(t1s, "T1w", key) or t1s[0]
            subjects.append(Subject(key, t1, labels, surfaces, dict(cov), list(problems)))
    if not subjects:
        raise InputError(root, "no sub-*/anat/*_T1w.nii[.gz] found (not a BIDS folder?)")
    return subjects


def _check_columns(path: Path, cols: list[str]) -> None:
    """Typos of known columns are errors; other unknown columns are ignored with a warning."""
    unknown = [c for c in cols if c.lower() not in _MANIFEST_COLUMNS]
    for c in unknown:
        close = difflib.get_close_matches(c.lower(), sorted(_MANIFEST_COLUMNS), n=1, cutoff=0.75)
        if close:
            raise InputError(path, f"unknown column {c!r} (did you mean {close[0]!r}?)")
    if unknown:
        warnings.warn(f"{path}: ignoring columns {unknown}", stacklevel=3)


def read_manifest(path: str | Path) -> list[Subject]:
    """CSV/TSV with columns ``subject``, ``t1`` (or ``image``), optional ``labels``, covariates
    (``age``, ``sex``, ``ventricle_volume``, ``brain_volume`` or their aliases) and surfaces
    (``lh_pial``, ...). Relative paths are resolved against the manifest's folder. Files are not
    opened here: a missing file fails that subject only, when it is read."""
    path = Path(path)
    rows = read_table(path)
    cols = list(rows[0])
    t1_col = "t1" if "t1" in cols else "image" if "image" in cols else None
    if t1_col is None or "subject" not in cols:
        raise InputError(
            path, f"manifest needs columns 'subject' and 't1' (or 'image'); has {cols}"
        )
    _check_columns(path, cols)
    _warn_about_table(path, rows)
    subjects, seen = [], set()
    for i, row in enumerate(rows, start=2):
        sid = row["subject"]
        if not sid or not row[t1_col]:
            raise InputError(path, f"line {i}: empty subject or {t1_col}")
        if sid in seen:
            raise InputError(path, f"line {i}: subject {sid} appears twice")
        if not _SAFE_ID.fullmatch(sid):
            raise InputError(
                path, f"line {i}: subject id {sid!r} may use only letters, digits, . _ -"
            )
        seen.add(sid)
        lab = row.get("labels", "")
        surfaces = {k: path.parent / row[k] for k in SURFACE_KEYS if row.get(k)}
        cov, problems = covariates_from_row(row, path, f"line {i} ({sid})")
        labels = path.parent / lab if lab and lab.lower() != "n/a" else None
        subjects.append(Subject(sid, path.parent / row[t1_col], labels, surfaces, cov, problems))
    return subjects


def read_folder(path: str | Path) -> list[Subject]:
    """One subject per volume file; ``<id>_dseg.<ext>`` beside ``<id>.<ext>`` is its label map."""
    path = Path(path)
    files = sorted(p for p in path.iterdir() if p.is_file() and _is_volume(p))
    labels = {volume_stem(p)[: -len("_dseg")]: p for p in files if volume_stem(p).endswith("_dseg")}
    images = [p for p in files if not volume_stem(p).endswith("_dseg")]
    if not images:
        raise InputError(path, "no BIDS layout, manifest or NIfTI/MGZ files found")
    return [Subject(volume_stem(p), p, labels.get(volume_stem(p))) for p in images]


def load_subjects(path: str | Path) -> list[Subject]:
    """BIDS folder, manifest (.csv/.tsv) or a folder of volume files (see the module docstring)."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "not found")
    if path.is_file():
        if path.suffix.lower() in (".csv", ".tsv"):
            return read_manifest(path)
        raise InputError(
            path, "expected a BIDS folder, a folder of NIfTI files or a .csv/.tsv manifest"
        )
    if (path / "participants.tsv").exists() or any(p.is_dir() for p in path.glob("sub-*")):
        return read_bids(path)
    if (path / "manifest.tsv").exists():
        return read_manifest(path / "manifest.tsv")
    return read_folder(path)
