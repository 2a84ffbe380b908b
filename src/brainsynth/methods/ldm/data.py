"""Data for latent diffusion: cache images at the training resolution, and their latents."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from brainsynth.data.cache import CacheDataset


def padded_shape(shape: tuple[int, ...], multiple: int) -> tuple[int, ...]:
    return tuple(-(-s // multiple) * multiple for s in shape)


def pad_to(x: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Zero-pad the trailing spatial dims of ``x`` at the end up to ``shape``."""
    pads: list[int] = []
    for have, want in zip(reversed(x.shape[-len(shape) :]), reversed(shape), strict=True):
        pads += [0, want - have]
    return F.pad(x, pads)


def crop_to(x: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    index: tuple[Any, ...] = (Ellipsis, *(slice(0, s) for s in shape))
    return x[index]


class ImageSet(Dataset):
    """Cache images, average-pooled by ``downsample`` and zero-padded to a multiple of ``multiple``."""

    def __init__(self, cache, split: str | None, downsample: int, multiple: int):
        self.base = CacheDataset(cache, split, with_labels=False)
        self.downsample = downsample
        shape = tuple(s // downsample for s in self.base.info["shape"])
        self.shape = shape
        self.padded = padded_shape(shape, multiple)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict:
        item = self.base[i]
        img = item["image"]
        if self.downsample > 1:
            img = F.avg_pool3d(img[None], self.downsample)[0]
        return {"image": pad_to(img, self.padded), "covariates": item["covariates"]}


class LatentSet(Dataset):
    """Latents held in memory with their normalised covariates."""

    def __init__(self, latents: torch.Tensor, covariates: torch.Tensor):
        self.latents, self.covariates = latents, covariates

    def __len__(self) -> int:
        return len(self.latents)

    def __getitem__(self, i: int) -> dict:
        return {"latent": self.latents[i], "covariates": self.covariates[i]}


def mirror_lr(x: torch.Tensor, width: int) -> torch.Tensor:
    """Left-right mirror of (B, C, X, Y, Z) RAS images whose first ``width`` voxels along X hold the
    image (the rest is end padding, which stays where it is)."""
    out = x.clone()
    out[:, :, :width] = x[:, :, :width].flip(2)
    return out


@torch.no_grad()
def encode_all(
    ae, data: ImageSet, device, batch_size: int = 4, mirror: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior means of every image (B, C, *latent) and covariates (B, 4), on the CPU.
    ``mirror``: also of each image's left-right mirror (the cache is RAS: X runs left to right),
    with the same covariates, after all the originals (2B rows); each image is read once."""
    ae.eval()
    lat, lat_m, cov = [], [], []
    for start in range(0, len(data), batch_size):
        items = [data[i] for i in range(start, min(start + batch_size, len(data)))]
        x = torch.stack([it["image"] for it in items]).to(device)
        lat.append(ae.encode(x)[0].float().cpu().contiguous())
        if mirror:
            lat_m.append(ae.encode(mirror_lr(x, data.shape[0]))[0].float().cpu().contiguous())
        cov.append(torch.stack([it["covariates"] for it in items]))
    covariates = torch.cat(cov)
    if mirror:
        return torch.cat(lat + lat_m), torch.cat([covariates, covariates])
    return torch.cat(lat), covariates


class LatentNorm:
    """The affine map from autoencoder latents to the diffusion's space: ``z = (mu - mean) * scale``.

    Without centring, ``mean`` is 0 and ``scale`` the autoencoder's 1 / std of the training latents
    (Rombach et al. 2022, sec. 4.3.2). With centring, ``mean`` is the voxelwise mean training latent
    and ``scale`` 1 / std of the deviations from it: the diffusion then learns only how subjects
    differ from the average brain, which an under-trained model otherwise gets wrong first (the
    average anatomy, ventricles included, is then already in ``mean``)."""

    def __init__(self, mean: torch.Tensor | None, scale: float):
        self.mean, self.scale = mean, float(scale)

    @classmethod
    def fit(cls, latents: torch.Tensor, center: bool, ae_scale: float) -> LatentNorm:
        """From the training latents (B, C, *S); ``ae_scale`` is used as is when not centring."""
        if not center:
            return cls(None, ae_scale)
        mean = latents.mean(0)
        return cls(mean, float(1.0 / (latents - mean).std().clamp_min(1e-12)))

    def apply(self, mu: torch.Tensor) -> torch.Tensor:
        return (mu if self.mean is None else mu - self.mean.to(mu)) * self.scale

    def invert(self, z: torch.Tensor) -> torch.Tensor:
        z = z / self.scale
        return z if self.mean is None else z + self.mean.to(z)

    def save(self, path) -> None:
        """Write the mean (atomically; ``scale`` travels in the run's config)."""
        from safetensors.torch import save_file

        from brainsynth.io import atomic_path

        if self.mean is None:
            raise ValueError("nothing to save: this norm has no mean")
        with atomic_path(path) as tmp:
            save_file({"mean": self.mean.contiguous()}, str(tmp))

    @classmethod
    def load(cls, path, scale: float) -> LatentNorm:
        """The norm of a run: the mean saved at ``path`` (None: a run trained without centring)."""
        from safetensors.torch import load_file

        from brainsynth.errors import InputError

        if path is None:
            return cls(None, scale)
        if not Path(path).exists():
            raise InputError(path, "missing: the diffusion run's latent mean (latent_norm)")
        return cls(load_file(str(path))["mean"], scale)


def ventricle_fraction(cache, downsample: int) -> torch.Tensor:
    """(1, 1, *S): the fraction of the cache's training label maps with ventricle at each place,
    average-pooled by ``downsample`` (the training resolution); an InputError without label maps."""
    from brainsynth.data.labels import ventricle_mask
    from brainsynth.errors import InputError

    data = CacheDataset(cache, "train")
    total, n = None, 0
    for i in range(len(data)):
        labels = data[i].get("labels")
        if labels is None:
            continue
        m = torch.from_numpy(ventricle_mask(labels[0].numpy()).astype("float32"))[None, None]
        total = m if total is None else total + m
        n += 1
    if total is None:
        raise InputError(
            cache,
            "no label maps of the training subjects: the ventricle fraction (region_weight) needs them",
        )
    frac = total / n
    return F.avg_pool3d(frac, downsample) if downsample > 1 else frac


def region_weight(
    cache,
    downsample: int,
    padded: tuple[int, ...],
    latent: tuple[int, int, int],
    strength: float,
) -> torch.Tensor:
    """The loss weight (1, 1, *latent) of ``LDMDiffusionConfig.region_weight``: 1 + ``strength`` x
    the training label maps' ventricle fraction (``ventricle_fraction``, padded like the images,
    left-right symmetrised as the mirrored training images need, then averaged onto the latent
    grid), rescaled to mean 1."""
    frac = ventricle_fraction(cache, downsample)
    width = frac.shape[2]
    frac = pad_to(frac, padded)
    frac = 0.5 * (frac + mirror_lr(frac, width))
    w = 1 + strength * F.adaptive_avg_pool3d(frac, latent)
    return w / w.mean()
