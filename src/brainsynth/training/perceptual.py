"""A 3D perceptual loss on a MedicalNet-layout ResNet with weights from a local file.

MONAI's ``PerceptualLoss`` fetches its networks (MedicalNet, RadImageNet) from a hub when it is
built, which fails offline and pins a download into training. Here the user gives the weights
(a MedicalNet ``.pth``, read by ``evaluation.features.medicalnet_extractor``) and the loss is the
LPIPS distance without learned linear heads (Zhang et al. 2018, eq. 1 with w_l = 1):

    d(x, x^) = sum_l mean_{voxels} || f_l(x) / |f_l(x)| - f_l(x^) / |f_l(x^)| ||^2

over the channel-normalised outputs f_l of the stem and the first three residual stages. Both
volumes are z-scored with the *target's* brain statistics (MedicalNet's input normalisation), so
a global intensity error of the reconstruction is still seen. The network is frozen (eval mode, no
gradients to its weights); gradients flow to the reconstruction only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

EPS = 1e-10


class PerceptualLoss3D(nn.Module):
    """``loss(recon, target)`` for (B, 1, X, Y, Z) volumes; ``weights``: a MedicalNet ``.pth``."""

    def __init__(self, weights: str | Path, stages: int = 3):
        super().__init__()
        from brainsynth.evaluation.features import medicalnet_extractor

        ext = medicalnet_extractor(weights)  # InputError naming the file when it is unusable
        self.name = ext.name
        self.net = ext.net.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        if not 1 <= stages <= 4:
            raise ValueError(f"stages must be 1..4, got {stages}")
        self.stages = stages

    def train(self, mode: bool = True) -> PerceptualLoss3D:
        super().train(mode)
        self.net.eval()  # BatchNorm keeps its running statistics
        return self

    def features(self, x: Tensor) -> list[Tensor]:
        n: Any = self.net  # a MONAI ResNet
        h = n.act(n.bn1(n.conv1(x)))
        out = [h]
        if not n.no_max_pool:
            h = n.maxpool(h)
        for layer in (n.layer1, n.layer2, n.layer3, n.layer4)[: self.stages]:
            h = layer(h)
            out.append(h)
        return out

    def forward(self, recon: Tensor, target: Tensor) -> Tensor:
        mask = target > 0
        n = mask.flatten(1).sum(1).clamp_min(1).to(target.dtype)
        mean = (target * mask).flatten(1).sum(1) / n
        var = (((target - mean.view(-1, 1, 1, 1, 1)) * mask) ** 2).flatten(1).sum(1) / n
        shape = (-1, 1, 1, 1, 1)
        mean, std = mean.view(shape), var.sqrt().clamp_min(1e-6).view(shape)
        fa = self.features((recon.float() - mean) / std)
        fb = self.features((target.float() - mean) / std)
        total = recon.new_zeros((), dtype=torch.float32)
        for a, b in zip(fa, fb, strict=True):
            a = a / (a.norm(dim=1, keepdim=True) + EPS)
            b = b / (b.norm(dim=1, keepdim=True) + EPS)
            total = total + ((a - b) ** 2).sum(1).mean()
        return total
