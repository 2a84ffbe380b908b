"""Shared fixtures. Real-data tests use ``shared_data``: they skip when ../shared is absent (a user's
machine) and fail instead when BRAINSYNTH_REQUIRE_SHARED=1 (CI), so they cannot silently vanish."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def _shared_root() -> Path:
    env = os.environ.get("BRAINSYNTH_SHARED")
    return Path(env) if env else REPO.parent / "shared"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to ../shared/data (IXI, pycortex_s1, synthseg_labels)."""
    data = _shared_root() / "data"
    if not (data / "ixi" / "participants.tsv").exists():
        if os.environ.get("BRAINSYNTH_REQUIRE_SHARED") == "1":
            pytest.fail(f"shared data required in CI but not found at {data}")
        pytest.skip(f"shared data not found at {data}")
    return data


@pytest.fixture
def models(tmp_path, monkeypatch) -> Path:
    """An empty models folder for ``brainsynth export``/``models`` and model names (set as
    BRAINSYNTH_MODELS), so that no test writes to or reads the repository's models/."""
    root = tmp_path / "models"
    monkeypatch.setenv("BRAINSYNTH_MODELS", str(root))
    return root


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
    np.random.seed(0)  # noqa: NPY002 - also seeds code that uses the legacy global RNG


def pytest_collection_modifyitems(config, items):  # noqa: ARG001
    if not torch.cuda.is_available():
        skip_gpu = pytest.mark.skip(reason="needs CUDA")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip_gpu)


_ONE_THREAD_DIRS = {"nn", "diffusion", "sampling"}


@pytest.fixture(autouse=True)
def _one_thread(request):
    """One intra-op thread in tests/nn, tests/diffusion and tests/sampling: many small tensor ops
    (tiny networks, 1-D Monte Carlo chains) gain nothing from a second thread, and on a shared
    2-core machine two OpenMP threads per process made them 5-20x slower (measured)."""
    if Path(str(request.node.path)).parent.name not in _ONE_THREAD_DIRS:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
