"""The public API at the top of the package, the README's "Use it in your own training loop"
example, and the installed package (issue 29).

- The stable names resolve, carry their shapes and paper, and the renamed losses are the losses
  their names say (checked against the formulas written out here).
- ``import ranksim`` and every public name load with the pipeline's packages made unimportable
  (TensorBoard, pandas, NLTK and the rest of the ``train`` extra): a user who installs only the
  library has torch, numpy and scipy.
- The README's example is cut out of README.md and run from a folder outside the clone, with the
  same packages blocked, so that it cannot rot.
- ``pip install -e`` of a copy of the clone into a fresh virtual environment, offline, and the
  README's example run there.
"""

import inspect
import math
import os
import re
import shutil
import site
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest
import torch

import ranksim

REPO = Path(__file__).resolve().parents[1]

# The names that users import; issue 21 moves modules, these must stay. Removing one is a
# breaking change: change this list only with a note in the README.
STABLE_NAMES = (
    "batchwise_ranking_regularizer",
    "prepare_weights",
    "FDS",
    "weighted_mse_loss", "weighted_l1_loss", "weighted_huber_loss", "weighted_focal_l1_loss",
    "weighted_focal_mse_loss", "get_loss",
    "BalancedMSELoss", "bmc_loss",
    "conr_loss",
    "shot_metrics", "shot_metrics_sts_b", "shot_regions", "shot_regions_sts_b",
)

# What only the training pipeline needs (pyproject's `train` extra), by import name.
PIPELINE_ONLY = ("tensorboard", "pandas", "nltk", "torchvision", "PIL", "yaml", "tqdm", "matplotlib")

# Prepended to a child interpreter's code: the PIPELINE_ONLY packages look as if they were not
# installed. A None in sys.modules makes `import x` raise ModuleNotFoundError and
# importlib.util.find_spec("x") return None, which is how torch probes optional packages.
BLOCKER = f"""
import sys
BLOCKED = {PIPELINE_ONLY!r}
for _name in BLOCKED:
    sys.modules[_name] = None
"""

README_SECTION = "## Use it in your own training loop"
REGION_LINE = re.compile(r"^\s*(all|many|medium|few): MAE (\d+\.\d+), GM (\d+\.\d+)$", re.MULTILINE)


def readme_example() -> str:
    """The first ```python block of the README's "Use it in your own training loop" section."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert text.count(README_SECTION + "\n") == 1, f"README.md needs exactly one '{README_SECTION}' section"
    section = text.split(README_SECTION + "\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^```python\n(.*?)^```$", section, re.DOTALL | re.MULTILINE)
    assert blocks, f"no ```python block in the README's '{README_SECTION}' section"
    return blocks[0]


def run_python(python: str, code: str, cwd: Path, env: dict | None = None, timeout: float = 300):
    return subprocess.run([python, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def env_without_repo(pythonpath: Path | None) -> dict:
    """The environment of a child that finds ``ranksim`` only through ``pythonpath`` (or its install)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    env["PYTHONNOUSERSITE"] = "1"
    # One thread: the toy net gains nothing from more, and on a shared 2-core machine spinning
    # OpenMP threads made the example ~4x slower.
    env["OMP_NUM_THREADS"] = "1"
    return env


