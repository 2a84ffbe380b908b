"""3D feature extractors for FID/MMD; every extractor has a ``name`` that goes into every output.

Two kinds, both MONAI 3D ResNets (``monai.networks.nets.ResNet``, 1 input channel, no classifier
head, first convolution 7^3 with stride 2, shortcut type B, no bias in the downsampling convolution:
the MedicalNet layout) whose global-average-pooled last feature map is the feature vector:

* ``medicalnet_extractor(path)``: MedicalNet weights (Chen et al. 2019, "Med3D") from a local ``.pth``
  (a ``{"state_dict": ...}`` checkpoint or a bare state dict; ``module.`` prefixes are stripped and the
  segmentation head ``conv_seg.*`` is dropped). The depth (10/18/34/50/101/152/200) is read from the
  weights. Name: ``medicalnet-resnet50:<sha256(file)[:12]>``. Note: MedicalNet's own network uses
  dilated convolutions in layers 3-4; MONAI's layout (used here) strides instead, so features equal
  MedicalNet's up to that difference in the last two stages.
* ``random_resnet10_extractor(seed=0)`` (the default, needing no download): a ResNet-10 whose
  convolution weights are He-uniform (``U(-b, b)``, ``b = sqrt(6 / fan_out)``, the variance of MONAI's
  own Kaiming-normal fan-out init), drawn from a SplitMix64 counter hash of ``(seed, parameter index,
  element index)`` in float64 arithmetic: the same weights on every machine, OS and numpy/torch
  version. BatchNorm layers are identity-like (weight 1, bias 0, running mean 0, running var 1).
  Name: ``random-resnet10-seed0:<sha256(weights)[:12]>``; the hash is over the float32 weights in
  state-dict order, so any change in the weights changes the name. Random convolutional features are a
  weaker, uncalibrated embedding than a trained one: use them to compare runs with each other under
  the same name, not to compare with published FIDs. Sensitivity measured on IXI cache images, 30 vs
  30 subjects: FID 0.022 (real vs real), 0.022 (+ noise sd 0.02), 0.025 (noise 0.05), 0.031 (blur
  sigma 0.7 voxel), 0.049 (blur 1.5); RBF MMD^2 0.017 / 0.021 / 0.046 / 0.12 / 0.30 (permutation
  p 0.06 / 0.055 / 0.01 / 0.005 / 0.005): MMD separates degradations better than FID here, and
  mild noise goes unnoticed by both.

Input to both: the volume z-scored over its brain mask (voxels > 0 if no mask is given; mean 0, std 1
inside), 0 outside, as a ``(1, 1, X, Y, Z)`` float32 tensor in RAS voxel order; this is MedicalNet's
training normalisation and makes the features blind to global intensity scale (compared separately
by the intensity-histogram metric of the evaluation run).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from brainsynth.errors import InputError

INPUT_NORMALISATION = "z-score inside the brain mask (voxels > 0 without a mask), 0 outside"

_DEPTHS: dict[str, tuple[str, list[int]]] = {
    "resnet10": ("basic", [1, 1, 1, 1]),
    "resnet18": ("basic", [2, 2, 2, 2]),
    "resnet34": ("basic", [3, 4, 6, 3]),
    "resnet50": ("bottleneck", [3, 4, 6, 3]),
    "resnet101": ("bottleneck", [3, 4, 23, 3]),
    "resnet152": ("bottleneck", [3, 8, 36, 3]),
    "resnet200": ("bottleneck", [3, 24, 36, 3]),
}


def build_resnet(
    arch: str, shortcut_type: str = "B", bias_downsample: bool = False
) -> torch.nn.Module:
    """MedicalNet-layout 3D ResNet (MONAI), no classifier head, eval mode."""
    from monai.networks.nets.resnet import ResNet, get_inplanes

    if arch not in _DEPTHS:
        raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(_DEPTHS)}")
    block, layers = _DEPTHS[arch]
    net = ResNet(
        block=block,
        layers=layers,
        block_inplanes=get_inplanes(),
        spatial_dims=3,
        n_input_channels=1,
        conv1_t_size=7,
        conv1_t_stride=2,
        shortcut_type=shortcut_type,
        feed_forward=False,
        bias_downsample=bias_downsample,
    )
    return net.eval()


# --- deterministic random weights --------------------------------------------------------------

_M64 = (1 << 64) - 1


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on uint64 (wrapping arithmetic): a fixed, portable integer hash."""
    x = (x + np.uint64(0x9E3779B97F4A7C15)) & np.uint64(_M64)
    x = ((x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & np.uint64(_M64)
    x = ((x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & np.uint64(_M64)
    return x ^ (x >> np.uint64(31))


def hash_uniform(seed: int, stream: int, n: int) -> np.ndarray:
    """``n`` uniform floats in [0, 1) from SplitMix64 of ``(seed, stream, index)``: portable."""
    with np.errstate(over="ignore"):
        base = _splitmix64(np.asarray([seed * 1_000_003 + stream], dtype=np.uint64))[0]
        h = _splitmix64(np.arange(n, dtype=np.uint64) ^ base)
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def _randomise(net: torch.nn.Module, seed: int) -> None:
    stream = 0
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.Conv3d):
                w = module.weight
                fan_out = w.shape[0] * int(np.prod(w.shape[2:]))
                bound = np.sqrt(6.0 / fan_out)
                u = hash_uniform(seed, stream, w.numel())
                w.copy_(torch.from_numpy((2.0 * u - 1.0) * bound).reshape(w.shape))
                if module.bias is not None:
                    module.bias.zero_()
                stream += 1
            elif isinstance(module, torch.nn.BatchNorm3d):
                module.reset_parameters()  # weight 1, bias 0, running mean 0, running var 1


def _state_hash(net: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in net.state_dict().items():
        if v.is_floating_point():
            h.update(k.encode())
            h.update(v.detach().cpu().to(torch.float32).numpy().tobytes())
    return h.hexdigest()


def _file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --- extractor ---------------------------------------------------------------------------------


@dataclass
class FeatureExtractor:
    """``extractor(volume, mask=None) -> (d,) float64``; ``name`` identifies the weights exactly."""

    name: str
    net: torch.nn.Module
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    info: dict = field(default_factory=dict)

    def to(self, device: str | torch.device) -> FeatureExtractor:
        self.device = torch.device(device)
        self.net.to(self.device)
        return self

    @property
    def dim(self) -> int:
        return int(self.info["dim"])

    def describe(self) -> dict:
        return {"name": self.name, "input": INPUT_NORMALISATION, **self.info}

    @torch.no_grad()
    def __call__(self, volume: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        x = torch.from_numpy(normalise_input(volume, mask))[None, None].to(self.device)
        return self.net(x)[0].double().cpu().numpy()


def normalise_input(volume: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """z-score over ``mask`` (``volume > 0`` if None), 0 outside; float32."""
    v = np.asarray(volume, dtype=np.float32)
    if v.ndim != 3:
        raise ValueError(f"feature extractors take 3D volumes, got shape {v.shape}")
    m = (v > 0) if mask is None else np.asarray(mask, dtype=bool)
    if not m.any():
        return np.zeros_like(v)
    inside = v[m].astype(np.float64)
    mean, std = inside.mean(), inside.std()
    out = np.zeros_like(v)
    out[m] = ((inside - mean) / (std if std > 0 else 1.0)).astype(np.float32)
    return out


def random_resnet10_extractor(seed: int = 0) -> FeatureExtractor:
    """The default extractor (no download): ResNet-10 with portable hash-seeded weights."""
    net = build_resnet("resnet10")
    _randomise(net, seed)
    digest = _state_hash(net)[:12]
    return FeatureExtractor(
        f"random-resnet10-seed{seed}:{digest}",
        net,
        info={
            "arch": "resnet10 (MONAI ResNet, MedicalNet layout)",
            "weights": f"random He-uniform (fan_out) from SplitMix64, seed {seed}",
            "weights_sha256_12": digest,
            "pooling": "global average pool of layer4",
            "dim": 512,
        },
    )


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a bad file
        raise InputError(
            path, f"cannot read as a PyTorch state dict ({type(e).__name__}: {e})"
        ) from e
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise InputError(
            path, "not a state dict (expected a dict of tensors or {'state_dict': ...})"
        )
    return {re.sub(r"^module\.", "", k): v for k, v in obj.items()}


def infer_arch(state: dict[str, torch.Tensor]) -> tuple[str, str, bool]:
    """(arch, shortcut_type, bias_downsample) from a MedicalNet-layout state dict."""
    blocks = []
    for layer in range(1, 5):
        idx = {int(m.group(1)) for k in state if (m := re.match(rf"layer{layer}\.(\d+)\.", k))}
        blocks.append(max(idx) + 1 if idx else 0)
    kind = "bottleneck" if any(k.endswith("conv3.weight") for k in state) else "basic"
    for name, (b, layers) in _DEPTHS.items():
        if b == kind and layers == blocks:
            shortcut = "B" if any(".downsample." in k for k in state) else "A"
            bias = any(re.search(r"downsample\.0\.bias$", k) for k in state)
            return name, shortcut, bias
    raise ValueError(f"not a known 3D ResNet layout ({kind} blocks per layer {blocks})")


def medicalnet_extractor(weights: str | Path) -> FeatureExtractor:
    """A MedicalNet-layout ResNet with weights from a local ``.pth`` (depth read from the weights)."""
    path = Path(weights)
    if not path.is_file():
        raise InputError(path, "feature-extractor weights not found")
    state = _load_state_dict(path)
    try:
        arch, shortcut, bias = infer_arch(state)
    except ValueError as e:
        raise InputError(path, str(e)) from e
    net = build_resnet(arch, shortcut, bias)
    own = net.state_dict()
    state = {k: v for k, v in state.items() if k in own}  # drops conv_seg.* (MedicalNet's head)
    missing = sorted(set(own) - set(state) - {k for k in own if k.endswith("num_batches_tracked")})
    if missing:
        raise InputError(path, f"weights lack {len(missing)} tensors of {arch}, e.g. {missing[:3]}")
    bad = [k for k, v in state.items() if v.shape != own[k].shape]
    if bad:
        raise InputError(path, f"tensor shapes do not match {arch}: {bad[:3]}")
    net.load_state_dict(state, strict=False)
    net.eval()
    digest = _file_hash(path)[:12]
    dim = 2048 if _DEPTHS[arch][0] == "bottleneck" else 512
    return FeatureExtractor(
        f"medicalnet-{arch}:{digest}",
        net,
        info={
            "arch": f"{arch} (MONAI ResNet, MedicalNet layout, shortcut {shortcut})",
            "weights": str(path),
            "weights_sha256_12": digest,
            "pooling": "global average pool of layer4",
            "dim": dim,
        },
    )


def load_extractor(
    weights: str | Path | None = None, device: str | torch.device = "cpu", seed: int = 0
) -> FeatureExtractor:
    """MedicalNet weights from ``weights`` if given, else the random ResNet-10 default."""
    ext = medicalnet_extractor(weights) if weights else random_resnet10_extractor(seed)
    return ext.to(device)
