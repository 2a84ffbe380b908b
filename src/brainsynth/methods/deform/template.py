"""The template and the affinely aligned subjects it is registered to.

The cache's images are brain-centred, not registered: the template is built as an affine mean
(the mean of the training images; every image registered affinely to it, ``registration.affine``,
and averaged again, ``data.affine_iterations`` times) on the cache's reference grid pooled by
``data.downsample``. Its label map is the voxel-wise majority vote of the aligned subjects'
labels. Every subject is brought onto that grid by its affine (linear for the image, nearest for
the labels); the deformable registration then works on one grid, the template's.

Saved in ``RUN/template/``: ``template_T1w.nii.gz`` (cache units, [0, 1]), ``template_dseg.nii.gz``,
and ``aligned_<split>.pt`` ({"ids", "images" uint8, "labels" int16, "affines"}: the subjects of a
split on the template grid and the world maps M with subject(M p) ~ template(p)).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from brainsynth.data.cache import CacheDataset, read_cache_info
from brainsynth.data.prepare import reference_affine
from brainsynth.data.preprocess import resample_to_grid
from brainsynth.errors import InputError
from brainsynth.io import Volume, read_volume, write_volume
from brainsynth.registration.affine import register_affine
from brainsynth.training.checkpoint import find_in_run

FOLDER = "template"
T1W, DSEG = "template_T1w.nii.gz", "template_dseg.nii.gz"


def pooled_grid(cache: str | Path, downsample: int) -> tuple[np.ndarray, tuple[int, int, int]]:
    """(affine, shape) of the cache's reference grid average-pooled by ``downsample`` (voxel k
    covers cache voxels d k .. d k + d - 1)."""
    info = read_cache_info(cache)
    spacing, shape = float(info["spacing"]), tuple(int(s) for s in info["shape"])
    ref = np.asarray(info.get("reference_affine") or reference_affine(spacing, shape))
    pool = np.diag([downsample, downsample, downsample, 1.0])
    pool[:3, 3] = (downsample - 1) / 2
    out = tuple(s // downsample for s in shape)
    return ref @ pool, (out[0], out[1], out[2])


def pool_labels(labels: np.ndarray, d: int) -> np.ndarray:
    """The majority label of every d x d x d block (ties: the smallest label)."""
    if d == 1:
        return labels
    x, y, z = (s // d for s in labels.shape)
    blocks = labels[: x * d, : y * d, : z * d].reshape(x, d, y, d, z, d)
    flat = blocks.transpose(0, 2, 4, 1, 3, 5).reshape(-1, d**3)
    flat = np.sort(flat, axis=1)  # ties -> the first (smallest) of the most frequent
    counts = (flat[:, :, None] == flat[:, None, :]).sum(2)
    return flat[np.arange(len(flat)), counts.argmax(1)].reshape(x, y, z)


def majority_vote(maps: np.ndarray) -> np.ndarray:
    """Voxel-wise most frequent label of (N, *S) label maps (ties: the smallest label)."""
    values = np.unique(maps)
    best = np.zeros(maps.shape[1:], np.int64)
    best_count = np.full(maps.shape[1:], -1, np.int64)
    for v in values:
        c = (maps == v).sum(0)
        better = c > best_count
        best[better], best_count[better] = v, c[better]
    return best


@dataclass
class Aligned:
    """Subjects of one split on the template grid."""

    ids: list[str]
    images: torch.Tensor  # (N, 1, *S) float32, cache units
    labels: torch.Tensor | None  # (N, 1, *S) int64, or None without label maps
    affines: np.ndarray  # (N, 4, 4): subject(M p) ~ template(p)

    def save(self, path: Path) -> None:
        torch.save(
            {
                "ids": self.ids,
                "images": (self.images * 255).round().clamp(0, 255).to(torch.uint8),
                "labels": None if self.labels is None else self.labels.to(torch.int16),
                "affines": torch.from_numpy(self.affines),
            },
            path,
        )

    @classmethod
    def load(cls, path: Path) -> Aligned:
        d = torch.load(path, weights_only=True)
        return cls(
            list(d["ids"]),
            d["images"].float() / 255,
            None if d["labels"] is None else d["labels"].long(),
            d["affines"].numpy(),
        )


def _subjects(cache: Path, split: str, downsample: int):
    """(id, image Volume, labels array or None) of a split on the pooled grid (brain-centred)."""
    data = CacheDataset(cache, split, with_labels=True)
    affine, _ = pooled_grid(cache, downsample)
    for i in range(len(data)):
        item = data[i]
        img = F.avg_pool3d(item["image"][None], downsample)[0, 0].numpy()
        lab = item.get("labels")
        lab = None if lab is None else pool_labels(lab[0].numpy(), downsample)
        yield data.rows[i]["subject"], Volume(img, affine), lab


def align(
    vol: Volume, labels: np.ndarray | None, template: Volume
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """``vol`` (and its labels) on the template's grid by an affine registration: (image, labels,
    M) with vol(M p) ~ template(p)."""
    m = register_affine(template, vol)
    moved = Volume(vol.data, np.linalg.inv(m) @ vol.affine)
    img = resample_to_grid(moved, template.affine, template.shape).data
    lab = None
    if labels is not None:
        lab = resample_to_grid(
            Volume(labels, moved.affine), template.affine, template.shape, 0
        ).data
    return img, lab, m


def align_split(
    cache: Path, split: str, downsample: int, template: Volume, progress=None
) -> Aligned:
    ids, imgs, labs, affs = [], [], [], []
    subjects = list(_subjects(cache, split, downsample))
    for k, (sid, vol, lab) in enumerate(subjects):
        img, lab_a, m = align(vol, lab, template)
        ids.append(sid)
        imgs.append(torch.from_numpy(img.astype(np.float32)))
        labs.append(None if lab_a is None else torch.from_numpy(lab_a.astype(np.int64)))
        affs.append(m)
        if progress is not None:
            progress(k + 1, len(subjects))
    if not ids:
        raise InputError(cache, f"the cache has no {split!r} subjects")
    labels = None if any(x is None for x in labs) else torch.stack(labs)[:, None]  # type: ignore[arg-type]
    return Aligned(ids, torch.stack(imgs)[:, None], labels, np.stack(affs))


def build_template(
    cache: str | Path,
    downsample: int,
    iterations: int,
    out: Path,
    progress=None,
    given: str = "built",
) -> tuple[Volume, Volume | None, Aligned]:
    """The affine template of the training split (see the module notes), or the ``given`` one
    ("mni152" or a path: ``given.given_template``) with the training split aligned to it, written
    to ``out/template/``; returns (template, its labels or None, the aligned training subjects)."""
    cache, folder = Path(cache), Path(out) / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    affine, shape = pooled_grid(cache, downsample)
    if given != "built":
        from brainsynth.methods.deform.given import given_template

        template, dseg = given_template(given, affine, shape)
        aligned = align_split(cache, "train", downsample, template, progress)
        write_volume(template, folder / T1W)
        if dseg is not None:
            write_volume(dseg, folder / DSEG)
        aligned.save(folder / "aligned_train.pt")
        return template, dseg, aligned
    subjects = list(_subjects(cache, "train", downsample))
    if not subjects:
        raise InputError(cache, "the cache has no training subjects")
    mean = np.mean([v.data for _, v, _ in subjects], axis=0)
    template = Volume(mean.astype(np.float32), affine)
    ids = [s for s, _, _ in subjects]
    images = torch.stack([torch.from_numpy(v.data) for _, v, _ in subjects])[:, None]
    labs = [lab for _, _, lab in subjects]
    labels = None if any(x is None for x in labs) else torch.from_numpy(np.stack(labs))[:, None]
    aligned = Aligned(ids, images, labels, np.stack([np.eye(4)] * len(ids)))
    for it in range(iterations):
        step = (lambda k, n, it=it: progress(it * n + k, iterations * n)) if progress else None
        aligned = align_split(cache, "train", downsample, template, step)
        template = Volume(aligned.images.mean(0)[0].numpy().astype(np.float32), affine)
    write_volume(template, folder / T1W)
    dseg = None
    if aligned.labels is not None:
        dseg = Volume(majority_vote(aligned.labels[:, 0].numpy()).astype(np.int16), affine)
        write_volume(dseg, folder / DSEG)
    aligned.save(folder / "aligned_train.pt")
    return template, dseg, aligned


def load_template(run: str | Path) -> tuple[Volume, Volume | None]:
    """The template (and its labels, if any) of a deform run (or a folder inside it)."""
    found = find_in_run(run, Path(FOLDER) / T1W)
    if found is not None:
        lab = found.parent / DSEG
        return read_volume(found), read_volume(lab) if lab.is_file() else None
    raise InputError(run, f"no template ({FOLDER}/{T1W}) in this deform run")
