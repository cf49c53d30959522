"""Shared test setup: the ``cuda`` marker, a ``device`` fixture over CPU and CUDA, the tiny
synthetic dataset of the end-to-end tests (``data_root``, generated once per session), and where
the real split files are (:func:`real_split_dir`).

Tests that take the ``device`` fixture run once on CPU and once on CUDA; the CUDA run is marked
``cuda`` and skipped when no GPU is available, so ``pytest -m "not cuda"`` gives the CPU suite.

Tests that read a real split file look for it where its preparation command writes it
(``data/agedb-dir/agedb.csv``, ``data/sts-b-dir/*.tsv``), and first in the folder named by the
environment variable ``RANKSIM_TEST_DATA``, laid out the same way (``agedb-dir/agedb.csv``,
``sts-b-dir/{train,dev,test}_new.tsv``). Without the files they skip, naming the command.
"""

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
TEST_DATA_ENV = "RANKSIM_TEST_DATA"
# folder -> (the files a test needs in it, the command that writes them to data/<folder>)
REAL_SPLITS = {
    "agedb-dir": (("agedb.csv",),
                  "python -m ranksim.data.prepare agedb --root data/agedb-dir --zip AgeDB.zip"),
    "sts-b-dir": (("train_new.tsv", "dev_new.tsv", "test_new.tsv"),
                  "python -m ranksim.data.prepare sts_b --root data/sts-b-dir"),
}


def real_split_dir(folder: str) -> Path | None:
    """``$RANKSIM_TEST_DATA/<folder>`` or ``<repo>/data/<folder>``, the first that holds all the
    real split files of ``folder`` (a key of ``REAL_SPLITS``); ``None`` when neither does."""
    files, _ = REAL_SPLITS[folder]
    roots = [Path(os.environ[TEST_DATA_ENV]) / folder] if os.environ.get(TEST_DATA_ENV) else []
    roots.append(REPO / "data" / folder)
    return next((root for root in roots if all((root / name).is_file() for name in files)), None)


def missing_real_split(folder: str) -> str:
    """The skip message: what is missing and the command that prepares it."""
    files, command = REAL_SPLITS[folder]
    return (f"real split file(s) {', '.join(files)} not in data/{folder}: prepare them with '{command}' "
            f"(see data/README.md), or set {TEST_DATA_ENV} to a folder holding {folder}/")


def needs_real_split(folder: str) -> pytest.MarkDecorator:
    """Skip the test unless the real split files of ``folder`` are found."""
    return pytest.mark.skipif(real_split_dir(folder) is None, reason=missing_real_split(folder))


def require_real_split(folder: str) -> Path:
    """The folder of the real split files of ``folder``, or skip the calling test or fixture."""
    root = real_split_dir(folder)
    if root is None:
        pytest.skip(missing_real_split(folder))
    return root


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
