"""Method restore (the prior): training on a tiny cache, exact resume, load_prior and its grid,
refusing another method's checkpoint, the CLI train + sample smoke test, and every shipped config."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from brainsynth.cli.main import app
from brainsynth.config import load_config
from brainsynth.errors import InputError
from brainsynth.io import read_volume
from brainsynth.methods import get_method, restore, toy
from brainsynth.methods.restore.prior import PriorInfo, spatial_multiple
from brainsynth.nn.presets import count_parameters
from brainsynth.training.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "configs").glob("restore_*.yaml"))
TINY = REPO / "configs" / "restore_tiny.yaml"


def _cfg(*overrides: str) -> restore.RestoreConfig:
    return load_config(restore.RestoreConfig, TINY, list(overrides))


def test_images_are_pooled_padded_mirrored_in_model_units(restore_cache):
    cfg = _cfg()
    info = PriorInfo.from_cache(restore_cache, cfg)
    assert info.shape == (8, 10, 8) and info.spacing == 4.0 and info.downsample == 2
    data = restore.PriorImages(restore_cache, "train", cfg, info)
    n = len(data.images)
    assert len(data) == 2 * n
    x, m = data[0]["image"], data[n]["image"]
    assert x.shape == (1, *info.padded_shape)
    assert -1.0 <= float(x.min()) and float(x.max()) <= 1.0 and float(x.min()) == info.background
    assert torch.equal(m, x.flip(1))  # no padding along X here: the whole grid is mirrored
    # the pooled grid's voxel k averages cache voxels 2k, 2k+1: its centre lies between theirs
    cache_aff = np.asarray(
        json.loads((restore_cache / "cache.json").read_text())["reference_affine"]
    )
    centre = cache_aff @ np.array([0.5, 0.5, 0.5, 1.0])
    assert np.allclose(info.affine_array @ np.array([0, 0, 0, 1.0]), centre)
    assert torch.allclose(
        info.from_model(info.to_model(torch.tensor([0.0, 0.3, 1.0]))), torch.tensor([0.0, 0.3, 1.0])
    )


def test_train_resume_is_exact_and_load_prior_gives_the_grid(restore_cache, tmp_path):
    straight = restore.train(_cfg(), restore_cache, tmp_path / "a", "cpu")
    restore.train(_cfg("train.steps=2"), restore_cache, tmp_path / "b", "cpu")
    restore.train(_cfg(), restore_cache, tmp_path / "b", "cpu", resume=True)  # on to 4 steps
    a = load_checkpoint(straight, names=("ema",), with_state=False)
    b = load_checkpoint(tmp_path / "b", names=("ema",), with_state=False)
    assert a["meta"]["method"] == "restore" and a["meta"]["step"] == b["meta"]["step"] == 4
    assert all(torch.equal(a["ema"][k], b["ema"][k]) for k in a["ema"])
    log = [json.loads(line) for line in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    assert any("val/loss" in r for r in log) and all(np.isfinite(r["loss"]) for r in log)

    cfg, model, process, info = restore.load_prior(straight, "cpu")
    assert cfg == _cfg() and info == PriorInfo.from_cache(restore_cache, cfg)
    assert process.prediction == "v" and not any(p.requires_grad for p in model.parameters())
    x = torch.randn(2, 1, *info.padded_shape)
    with torch.no_grad():
        out = model(x, torch.tensor([10, 900]))
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_load_prior_refuses_another_methods_checkpoint(tmp_path):
    cfg = load_config(toy.ToyConfig, None, ["train.steps=1", "data.size=8", "train.batch_size=2"])
    toy.train(cfg, None, tmp_path / "toy", "cpu")
    with pytest.raises(InputError, match="method 'toy', not 'restore'"):
        restore.load_prior(tmp_path / "toy")


def test_train_needs_a_cache(tmp_path):
    with pytest.raises(InputError, match="--data"):
        restore.train(_cfg(), None, tmp_path / "run", "cpu")


def test_cli_train_and_sample(restore_cache, tmp_path):
    run = CliRunner()
    r = run.invoke(
        app,
        [
            "train", "restore", "--data", str(restore_cache), "--out", str(tmp_path / "run"),
            "--config", str(TINY), "--set", "train.steps=2", "--device", "cpu",
        ],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    sample = ["sample", "restore", "--ckpt", str(tmp_path / "run"), "--device", "cpu"]
    r = run.invoke(app, [*sample, "-n", "1", "--steps", "2", "--out", str(tmp_path / "s")])
    assert r.exit_code == 0, r.output
    vol = read_volume(tmp_path / "s" / "sample_000_T1w.nii.gz")
    assert vol.shape == (8, 10, 8) and np.allclose(vol.spacing, 4.0) and vol.orientation == "RAS"
    assert 0.0 <= vol.data.min() and vol.data.max() <= 1.0
    assert (tmp_path / "s" / "montage.png").stat().st_size > 1000
    r = run.invoke(app, [*sample, "-n", "1", "--steps", "2", "--out", str(tmp_path / "s")])
    # never mixes two sample sets (CliRunner calls the app, not main(), which maps this to exit 2)
    assert isinstance(r.exception, InputError) and "--overwrite" in str(r.exception)
    r = run.invoke(app, ["train", "restore", "--out", str(tmp_path / "x"), "--config", str(TINY)])
    assert isinstance(r.exception, InputError) and "--data" in str(r.exception)


def test_configs_found():
    assert {p.name for p in CONFIGS} >= {
        "restore_tiny.yaml",
        "restore_cpu.yaml",
        "restore_gpu.yaml",
    }


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_loads_and_its_unet_fits_the_ixi_grid(path):
    """The IXI cache (96 x 112 x 96 at 2 mm), pooled, fits the UNet with no padding (none of its
    compute is spent on background), and the network runs on a small grid."""
    cfg = load_config(restore.RestoreConfig, path)
    shape = [s // cfg.data.downsample for s in (96, 112, 96)]
    assert all(s % spatial_multiple(cfg) == 0 for s in shape)
    model = restore.build_model(cfg).eval()
    assert count_parameters(model) > 0
    side = 2 * spatial_multiple(cfg)
    with torch.no_grad():
        out = model(torch.randn(1, 1, side, side, side), torch.tensor([500]))
    assert out.shape == (1, 1, side, side, side)


def test_cpu_config_is_4mm_and_gpu_config_2mm():
    cpu = load_config(restore.RestoreConfig, REPO / "configs" / "restore_cpu.yaml")
    gpu = load_config(restore.RestoreConfig, REPO / "configs" / "restore_gpu.yaml")
    assert cpu.data.downsample == 2 and gpu.data.downsample == 1


def test_registry_and_bad_model_overrides():
    m = get_method("restore")
    assert m.Config is restore.RestoreConfig and callable(m.train) and callable(m.sample)
    with pytest.raises(InputError, match="one entry per level"):
        _cfg("model.channels=[8, 16, 32]")  # the tiny preset's attention_levels have 2 entries
    with pytest.raises(InputError, match="must divide"):
        _cfg("model.channels=[6, 16]")  # the tiny preset's 4 groups


def test_crop_training_resumes_exactly_and_checks_its_size(restore_cache, tmp_path):
    straight = restore.train(_cfg("data.crop=[4, 4, 4]"), restore_cache, tmp_path / "a", "cpu")
    restore.train(
        _cfg("data.crop=[4, 4, 4]", "train.steps=2"), restore_cache, tmp_path / "b", "cpu"
    )
    restore.train(_cfg("data.crop=[4, 4, 4]"), restore_cache, tmp_path / "b", "cpu", resume=True)
    a = load_checkpoint(straight, names=("ema",), with_state=False)
    b = load_checkpoint(tmp_path / "b", names=("ema",), with_state=False)
    assert all(torch.equal(a["ema"][k], b["ema"][k]) for k in a["ema"])
    with pytest.raises(InputError, match="data.crop"):
        restore.train(_cfg("data.crop=[3, 4, 4]"), restore_cache, tmp_path / "c", "cpu")


def test_sliced_loss_draws_slices_of_the_images_within_their_extent():
    from brainsynth.methods.restore.train import sliced

    x = torch.arange(2 * 6**3, dtype=torch.float32).reshape(2, 1, 6, 6, 6)
    x[:, :, 4:] = x[:, :, :, 5:] = x[:, :, :, :, 5:] = -1  # end padding beyond (4, 5, 5)
    seen = {}

    def loss(model, batch, generator):
        seen["image"] = batch["image"]
        return batch["image"].sum()

    fn = sliced(loss, 5, (4, 5, 5))
    fn(None, {"image": x}, torch.Generator().manual_seed(0))
    s = seen["image"]
    assert s.shape == (10, 1, 6, 6)
    for n in range(10):
        i = n // 5  # the volume it came from
        hits = [
            (a, k)
            for a in range(3)
            for k in range((4, 5, 5)[a])
            if torch.equal(s[n], x[i].select(1 + a, k))
        ]
        assert len(hits) == 1, n  # a slice of its own volume, inside the image's extent
    again = {}
    sliced(lambda m, b, g: again.setdefault("image", b["image"]).sum(), 5, (4, 5, 5))(
        None, {"image": x}, torch.Generator().manual_seed(0)
    )
    assert torch.equal(again["image"], s)  # a function of the generator: resumes exactly


def test_slice_wise_prior_trains_resumes_and_runs_on_its_cubic_grid(restore_cache, tmp_path):
    sets = ("model.spatial_dims=2", "data.slices=3")
    straight = restore.train(_cfg(*sets), restore_cache, tmp_path / "a", "cpu")
    restore.train(_cfg(*sets, "train.steps=2"), restore_cache, tmp_path / "b", "cpu")
    restore.train(_cfg(*sets), restore_cache, tmp_path / "b", "cpu", resume=True)
    a = load_checkpoint(straight, names=("ema",), with_state=False)
    b = load_checkpoint(tmp_path / "b", names=("ema",), with_state=False)
    assert all(torch.equal(a["ema"][k], b["ema"][k]) for k in a["ema"])
    cfg, model, process, info = restore.load_prior(straight, "cpu")
    assert len(set(info.padded_shape)) == 1 and info.padded_shape[0] >= max(info.shape)
    x = torch.randn(2, 1, *info.padded_shape)
    with torch.no_grad():
        out = model(x, torch.tensor([10, 900]))
    assert out.shape == x.shape and torch.isfinite(out).all()
    with pytest.raises(InputError, match="data.crop"):
        restore.train(_cfg(*sets, "data.crop=[4, 4, 4]"), restore_cache, tmp_path / "c", "cpu")


def test_along_axes_picks_the_planes_across_the_slices_for_the_block_only():
    from brainsynth.methods.restore.restore import along_axes
    from brainsynth.nn.slicewise import SliceWise

    m = SliceWise(torch.nn.Identity())
    with along_axes(m, "across", 2):
        assert m.axes == (0, 1)  # sagittal and coronal planes both contain the axial direction
    assert m.axes == (0, 1, 2)
    with along_axes(m, "across", None), along_axes(m, "all", 1):
        assert m.axes == (0, 1, 2)
    three_d = torch.nn.Identity()
    with along_axes(three_d, "across", 0) as same:
        assert same is three_d


def test_a_padded_grid_keeps_the_image_part_on_the_scan(restore_cache):
    """A cube-padded (slice-wise) prior: the scan's field of view lies on the image part of the
    grid (its first info.shape voxels), as the training images did, not on the padded cube."""
    import torch.nn.functional as F

    from brainsynth.data.cache import read_cache_manifest
    from brainsynth.methods.restore.scan import ScanOptions, prepare_scan

    cfg = _cfg("model.spatial_dims=2")
    info = PriorInfo.from_cache(restore_cache, cfg)
    assert info.padded_shape != info.shape  # 8 x 10 x 8 on a 10^3 cube
    row = read_cache_manifest(restore_cache, "train")[0]
    path = restore_cache / row["image"]
    prep = prepare_scan(path, info, ScanOptions(task="refine"))
    vol = read_volume(path)
    pooled = F.avg_pool3d(torch.from_numpy(vol.data)[None, None].float(), 2)[0, 0]
    y = prep.y[0, 0, : info.shape[0], : info.shape[1], : info.shape[2]]
    brain = pooled > 0.2
    assert brain.any()
    pooled = pooled / pooled[brain].max()
    got = y / y[brain].max()
    assert float((got[brain] - pooled[brain]).abs().max()) < 0.05
