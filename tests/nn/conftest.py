"""One intra-op thread for these tests: they run many small tensor ops (tiny networks, 1-D Monte
Carlo chains) that gain nothing from a second thread, and on a shared 2-core machine two OpenMP
threads per process made them 5-20x slower (measured). The previous setting is restored."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
