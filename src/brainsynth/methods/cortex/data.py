"""Training pairs of the cortex method: (T1w, shape channels) per cache subject.

Every cache subject with a label map gets white and pial surfaces per hemisphere extracted from
it (``geometry.extract.surfaces_from_labels``) in its own world space, and the shape channels
(``geometry.channels``: S_c, S_p, S_w, E, R) rasterised on its image grid average-pooled by
``data.downsample`` (``pooled_affine``). They are cached once per run in ``RUN/shapes/``:

    RUN/shapes/<id>.npz          channels (5, *S) float16, affine (4, 4)
    RUN/shapes/<id>/             the four surfaces as GIfTI + surfaces.json (test split only: the
                                 evaluation's inputs; training needs the channels alone)
    RUN/shapes/failures.tsv      subjects whose surfaces could not be made, with the reason

Subjects already done are skipped (a killed run resumes); one bad subject is reported and the
others go on. The cache always holds all five channels; ``select_channels`` gives the ones the
network sees (``data.channels``: all five, or S_c alone for the "fused SDF only" ablation), the
one place train, sample and atrophy choose them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from tqdm import tqdm

from brainsynth.data.cache import read_cache_manifest
from brainsynth.data.parallel import run_tasks
from brainsynth.errors import InputError
from brainsynth.geometry.channels import shape_channels, stack_channels
from brainsynth.geometry.extract import surfaces_from_labels, write_surfaces
from brainsynth.io import Surface, read_volume, write_tsv_atomic
from brainsynth.io.atomic import atomic_path
from brainsynth.methods.cortex.config import CortexConfig
from brainsynth.methods.ldm.data import mirror_lr, pad_to, padded_shape

SHAPES = "shapes"
N_CHANNELS = 5  # S_c, S_p, S_w, E, R (geometry.channels.CHANNELS)
# Model units of the images: the cache's [0, 1] (background 0) -> [-1, 1]; the channels are
# already in [-1, 1] / [0, 1].
SCALE, OFFSET = 2.0, -1.0


def concat_channels(cfg: CortexConfig) -> int:
    """How many shape channels the network sees: 5, or 1 (S_c) with ``data.channels: fused``."""
    return 1 if cfg.data.channels == "fused" else N_CHANNELS


def select_channels(shape: torch.Tensor, cfg: CortexConfig) -> torch.Tensor:
    """The network's channels (B, ``concat_channels(cfg)``, *S) of shape channels (B, 5, *S)."""
    return shape[:, : concat_channels(cfg)]


def pooled_affine(affine: np.ndarray, d: int) -> np.ndarray:
    """The affine of a grid average-pooled by ``d`` (voxel k covers voxels d k .. d k + d - 1)."""
    pool = np.diag([d, d, d, 1.0])
    pool[:3, 3] = (d - 1) / 2
    return np.asarray(affine, dtype=np.float64) @ pool


def channels_from_surfaces(
    surfaces: dict[tuple[str, str], Surface],
    shape: tuple[int, ...],
    affine: np.ndarray,
    clip_mm: float,
) -> np.ndarray:
    """(5, *shape) float32: the shape channels of ``{(hemi, kind): Surface}`` on a grid."""
    ch = shape_channels(
        surfaces.get(("lh", "pial")),
        surfaces.get(("lh", "white")),
        surfaces.get(("rh", "pial")),
        surfaces.get(("rh", "white")),
        shape,
        affine,
        clip_mm=clip_mm,
    )
    return stack_channels(ch).astype(np.float32)


def subject_shapes(
    labels: np.ndarray, affine: np.ndarray, cfg: CortexConfig
) -> tuple[np.ndarray, np.ndarray, dict, dict]:
    """(channels (5, *S), pooled affine, surfaces, reports) of one label map on its own grid."""
    surfaces, reports = surfaces_from_labels(labels, affine)
    d = cfg.data.downsample
    shape = tuple(s // d for s in labels.shape)
    aff = pooled_affine(affine, d)
    return channels_from_surfaces(surfaces, shape, aff, cfg.data.clip_mm), aff, surfaces, reports


def _shape_path(run: Path, sid: str) -> Path:
    return Path(run) / SHAPES / f"{sid}.npz"


def save_shapes(run: str | Path, sid: str, channels: np.ndarray, affine: np.ndarray) -> Path:
    """A subject's shape channels (float16) and their grid's affine, written atomically where
    :func:`load_shapes` and the training read them (``RUN/shapes/<sid>.npz``)."""
    path = _shape_path(Path(run), sid)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, channels=channels.astype(np.float16), affine=affine)
    return path


def _one(args: tuple[Path, dict, Path, CortexConfig]) -> tuple[str, str | None]:
    cache, row, run, cfg = args
    sid = row["subject"]
    try:
        lab = read_volume(cache / row["labels"], dtype=None)
        ch, aff, surfaces, reports = subject_shapes(lab.data.astype(np.int64), lab.affine, cfg)
        if row.get("split") == "test":
            write_surfaces(surfaces, Path(run) / SHAPES / sid, reports=reports)
        save_shapes(run, sid, ch, aff)
        return sid, None
    except InputError as e:
        return sid, str(e.at(cache / row["labels"]))
    except Exception as e:  # noqa: BLE001 - a batch job reports every failure and goes on
        return sid, f"{cache / row['labels']}: unexpected {type(e).__name__}: {e}"


