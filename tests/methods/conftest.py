"""Fixtures of the method tests: a tiny prepared cache (4 synthetic heads, 2 mm, 16 x 20 x 16),
a tiny restore prior trained on it (``configs/restore_tiny.yaml``, 4 steps), a tiny deform
run (``configs/deform_tiny.yaml``, both stages) and a tiny ldm diffusion run
(``configs/ldm_tiny.yaml``, 2 steps per stage), each trained once per session."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from brainsynth.data.datasets import Subject
from brainsynth.data.prepare import PrepareOptions, prepare_cache
from brainsynth.io import Volume, write_volume

REPO = Path(__file__).resolve().parents[2]
RESTORE_TINY = REPO / "configs" / "restore_tiny.yaml"
DEFORM_TINY = REPO / "configs" / "deform_tiny.yaml"
LDM_TINY = REPO / "configs" / "ldm_tiny.yaml"
RESTORE_CACHE_SHAPE = (16, 20, 16)  # 2 mm; the tiny config pools by 2 -> 8 x 10 x 8 at 4 mm


def _subject(root: Path, sid: str, seed: int) -> Subject:
    """A 24^3 2 mm head (PSR): a brain (label 2, ventricles 4) inside head tissue (label 530)."""
    rng = np.random.default_rng(seed)
    lab = np.zeros((24, 24, 24), np.uint16)
    lab[2:22, 2:22, 2:22] = 530
    lab[5:19, 4:20, 5:19] = 2
    lab[10:14, 10 + seed % 3 : 14, 10:14] = 4
    t1 = np.select([lab == 2, lab == 4, lab == 530], [100.0, 30.0, 60.0], 2.0)
    aff = np.array([[0, 0, 2.0, -20], [-2.0, 0, 0, 25], [0, 2.0, 0, -22], [0, 0, 0, 1]])
    t1_path = write_volume(
        Volume((t1 + rng.normal(0, 2, t1.shape)).astype(np.float32), aff), root / f"{sid}.nii.gz"
    )
    lab_path = write_volume(Volume(lab, aff), root / f"{sid}_dseg.nii.gz")
    return Subject(sid, t1_path, lab_path, {}, {"age": 30.0 + seed, "sex": float(seed % 2)})


@pytest.fixture(scope="session")
def restore_cache(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("restore")
    subs = [_subject(root / "src", f"s{i}", i) for i in range(5)]
    opts = PrepareOptions(spacing=2.0, shape=RESTORE_CACHE_SHAPE)
    prepare_cache(subs, root / "cache", opts, split=(0.4, 0.4, 0.2), progress=False)
    return root / "cache"


@pytest.fixture(scope="session")
def tiny_prior(restore_cache, tmp_path_factory) -> Path:
    from brainsynth.config import load_config
    from brainsynth.methods import restore

    cfg = load_config(restore.RestoreConfig, RESTORE_TINY)
    return restore.train(cfg, restore_cache, tmp_path_factory.mktemp("prior") / "run", "cpu")


@pytest.fixture(scope="session")
def deform_run(restore_cache, tmp_path_factory) -> Path:
    from brainsynth.config import load_config
    from brainsynth.methods import deform

    cfg = load_config(deform.DeformConfig, DEFORM_TINY)
    run = tmp_path_factory.mktemp("deform") / "run"
    deform.train(cfg, restore_cache, run, "cpu", stage="register")
    deform.train(cfg, restore_cache, run, "cpu", stage="fields")
    return run


@pytest.fixture(scope="session")
def ldm_run(restore_cache, tmp_path_factory) -> Path:
    """A tiny ldm diffusion run (2 steps per stage) on the restore tests' cache; read only."""
    from brainsynth.methods import ldm

    sets = ["data.downsample=1", "train_ae.steps=2", "train_diffusion.steps=2"]
    cfg = ldm.load_ldm_config(LDM_TINY, sets)
    root = tmp_path_factory.mktemp("ldm")
    ldm.train_autoencoder(cfg, restore_cache, root / "ae", False, "cpu")
    return ldm.train_diffusion(cfg, restore_cache, root / "ae", root / "ldm", False, "cpu")
