"""Shared test setup: the ``cuda`` marker and a ``device`` fixture over CPU and CUDA.

Tests that take the ``device`` fixture run once on CPU and once on CUDA; the CUDA run is marked
``cuda`` and skipped when no GPU is available, so ``pytest -m "not cuda"`` gives the CPU suite.
"""

import pytest
import torch


def pytest_configure(config):
    config.addinivalue_line("markers", "cuda: needs a CUDA device; skipped when none is available")


@pytest.fixture(params=[
    pytest.param("cpu", id="cpu"),
    pytest.param("cuda", id="cuda", marks=[
        pytest.mark.cuda,
        pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available"),
    ]),
])
def device(request):
    return torch.device(request.param)
