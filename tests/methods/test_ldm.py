"""Method ldm: CLI smoke test on tiny sizes (train both stages, sample, NIfTI out) + covariate filling."""

from __future__ import annotations

import csv
import warnings

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from brainsynth.cli.main import app
from brainsynth.data.covariates import CovariateNormaliser
from brainsynth.errors import InputError
from brainsynth.io import read_volume
from brainsynth.methods.ldm.sample import fill_covariates, sample_ldm

FAST = [
    "--set",
    "data.downsample=1",
    "--set",
    "train_ae.steps=3",
    "--set",
    "train_ae.batch_size=2",
    "--set",
    "train_diffusion.steps=3",
    "--set",
    "train_diffusion.batch_size=2",
    "--set",
    "sample.steps=3",
]


@pytest.mark.slow
def test_ldm_cli_smoke(tmp_path):
    run = CliRunner()
    r = run.invoke(
        app, ["phantoms", "--out", str(tmp_path / "bids"), "-n", "4", "--spacing", "4", "--quiet"]
    )
    assert r.exit_code == 0, r.output
    r = run.invoke(
        app,
        [
            "prepare",
            str(tmp_path / "bids"),
            "--out",
            str(tmp_path / "cache"),
            "--spacing",
            "4",
            "--shape",
            "32",
            "40",
            "32",
            "--split",
            "0.5",
            "0.25",
            "0.25",
            "--no-progress",
        ],
    )
    assert r.exit_code == 0, r.output
    common = [
        "--data",
        str(tmp_path / "cache"),
        "--config",
        "configs/ldm_tiny.yaml",
        "--device",
        "cpu",
        *FAST,
    ]
    r = run.invoke(app, ["train", "ldm", "--stage", "ae", "--out", str(tmp_path / "ae"), *common])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "ae" / "latent_stats.json").exists() and (
        tmp_path / "ae" / "recon_metrics.json"
    ).exists()
    r = run.invoke(
        app,
        [
            "train",
            "ldm",
            "--stage",
            "diffusion",
            "--ae",
            str(tmp_path / "ae"),
            "--out",
            str(tmp_path / "ldm"),
            *common,
        ],
    )
    assert r.exit_code == 0, r.output
    # the phantoms are 78 years old: asking for 70 warns that the model extrapolates
    sample = ["sample", "ldm", "--ckpt", str(tmp_path / "ldm"), "--device", "cpu", "--out"]
    with pytest.warns(UserWarning, match="outside the training range"):
        r = run.invoke(app, [*sample, str(tmp_path / "s"), "-n", "2", "--age", "70", "--sex", "F"])
    assert r.exit_code == 0, r.output
    vol = read_volume(tmp_path / "s" / "sample_000_T1w.nii.gz")
    assert vol.shape == (32, 40, 32) and np.allclose(vol.spacing, 4.0) and vol.orientation == "RAS"
    assert 0.0 <= vol.data.min() and vol.data.max() <= 1.0
    rows = list(csv.DictReader(open(tmp_path / "s" / "samples.tsv"), delimiter="\t"))
    assert len(rows) == 2 and float(rows[0]["age"]) == 70 and rows[0]["sex"] == "F"
    assert (tmp_path / "s" / "montage.png").stat().st_size > 1000
    # progress counts the steps of all batches: 3 volumes in batches of 2, 4 steps each
    calls = []
    sample_ldm(
        tmp_path / "ldm",
        {},
        3,
        tmp_path / "s3",
        steps=4,
        batch_size=2,
        progress=lambda i, total: calls.append((i, total)),
    )
    assert calls == [(i, 8) for i in range(1, 9)]
    r = run.invoke(app, [*sample, str(tmp_path / "s0"), "-n", "0"])
    assert r.exit_code == 2 and ">= 1" in r.output  # a usage error, before the model is loaded
    # bad input: diffusion stage without an autoencoder is a clear error, exit code 2
    r = run.invoke(
        app, ["train", "ldm", "--stage", "diffusion", "--out", str(tmp_path / "x"), *common]
    )
    assert r.exit_code != 0


def test_fill_covariates_keeps_given_and_samples_close_rows():
    rows = [
        {"age": 20.0, "sex": 0.0, "ventricle_volume": 10000.0, "brain_volume": 1.1e6},
        {"age": 80.0, "sex": 1.0, "ventricle_volume": 50000.0, "brain_volume": 1.3e6},
    ]
    norm = CovariateNormaliser.fit(rows)
    rng = np.random.default_rng(0)
    out = fill_covariates({"age": 79.0}, rows, norm, 20, rng)
    assert all(o["age"] == 79.0 for o in out)
    # a 79-year-old gets the old subject's ventricles (kernel weight ratio ~ e^-7 for the young one)
    assert np.mean([o["ventricle_volume"] == 50000.0 for o in out]) > 0.9
    full = {"age": 30.0, "sex": 1.0, "ventricle_volume": 2e4, "brain_volume": 1.2e6}
    assert fill_covariates(full, rows, norm, 3, rng) == [full] * 3


@pytest.mark.parametrize(
    "given,match",
    [({"ventricle_volume": -5.0}, "non-negative"), ({"age": float("inf")}, "finite")],
)
def test_fill_covariates_rejects_impossible_values(given, match):
    rows = [{"age": 20.0, "sex": 0.0, "ventricle_volume": 1e4, "brain_volume": 1.1e6}]
    with pytest.raises(InputError, match=match):
        fill_covariates(given, rows, CovariateNormaliser.fit(rows), 1, np.random.default_rng(0))


