"""Run folders: creation, environment record, logging, atomic checkpoints, metrics lines.

A run folder is self-contained (STYLE rule 3)::

    runs/<name>/<timestamp>/
        config.yaml          resolved config
        env.json             git commit, dirty flag, versions, device
        train.log            the console log
        metrics.jsonl        one line per validation (per epoch unless schedule.val_every_iters)
        events.out.tfevents.*  TensorBoard
        checkpoints/last.pt  everything needed to resume exactly
        checkpoints/best.pt  the model of the best validation
        results.json         test metrics of best.pt per shot region
        stage1.json          RRT stage 2 only: the stage-1 checkpoint it loaded, and its SHA-256
        identity.json        results version, provenance (trained here / converted) and the data's
                             fingerprint: what makes two runs the same (ranksim.engine.identity)
"""

from __future__ import annotations

import errno
import json
import logging
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ranksim.config import Config, dump
from ranksim.errors import UserError

if TYPE_CHECKING:  # torch is imported where it is used, so that config errors report fast
    import torch

logger = logging.getLogger("ranksim")
REPO_ROOT = Path(__file__).resolve().parents[2]


def holds_run(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a run worth keeping: a resumable ``checkpoints/last.pt`` or a
    finished ``results.json``. A start that failed before its first epoch leaves neither, and
    does not block its own folder."""
    return (run_dir / "checkpoints" / "last.pt").exists() or (run_dir / "results.json").exists()


def choose_run_dir(cfg: Config) -> Path:
    """``cfg.output_dir`` or ``runs/<name>/<timestamp>``, refused if it holds a run; creates nothing.

    Called before the data are read, so that a refusal is reported at once; the folder itself is
    made by :func:`create_run_dir` once the data and model are built, so that a run that fails
    before it trains (a missing data folder, say) leaves no empty folder behind.
    """
    if cfg.output_dir:
        run_dir = Path(cfg.output_dir)
    else:
        run_dir = _free_name(Path("runs") / cfg.name / time.strftime("%Y%m%d-%H%M%S"))
    if holds_run(run_dir):
        raise UserError(f"{run_dir} already holds a run; continue it with 'python train.py --resume {run_dir}' "
                        "or choose another output_dir=")
    return run_dir


def _free_name(run_dir: Path) -> Path:
    suffix = 1
    while run_dir.exists():  # two runs started in the same second
        run_dir = run_dir.with_name(f"{run_dir.name.split('.')[0]}.{suffix}")
        suffix += 1
    return run_dir


def create_run_dir(run_dir: Path, cfg: Config) -> Path:
    """Make the folder chosen by :func:`choose_run_dir` (with ``checkpoints/``) and return it.

    A timestamped folder that another run took meanwhile is replaced by the next free name. An
    explicit ``output_dir`` left by a failed start is reused; its stale ``metrics.jsonl`` is
    removed so that the new run's lines are not appended to it.
    """
    if not cfg.output_dir:
        while True:
            try:
                run_dir.mkdir(parents=True)
                break
            except FileExistsError:
                run_dir = _free_name(run_dir)
    elif holds_run(run_dir):
        raise UserError(f"{run_dir} already holds a run; continue it with 'python train.py --resume {run_dir}' "
                        "or choose another output_dir=")
    elif (run_dir / "metrics.jsonl").exists():
        logger.warning("%s holds the metrics of a run that failed before its first checkpoint; starting over",
                       run_dir)
        (run_dir / "metrics.jsonl").unlink()
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    return run_dir


def git_state() -> dict:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
    try:
        return {"commit": git("rev-parse", "HEAD") or None, "dirty": bool(git("status", "--porcelain"))}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def environment(device: torch.device) -> dict:
    import numpy
    import torch
    import torchvision
    env = {**git_state(), "python": sys.version.split()[0], "torch": torch.__version__,
           "torchvision": torchvision.__version__, "numpy": numpy.__version__,
           "platform": platform.platform(), "device": str(device), "threads": torch.get_num_threads(),
           "command": " ".join(sys.argv), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
    return env


def write_run_files(run_dir: Path, cfg: Config, device: torch.device) -> None:
    dump(cfg, run_dir / "config.yaml")
    (run_dir / "env.json").write_text(json.dumps(environment(device), indent=2))


def setup_logging(run_dir: Path | None = None, level: int = logging.INFO) -> None:
    """Console (and ``train.log`` in the run folder) for the ``ranksim`` loggers."""
    root = logging.getLogger("ranksim")
    root.setLevel(level)
    root.propagate = False
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(fmt)
    root.addHandler(console)
    if run_dir is not None:
        file_handler = logging.FileHandler(run_dir / "train.log")
        file_handler.setFormatter(fmt)
        root.addHandler(file_handler)


def last_error(run_dir: Path, since: int = 0) -> str | None:
    """The last ERROR line of a run's ``train.log`` (after its first ``since`` bytes), without its time stamp."""
    log = Path(run_dir) / "train.log"
    if not log.is_file():
        return None
    with open(log, "rb") as f:
        f.seek(since)
        text = f.read().decode(errors="replace")
    errors = [line for line in text.splitlines() if " ERROR " in line]
    return errors[-1].split(" ERROR ", 1)[1][:160] if errors else None


# Write errors that mean "no room", not a bug: a full disk, a quota, a file-size limit (ulimit -f).
_NO_ROOM = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up",
            errno.EFBIG: "the file-size limit (ulimit -f) was reached"}


