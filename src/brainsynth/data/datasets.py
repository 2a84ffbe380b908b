"""Subject lists from a BIDS folder, a CSV/TSV manifest or a plain folder of NIfTI files."""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

from brainsynth.data.covariates import ALIASES, parse_value
from brainsynth.errors import InputError

_NII = (".nii.gz", ".nii", ".mgz")
_SURF_RE = re.compile(r"hemi-(?P<hemi>[LR])_(?P<kind>pial|white)\.surf\.gii$")
_FS_SURF_RE = re.compile(r"^(?P<hemi>lh|rh)\.(?P<kind>pial|white)$")


@dataclass
class Subject:
    """One subject: T1w path, optional label map and surfaces, covariates in natural units."""

    id: str
    t1: Path
    labels: Path | None = None
    surfaces: dict[str, Path] = field(default_factory=dict)  # "lh_pial", "rh_white", ...
    covariates: dict[str, float | None] = field(default_factory=dict)


def _read_table(path: Path) -> list[dict[str, str]]:
    delim = "," if path.suffix.lower() == ".csv" else "\t"
    try:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh, delimiter=delim))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise InputError(path, f"cannot read table ({e})") from e
    if not rows:
        raise InputError(path, "table has no rows")
    return rows


def _covariates(row: dict[str, str], path: Path) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for col, raw in row.items():
        name = ALIASES.get((col or "").strip().lower())
        if name is None:
            continue
        try:
            out[name] = parse_value(name, raw)
        except InputError as e:
            raise InputError(path, f"row {row}: {e.problem}") from e
    return out


def _find_t1(anat: Path) -> Path | None:
    hits = sorted(p for p in anat.glob("*_T1w*") if p.name.endswith(_NII))
    return hits[0] if hits else None


def _derivatives(root: Path, sub: str) -> tuple[Path | None, dict[str, Path]]:
    """Label map and surfaces from derivatives/*/sub-X/ and from sub-X/surf/."""
    labels, surfaces = None, {}
    candidates = sorted((root / "derivatives").glob(f"*/{sub}/**/*")) + sorted(
        (root / sub / "surf").glob("*")
    )
    for p in candidates:
        name = p.name
        if labels is None and "_dseg" in name and name.endswith(_NII):
            labels = p
        m = _SURF_RE.search(name) or _FS_SURF_RE.match(name)
        if m:
            hemi = {"L": "lh", "R": "rh"}.get(m["hemi"], m["hemi"])
            surfaces.setdefault(f"{hemi}_{m['kind']}", p)
    return labels, surfaces


def read_bids(root: str | Path, require_covariates: bool = False) -> list[Subject]:
    """Read ``sub-*/anat/*_T1w.nii[.gz]``, ``participants.tsv`` and derivatives (dseg, surfaces).

    A subject with a T1w but no participants.tsv row gets no table covariates (they are computed
    from its label map later); with ``require_covariates`` that is an error naming the subject.
    """
    root = Path(root)
    table = root / "participants.tsv"
    rows = {r["participant_id"]: r for r in _read_table(table)} if table.exists() else {}
    subjects = []
    for sub_dir in sorted(root.glob("sub-*")):
        t1 = _find_t1(sub_dir / "anat") or next(
            iter(sorted(sub_dir.glob("ses-*/anat/*_T1w*"))), None
        )
        if t1 is None:
            continue
        sid = sub_dir.name
        if sid not in rows and require_covariates:
            raise InputError(table, f"no row for {sid} (its T1w is {t1})")
        labels, surfaces = _derivatives(root, sid)
        cov = _covariates(rows[sid], table) if sid in rows else {}
        subjects.append(Subject(sid, t1, labels, surfaces, cov))
    if not subjects:
        raise InputError(root, "no sub-*/anat/*_T1w.nii[.gz] found (not a BIDS folder?)")
    return subjects


def read_manifest(path: str | Path) -> list[Subject]:
    """CSV/TSV with columns ``subject``, ``t1`` (or ``image``), optional ``labels``, covariates.

    Relative paths are resolved against the manifest's folder.
    """
    path = Path(path)
    rows = _read_table(path)
    cols = set(rows[0])
    t1_col = "t1" if "t1" in cols else "image" if "image" in cols else None
    if t1_col is None or "subject" not in cols:
        raise InputError(
            path, f"manifest needs columns 'subject' and 't1' (or 'image'); has {sorted(cols)}"
        )
    subjects = []
    for row in rows:
        t1 = path.parent / row[t1_col]
        lab = row.get("labels") or ""
        surfaces = {k: path.parent / v for k, v in row.items() if _is_surface_col(k) and v}
        subjects.append(
            Subject(
                row["subject"],
                t1,
                path.parent / lab if lab else None,
                surfaces,
                _covariates(row, path),
            )
        )
    return subjects


def _is_surface_col(name: str) -> bool:
    return bool(re.fullmatch(r"(lh|rh)_(pial|white)", name or ""))


def load_subjects(path: str | Path) -> list[Subject]:
    """BIDS folder, manifest (.csv/.tsv) or a folder of volume files (one subject per file)."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "not found")
    if path.is_file():
        if path.suffix.lower() in (".csv", ".tsv"):
            return read_manifest(path)
        raise InputError(
            path, "expected a BIDS folder, a folder of NIfTI files or a .csv/.tsv manifest"
        )
    if (path / "manifest.tsv").exists():
        return read_manifest(path / "manifest.tsv")
    if (path / "participants.tsv").exists() or any(path.glob("sub-*")):
        return read_bids(path)
    files = sorted(p for p in path.iterdir() if p.name.endswith(_NII))
    if not files:
        raise InputError(path, "no BIDS layout, manifest or NIfTI files found")
    return [Subject(p.name.split(".")[0], p) for p in files]