def check_example_output(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, f"README example failed:\n{result.stdout}\n{result.stderr}"
    regions = {m.group(1): (float(m.group(2)), float(m.group(3))) for m in REGION_LINE.finditer(result.stdout)}
    assert set(regions) == {"all", "many", "medium", "few"}, result.stdout
    # Ages 0..99, predictions of a trained net: finite errors within the label range.
    assert all(0 <= mae < 100 and 0 <= gm < 100 for mae, gm in regions.values()), regions


# ------------------------------------------------------------------ the names


@pytest.mark.parametrize("name", STABLE_NAMES)
def test_stable_name_is_public_documented_and_ours(name):
    assert name in ranksim.__all__ and name in dir(ranksim)
    namespace = {}
    exec(f"from ranksim import {name}", namespace)
    obj = namespace[name]
    assert obj is getattr(ranksim, name)
    assert callable(obj) and obj.__module__.startswith("ranksim.")
    doc = inspect.getdoc(obj) or ""
    assert re.search(r"arXiv \d{4}\.\d{5}", doc), f"{name}'s docstring names no paper (arXiv id)"
    assert re.search(r"``\((B|N)[,)]", doc), f"{name}'s docstring gives no (B, ...) or (N, ...) shape"


def test_all_lists_only_resolvable_names():
    for name in ranksim.__all__:
        assert getattr(ranksim, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'batchwise_ranking_regulariser'"):
        ranksim.batchwise_ranking_regulariser  # noqa: B018 - a misspelling must not resolve


def test_pipeline_entry_points_import_from_the_top_but_stay_out_of_all():
    """``from ranksim import build_model, load_config`` (issue 24) gives the pipeline's own functions;
    they are not in ``__all__``, whose names must load without PyYAML."""
    namespace = {}
    exec("from ranksim import build_model, load_config", namespace)
    from ranksim.config import load_config
    from ranksim.models import build_model
    assert namespace["load_config"] is load_config and namespace["build_model"] is build_model
    assert {"build_model", "load_config"} <= set(dir(ranksim)) and not {"build_model", "load_config"} & set(ranksim.__all__)
    cfg = namespace["load_config"](REPO / "configs" / "quickstart" / "vanilla.yaml")
    assert isinstance(namespace["build_model"](cfg), torch.nn.Module)


def test_weighted_loss_names_are_the_losses_they_name():
    """Reference formulas of the DIR authors' weighted losses, one sample at a time."""
    gen = torch.Generator().manual_seed(0)
    pred, target = torch.randn(7, 1, generator=gen, dtype=torch.float64), torch.randn(7, generator=gen, dtype=torch.float64)
    w = torch.rand(7, generator=gen, dtype=torch.float64) + 0.5
    errors = [float(pred[i, 0] - target[i]) for i in range(7)]

    def reference(per_sample):
        return sum(float(w[i]) * per_sample(e) for i, e in enumerate(errors)) / 7

    def focal(e):  # the sigmoid factor with beta 0.2, gamma 1
        return 2 / (1 + math.exp(-0.2 * abs(e))) - 1

    expected = {
        "weighted_mse_loss": reference(lambda e: e * e),
        "weighted_l1_loss": reference(abs),
        "weighted_huber_loss": reference(lambda e: 0.5 * e * e if abs(e) < 1 else abs(e) - 0.5),
        "weighted_focal_l1_loss": reference(lambda e: abs(e) * focal(e)),
        "weighted_focal_mse_loss": reference(lambda e: e * e * focal(e)),
    }
    for name, value in expected.items():
        assert getattr(ranksim, name)(pred, target, w).item() == pytest.approx(value, rel=1e-12), name


# ------------------------------------------------------------------ light imports, the README's example


def test_public_api_imports_without_the_pipeline_packages():
    code = BLOCKER + f"""
try:
    import pandas
except ModuleNotFoundError:
    pass
else:
    raise SystemExit("the blocker let pandas through")
import ranksim
assert "torch" not in sys.modules, "import ranksim alone loaded torch"
for name in ranksim.__all__:
    getattr(ranksim, name)
ranksim.batchwise_ranking_regularizer
loaded = sorted(m for m, mod in sys.modules.items() if mod is not None and m.split(".")[0] in BLOCKED)
assert not loaded, loaded
print("ok", len(ranksim.__all__))
"""
    result = run_python(sys.executable, code, REPO, env_without_repo(REPO))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["ok", str(len(ranksim.__all__))]


def test_readme_example_runs_outside_the_clone_with_only_the_library_dependencies(tmp_path):
    example = tmp_path / "example.py"
    example.write_text(readme_example(), encoding="utf-8")
    code = BLOCKER + f"import runpy; runpy.run_path({str(example)!r}, run_name='__main__')"
    check_example_output(run_python(sys.executable, code, tmp_path, env_without_repo(REPO)))


# ------------------------------------------------------------------ installed


def fresh_venv_with_these_packages(root: Path) -> str:
    """A virtual environment whose own site-packages is empty and which sees this interpreter's
    packages (pip, setuptools, torch ...) through a .pth file: it installs offline, where
    ``--system-site-packages`` would expose the base interpreter's packages instead of this
    virtual environment's. Returns its python."""
    venv.EnvBuilder(with_pip=False).create(root)
    purelib = Path(sysconfig.get_path("purelib", vars={"base": str(root), "platbase": str(root)}))
    ours = [p for p in dict.fromkeys(site.getsitepackages() + [sysconfig.get_path("purelib")]) if Path(p).is_dir()]
    # Appended after the venv's own site-packages, so the editable install is found first.
    (purelib / "_parent_site_packages.pth").write_text("\n".join(ours) + "\n", encoding="utf-8")
    return str(root / ("Scripts/python.exe" if os.name == "nt" else "bin/python"))


def copy_of_the_clone(clone: Path) -> Path:
    """What the build reads, copied, so that building writes no egg-info or build/ into the repo."""
    clone.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, clone / name)
    shutil.copytree(REPO / "ranksim", clone / "ranksim", ignore=shutil.ignore_patterns("__pycache__"))
    return clone


def test_pip_install_editable_into_a_fresh_venv_and_run_the_readme_example(tmp_path):
    pytest.importorskip("setuptools", reason="the build backend; requirements.txt installs it")
    clone = copy_of_the_clone(tmp_path / "clone")

    python = fresh_venv_with_these_packages(tmp_path / "venv")
    env = env_without_repo(None)
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    install = subprocess.run([python, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps",
                              "--no-build-isolation", "-e", str(clone)],
                             cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, f"pip install -e failed:\n{install.stdout}\n{install.stderr}"

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = run_python(python, "import importlib.metadata as m, ranksim; "
                               "print(ranksim.__file__); print(m.version('ranksim'))", elsewhere, env)
    assert where.returncode == 0, where.stderr
    module_file, version = where.stdout.split()
    assert Path(module_file).resolve().is_relative_to(clone.resolve()), module_file
    assert version == ranksim.__version__

    (elsewhere / "example.py").write_text(readme_example(), encoding="utf-8")
    check_example_output(subprocess.run([python, "example.py"], cwd=elsewhere, env=env,
                                        capture_output=True, text=True, timeout=300))


def test_wheel_holds_the_whole_package_and_needs_only_torch_numpy_scipy(tmp_path):
    """What ``pip install git+<URL>`` builds: every file of ranksim/ (subpackages, the authors'
    reference numbers), and a dependency list whose pipeline packages are all in the extra."""
    pytest.importorskip("setuptools", reason="the build backend; requirements.txt installs it")
    clone = copy_of_the_clone(tmp_path / "clone")
    env = env_without_repo(None)
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-index", "--no-deps",
                            "--no-build-isolation", "-w", str(tmp_path / "wheels"), str(clone)],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, f"pip wheel failed:\n{build.stdout}\n{build.stderr}"
    (wheel,) = (tmp_path / "wheels").glob("ranksim-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        requires = [line.split(":", 1)[1].strip() for line in archive.read(metadata).decode().splitlines()
                    if line.startswith("Requires-Dist:")]
    package_files = {p.relative_to(REPO).as_posix() for p in (REPO / "ranksim").rglob("*")
                     if p.is_file() and "__pycache__" not in p.parts}
    assert {n for n in names if n.startswith("ranksim/")} == package_files

    def requirement_name(requirement):
        return re.split(r"[<>=!~;\[ ]", requirement, 1)[0].lower()

    always = {requirement_name(r) for r in requires if "extra ==" not in r}
    assert always == {"torch", "numpy", "scipy"}
    train_extra = {requirement_name(r) for r in requires if 'extra == "train"' in r}
    assert {"tensorboard", "pandas", "nltk", "torchvision"} <= train_extra
