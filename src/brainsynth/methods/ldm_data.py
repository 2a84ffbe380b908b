"""Data for latent diffusion: cache images at the training resolution, and their latents."""

from __future__ import annotations

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
    return x[(..., *[slice(0, s) for s in shape])]


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


@torch.no_grad()
def encode_all(
    ae, data: ImageSet, device, batch_size: int = 4
) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior means of every image (B, C, *latent) and covariates (B, 4), on the CPU."""
    ae.eval()
    lat, cov = [], []
    for start in range(0, len(data), batch_size):
        items = [data[i] for i in range(start, min(start + batch_size, len(data)))]
        x = torch.stack([it["image"] for it in items]).to(device)
        mu, _ = ae.encode(x)
        lat.append(mu.float().cpu())
        cov.append(torch.stack([it["covariates"] for it in items]))
    return torch.cat(lat), torch.cat(cov)
