"""Feature extractors: portable default weights with a stable name, MedicalNet .pth loading."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from brainsynth.errors import InputError
from brainsynth.evaluation import features as ft

# If this changes, the default extractor's weights changed: every FID/MMD computed with it changes
# too, which is exactly what the name (with its hash) is there to reveal.
DEFAULT_NAME = "random-resnet10-seed0:66a9c6d12ee4"


@pytest.fixture(scope="module")
def default_extractor():
    return ft.random_resnet10_extractor(0)


def test_hash_uniform_is_a_fixed_portable_sequence():
    assert ft.hash_uniform(0, 0, 4).tolist() == pytest.approx(
        [0.6524484863740322, 0.03401170130434639, 0.8429655109060831, 0.781499285280747], abs=0
    )
    u = ft.hash_uniform(3, 7, 100_000)
    assert 0 <= u.min() and u.max() < 1 and abs(u.mean() - 0.5) < 0.01


def test_default_extractor_name_and_determinism(default_extractor):
    e = default_extractor
    assert e.name == DEFAULT_NAME
    assert ft.random_resnet10_extractor(1).name.startswith("random-resnet10-seed1:")
    rng = np.random.default_rng(0)
    x = rng.random((32, 32, 32)).astype(np.float32)
    f1, f2 = e(x), e(x)
    assert f1.shape == (512,) and np.array_equal(f1, f2) and np.isfinite(f1).all()
    assert np.std(f1) > 0
    # Blind to global intensity scale (z-scored input), not to content.
    assert np.allclose(e(3.0 * x), f1, atol=1e-4)
    assert not np.allclose(e(rng.random((32, 32, 32)).astype(np.float32)), f1, atol=1e-4)
    assert e.describe()["name"] == DEFAULT_NAME


def test_normalise_input_zscores_the_mask():
    v = np.zeros((8, 8, 8), np.float32)
    v[2:6, 2:6, 2:6] = np.arange(64).reshape(4, 4, 4)
    out = ft.normalise_input(v, v > -1)
    assert out.mean() == pytest.approx(0, abs=1e-6) and out.std() == pytest.approx(1, abs=1e-5)
    out = ft.normalise_input(v)
    assert out[0, 0, 0] == 0 and out[v > 0].mean() == pytest.approx(0, abs=1e-5)


@pytest.mark.parametrize("arch", ["resnet50", "resnet101", "resnet18"])
def test_infer_arch_from_medicalnet_layout(arch):
    shortcut = "A" if arch == "resnet18" else "B"
    with torch.device("meta"):
        net = ft.build_resnet(arch, shortcut_type=shortcut)
    state = {f"module.{k}": v for k, v in net.state_dict().items()}
    state = {k.replace("module.", ""): v for k, v in state.items()}
    assert ft.infer_arch(state) == (arch, shortcut, False)


def test_medicalnet_checkpoint_roundtrip(tmp_path, default_extractor):
    # A MedicalNet-style checkpoint: {"state_dict": {"module.<key>": ...}} plus a segmentation head.
    net = ft.build_resnet("resnet10")
    ft._randomise(net, seed=5)
    state = {f"module.{k}": v for k, v in net.state_dict().items()}
    state["module.conv_seg.0.weight"] = torch.zeros(2, 2)
    path = tmp_path / "resnet_10.pth"
    torch.save({"state_dict": state, "epoch": 3}, path)
    e = ft.load_extractor(path)
    assert e.name.startswith("medicalnet-resnet10:") and len(e.name.split(":")[1]) == 12
    x = np.random.default_rng(1).random((32, 32, 32)).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(ft.normalise_input(x))[None, None])[0].double().numpy()
    assert np.allclose(e(x), expected, atol=1e-6)
    assert e.name != default_extractor.name


def test_bad_weights_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        ft.medicalnet_extractor(tmp_path / "missing.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="cannot read"):
        ft.medicalnet_extractor(bad)
    odd = tmp_path / "odd.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, odd)
    with pytest.raises(InputError, match="ResNet layout"):
        ft.medicalnet_extractor(odd)


@pytest.mark.gpu
def test_features_on_cuda_match_cpu():
    x = np.random.default_rng(2).random((32, 32, 32)).astype(np.float32)
    cpu = ft.random_resnet10_extractor(0)(x)
    gpu = ft.load_extractor(None, "cuda")
    assert gpu.name == DEFAULT_NAME
    assert np.allclose(gpu(x), cpu, rtol=1e-3, atol=1e-4)