class _WriteErrorRecorder:
    """A binary file for ``torch.save`` that keeps the ``OSError`` of a failed write: torch
    reports it only as a ``RuntimeError`` that has lost the cause."""

    def __init__(self, fh):
        self.fh, self.error = fh, None

    def write(self, data) -> int:
        try:
            return self.fh.write(data)
        except OSError as err:
            self.error = err
            raise

    def flush(self) -> None:
        self.fh.flush()


def save_atomic(obj: Any, path: Path, then: str = "make room and run the command again") -> None:
    """``torch.save`` to a temporary file, then rename: a crash never leaves half a checkpoint.

    A failed or interrupted write removes the temporary file, so ``path`` keeps its previous
    content. No room to write (full disk, quota, file-size limit) is a :class:`UserError` that says
    so, where, what is kept and ``then`` (what to do next).
    """
    import shutil

    import torch

    tmp = path.with_name(path.name + ".tmp")
    recorder = None
    try:
        with open(tmp, "wb") as fh:
            recorder = _WriteErrorRecorder(fh)
            torch.save(obj, recorder)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        cause = err if isinstance(err, OSError) else getattr(recorder, "error", None)
        if cause is None or cause.errno not in _NO_ROOM:
            raise
        free = shutil.disk_usage(path.parent).free / 2**20
        kept = f"{path.name} keeps the previous checkpoint" if path.is_file() else f"no {path.name} was written"
        raise UserError(f"cannot write {path}: {_NO_ROOM[cause.errno]} ({free:.0f} MiB free in {path.parent}); "
                        f"{kept}; {then}") from None
    os.replace(tmp, path)


TRUST_FLAG = "--trust-checkpoint"
TRUST_HELP = ("only for files you trust: read checkpoints with full unpickling, which runs any code stored in "
              "the file (without it only tensors and plain Python types are read, and a file needing more is refused)")
_UNSAFE_GLOBAL = re.compile(r"GLOBAL (\S+) was not an allowed global")


def read_checkpoint_file(path: Path, trust: bool = False) -> Any:
    """``torch.load`` of one file onto the CPU, safely unless ``trust``.

    By default ``weights_only=True``: tensors, containers and plain types only, so a crafted file
    cannot run code. A file that needs more is a ``UserError`` naming ``--trust-checkpoint``;
    ``trust=True`` (that flag) is the only path that unpickles fully.
    """
    import pickle

    import torch

    path = Path(path)
    if trust:
        logger.warning("loading %s with full unpickling (%s): only for files you trust", path, TRUST_FLAG)
        try:
            return torch.load(path, map_location="cpu", weights_only=False)  # the explicit opt-in path
        except Exception as err:
            first_line = (str(err).strip().splitlines() or [""])[0][:200]
            raise UserError(f"cannot read checkpoint {path} ({type(err).__name__}: {first_line}); "
                            "it is damaged or not a PyTorch file") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = _UNSAFE_GLOBAL.search(str(err))
        what = (f"holds objects beyond tensors and plain types ({found.group(1)})" if found else
                "holds pickle data beyond tensors and plain types (or is damaged)")
        raise UserError(f"checkpoint {path} {what}, so it was not loaded; if you trust the file, pass "
                        f"{TRUST_FLAG} (only for files you trust: loading it can run code stored in it)") from None
    except Exception as err:  # a truncated or foreign file: say which, not a pickle traceback
        raise UserError(f"cannot read checkpoint {path} ({type(err).__name__}); "
                        "it is not a PyTorch checkpoint or is damaged") from None


def checkpoint_file(path: Path | str) -> Path:
    """The file :func:`load_checkpoint` reads for ``path``: a run folder's ``checkpoints/best.pt``, or the file itself."""
    path = Path(path)
    if path.is_dir():
        return path / "checkpoints" / "best.pt" if (path / "checkpoints").is_dir() else path / "best.pt"
    return path


def load_checkpoint(path: Path, trust: bool = False) -> dict:
    """A checkpoint of this repository: a ``.pt`` file, or a run folder's ``checkpoints/best.pt``.

    Read with :func:`read_checkpoint_file` (``weights_only=True`` unless ``trust``).
    """
    path = checkpoint_file(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} not found; give a run folder (with checkpoints/) or a .pt file")
    checkpoint = read_checkpoint_file(path, trust)
    if not isinstance(checkpoint, dict) or "model" not in checkpoint:
        found = f"keys {', '.join(map(str, list(checkpoint)[:4]))}" if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise UserError(f"{path} is not a ranksim checkpoint (it holds {found}, no 'model'); the authors' released "
                        "checkpoints are converted first: python -m ranksim.convert authors FILE -c CONFIG --out RUN_DIR")
    return checkpoint


def load_state_strict(model: "torch.nn.Module", state: dict, source: Path | str) -> None:
    """Load weights strictly, turning a mismatch into one readable line."""
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        detail = " ".join(str(err).split("\n\t")[1:2])[:300] or str(err)[:300]
        raise UserError(f"checkpoint {source} does not match the config ({detail.strip()}); "
                        "use the config the checkpoint was trained with (its run folder's config.yaml)") from None


def append_jsonl(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
