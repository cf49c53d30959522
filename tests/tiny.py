"""Shared by the tests: overrides that make any quick-start config a run of a few seconds, and a
loader for the command-line scripts in ``scripts/``.

The matching data (480 images of 16 px) is the session fixture ``data_root`` in conftest.py.
"""

import importlib.util
from pathlib import Path

TINY = ["data.synthetic.num_samples=480", "data.synthetic.image_size=16", "data.image_size=16",
        "data.crop_padding=1", "model.width=4", "optim.batch_size=32", "schedule.epochs=2",
        "schedule.milestones=[1]", "logging.progress=false", "device=cpu"]


def load_script(name: str):
    """``scripts/<name>.py`` as a module (the scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
