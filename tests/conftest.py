"""Shared test setup: the ``cuda`` marker, a ``device`` fixture over CPU and CUDA, and the tiny
synthetic dataset of the end-to-end tests (``data_root``, generated once per session).

Tests that take the ``device`` fixture run once on CPU and once on CUDA; the CUDA run is marked
``cuda`` and skipped when no GPU is available, so ``pytest -m "not cuda"`` gives the CPU suite.
"""

from pathlib import Path

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


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    """The synthetic dataset that tests/tiny.py's overrides expect, shared by every end-to-end test."""
    from ranksim.config import SyntheticConfig
    from ranksim.data.age.synthetic import ensure_synthetic

    root = tmp_path_factory.mktemp("data") / "synthetic"
    ensure_synthetic(root, SyntheticConfig(num_samples=480, image_size=16))
    return root