def build_shapes(
    cache: str | Path,
    run: str | Path,
    cfg: CortexConfig,
    jobs: int = 1,
    progress: bool = True,
    shard: tuple[int, int] = (0, 1),
) -> dict[str, str]:
    """The shape channels of every cache subject with labels (module docstring); returns the
    failures {subject: reason}, also written to ``RUN/shapes/failures.tsv``.

    ``shard=(rank, world)``: only every world-th missing subject from the rank-th (torchrun's ranks
    share the extraction); the caller then merges the failures (``write_failures``)."""
    cache, run = Path(cache), Path(run)
    (run / SHAPES).mkdir(parents=True, exist_ok=True)
    rows = [r for r in read_cache_manifest(cache) if r.get("labels")]
    if not rows:
        raise InputError(cache, "no subject has a label map: the cortex method needs them")
    todo = [(cache, r, run, cfg) for r in rows if not _shape_path(run, r["subject"]).is_file()]
    rank, world = shard
    todo = todo[rank::world]
    failures: dict[str, str] = {}
    bar = tqdm(total=len(todo), desc="surfaces", unit="subject", disable=not progress)
    for task, result, exc in run_tasks(_one, todo, jobs):
        sid, err = result if exc is None else (task[1]["subject"], f"worker failed: {exc}")
        if err is not None:
            failures[sid] = err
            tqdm.write(f"skipped {sid}: {err}")
        bar.update()
    bar.close()
    if world == 1:
        write_failures(run, failures)
    return failures


def write_failures(run: str | Path, failures: dict[str, str]) -> None:
    """``RUN/shapes/failures.tsv`` (subject, reason) when there are any."""
    if failures:
        rows_out = [{"subject": k, "reason": v} for k, v in sorted(failures.items())]
        write_tsv_atomic(Path(run) / SHAPES / "failures.tsv", rows_out)


def load_shapes(run: str | Path, sid: str) -> tuple[np.ndarray, np.ndarray]:
    """(channels (5, *S) float32, affine) of a subject from ``RUN/shapes``."""
    p = _shape_path(Path(run), sid)
    try:
        with np.load(p) as z:
            return z["channels"].astype(np.float32), z["affine"]
    except (OSError, ValueError, KeyError) as e:
        raise InputError(p, f"unreadable shape channels ({e})") from e


# What the channels are far outside the brain (S_c, S_p, S_w at +clip; no edge, no ribbon): the
# value of the end padding.
OUTSIDE = (1.0, 1.0, 1.0, 0.0, 0.0)


def pad_channels(ch: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """(5, *S) channels end-padded to ``shape`` with their outside values."""
    fill = torch.tensor(OUTSIDE, dtype=ch.dtype).reshape(-1, *([1] * (ch.dim() - 1)))
    return pad_to(ch - fill, shape) + fill


class Pairs(Dataset):
    """``{"image": (1, *P), "shape": (5, *P)}`` in model units, padded to ``multiple``: the
    subjects of ``split`` that have shape channels, then (``mirror``) their left-right mirrors."""

    def __init__(
        self, cache: str | Path, run: str | Path, split: str, cfg: CortexConfig, multiple: int
    ):
        from brainsynth.data.cache import CacheDataset

        base = CacheDataset(cache, split, with_labels=False)
        d = cfg.data.downsample
        keep = [
            i for i, r in enumerate(base.rows) if _shape_path(Path(run), r["subject"]).is_file()
        ]
        if not keep:
            raise InputError(Path(run) / SHAPES, f"no shape channels for split {split!r}")
        self.ids = [base.rows[i]["subject"] for i in keep]
        self.shape = tuple(s // d for s in base.shape)
        self.padded = padded_shape(self.shape, multiple)
        images, shapes = [], []
        for i, sid in zip(keep, self.ids):
            img = base[i]["image"]
            if d > 1:
                img = F.avg_pool3d(img[None], d)[0]
            images.append(pad_to(img, self.padded) * SCALE + OFFSET)
            shapes.append(pad_channels(torch.from_numpy(load_shapes(run, sid)[0]), self.padded))
        self.images, self.shapes = torch.stack(images), torch.stack(shapes)
        self.mirror = cfg.data.mirror

    def __len__(self) -> int:
        return len(self.ids) * (2 if self.mirror else 1)

    def cortex_centre(self) -> list[float]:
        """The mean voxel position of the centre of the pial surfaces' bounding box (S_p < 0):
        where a sampled grid puts the given surfaces' centre, as in training."""
        centres = []
        for s in self.shapes:
            idx = torch.nonzero(s[1] < 0)
            if len(idx):
                centres.append((idx.min(0).values + idx.max(0).values).double() / 2)
        if not centres:
            return [(n - 1) / 2 for n in self.shape]
        return [float(c) for c in torch.stack(centres).mean(0)]

    def __getitem__(self, i: int) -> dict:
        n = len(self.ids)
        x, s = self.images[i % n], self.shapes[i % n]
        if i >= n:
            x = mirror_lr(x[None], self.shape[0])[0]
            s = mirror_lr(s[None], self.shape[0])[0]
        return {"image": x, "shape": s}