def test_fill_covariates_warns_outside_the_training_range():
    rows = [
        {"age": 20.0, "sex": 0.0, "ventricle_volume": 1e4, "brain_volume": 1.1e6},
        {"age": 80.0, "sex": 1.0, "ventricle_volume": 5e4, "brain_volume": 1.3e6},
    ]
    norm, rng = CovariateNormaliser.fit(rows), np.random.default_rng(0)
    with pytest.warns(UserWarning, match=r"ventricle_volume 200000 is outside .*\[10000, 50000\]"):
        fill_covariates({"ventricle_volume": 2e5}, rows, norm, 1, rng)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fill_covariates({"age": 50.0, "sex": 1.0}, rows, norm, 1, rng)


@pytest.mark.parametrize("sample_posterior", [True, False])
def test_ae_loss_posterior_sample_or_mean(sample_posterior):
    """The loss is L1(decode(z), x) + w * KL(q(z|x) || N(0, I)); z is a posterior sample drawn from
    the generator, or the posterior mean (then the loss does not depend on the generator)."""
    import torch
    import torch.nn.functional as F

    from brainsynth.methods.ldm.losses import AEWithDiscriminator, ae_loss
    from brainsynth.nn.autoencoder import build_autoencoder, kl_divergence

    torch.manual_seed(0)
    m = AEWithDiscriminator(build_autoencoder("tiny", 3, 1, 2), None).eval()
    x = torch.rand(2, 1, 8, 8, 8)
    loss = ae_loss(1e-3, 0.0, 0, sample_posterior)
    a = loss(m, {"image": x}, torch.Generator().manual_seed(1))
    b = loss(m, {"image": x}, torch.Generator().manual_seed(2))
    mu, sigma = m.ae.encode(x)
    expected_mean = F.l1_loss(m.ae.decode(mu), x) + 1e-3 * kl_divergence(mu, sigma)
    if sample_posterior:
        assert not torch.allclose(a, b)
    else:
        torch.testing.assert_close(a, b)
        torch.testing.assert_close(a, expected_mean)


def test_mirror_lr_is_an_involution_that_keeps_the_padding():
    from brainsynth.methods.ldm.data import mirror_lr

    x = torch.arange(2 * 1 * 6 * 3 * 2, dtype=torch.float32).reshape(2, 1, 6, 3, 2)
    m = mirror_lr(x, 4)  # voxels 4, 5 along X are end padding
    assert torch.equal(m[:, :, :4], x[:, :, [3, 2, 1, 0]]) and torch.equal(m[:, :, 4:], x[:, :, 4:])
    assert torch.equal(mirror_lr(m, 4), x)


def test_diffusion_loss_min_snr_weights_each_row():
    """With a network that outputs 0 the loss is mean_b w(t_b) * mean(target_b^2)."""
    from brainsynth.diffusion.gaussian import GaussianProcess
    from brainsynth.methods.ldm.losses import diffusion_loss

    p = GaussianProcess(1000, "scaled_linear", "v", 0.0015, 0.0195)
    batch = {"latent": torch.randn(6, 2, 4, 4, 4), "covariates": torch.zeros(6, 4)}

    def zero(x, t, cond):
        return torch.zeros_like(x)

    losses = {}
    for gamma in (None, 5.0):
        g = torch.Generator().manual_seed(0)
        losses[gamma] = diffusion_loss(p, "crossattn", 0.0, gamma)(zero, batch, g)
    g = torch.Generator().manual_seed(0)  # the same draws as inside the loss
    t = p.sample_t(6, generator=g)
    noise = torch.randn(batch["latent"].shape, generator=g)
    tgt2 = (p.target(batch["latent"], t, noise) ** 2).mean(dim=(1, 2, 3, 4))
    w = (p.snr(t).clamp(max=5.0) / (p.snr(t) + 1)).float()
    torch.testing.assert_close(losses[None], tgt2.mean())
    torch.testing.assert_close(losses[5.0], (w * tgt2).mean())


def test_latent_norm_centres_scales_and_round_trips(tmp_path):
    from brainsynth.methods.ldm.data import LatentNorm

    g = torch.Generator().manual_seed(1)
    base = torch.linspace(-3, 3, 2 * 3 * 4).reshape(2, 3, 4)  # a fixed "average anatomy"
    lat = base + 0.2 * torch.randn(50, 2, 3, 4, generator=g, dtype=torch.float32)
    n = LatentNorm.fit(lat, center=True, ae_scale=7.0)
    z = n.apply(lat)
    assert z.mean(0).abs().max() < 1e-5 and abs(float(z.std()) - 1.0) < 1e-5
    assert 1 / n.scale < 0.25  # the deviations' std (0.2), not the raw latents' (~1.8)
    torch.testing.assert_close(n.invert(z), lat)
    n.save(tmp_path / "norm.safetensors")
    m = LatentNorm.load(tmp_path / "norm.safetensors", n.scale)
    torch.testing.assert_close(m.invert(z), lat)
    plain = LatentNorm.fit(lat, center=False, ae_scale=7.0)
    assert plain.mean is None and LatentNorm.load(None, 7.0).mean is None
    torch.testing.assert_close(plain.apply(lat), lat * 7.0)
    with pytest.raises(InputError, match="latent mean"):
        LatentNorm.load(tmp_path / "gone.safetensors", 1.0)
