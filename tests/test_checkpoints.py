"""Checkpoints are read with ``torch.load(weights_only=True)``; ``--trust-checkpoint`` opts in to more.

- Everything this repository writes into a checkpoint (model with FDS buffers, optimizer,
  scheduler, grad scaler, train state, config, and plain loss parameters such as Balanced MSE's
  noise scale) loads under ``weights_only=True`` and equals what full unpickling gives.
- A crafted pickle whose loading would create a marker file is refused by ``evaluate.py`` with exit
  2 and one line, and the marker never appears; loading it unsafely does create it (so the test can
  fail).
- Files that hold other objects are refused on every command that loads checkpoints
  (``evaluate.py``, ``train.py --resume``, RRT stage 1) unless ``--trust-checkpoint`` is given.
"""

from __future__ import annotations

import argparse
import builtins
import errno
import math
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ranksim.errors import UserError
from ranksim.engine.runs import load_checkpoint, read_checkpoint_file

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import evaluate as evaluate_cli  # noqa: E402
import train as train_cli  # noqa: E402
from tiny import TINY  # noqa: E402


class MarkerPayload:
    """Unpickling this object opens (creates) ``path`` for writing: a stand-in for arbitrary code."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return builtins.open, (self.path, "w")


def same(a, b) -> bool:
    """Deep equality of checkpoint contents (tensors by value, dtype and shape)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype
                and a.shape == b.shape and torch.equal(a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return type(a) is type(b) and a == b


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_root) -> Path:
    """One tiny run with everything a checkpoint can hold: FDS buffers, RankSim, LDS weights."""
    out = tmp_path_factory.mktemp("ckpt") / "run"
    rc = train_cli.main(["-c", str(REPO / "configs/quickstart/fds.yaml"), *TINY, f"data.root={data_root}",
                         f"output_dir={out}", "method.ranksim.enabled=true", "method.reweight=sqrt_inv",
                         "method.lds.enabled=true", "logging.tensorboard=false", "schedule.epochs=1",
                         "schedule.milestones=[]"])
    assert rc == 0
    return out


def test_every_kind_we_write_loads_weights_only(trained):
    for name in ("last.pt", "best.pt"):
        path = trained / "checkpoints" / name
        safe = torch.load(path, map_location="cpu", weights_only=True)
        full = torch.load(path, map_location="cpu", weights_only=False)
        assert same(safe, full), f"{name} reads differently with weights_only=True"
        assert same(load_checkpoint(path), full)
    last = torch.load(trained / "checkpoints" / "last.pt", weights_only=True)
    assert {"model", "optimizer", "scheduler", "scaler", "state", "config"} <= set(last)
    assert {f"head.fds.{b}" for b in ("stored_epoch", "running_mean", "running_var", "num_samples_tracked",
                                      "smoothed_mean_last_epoch")} <= set(last["model"])
    assert last["optimizer"]["state"], "Adam's moments are missing: the optimizer kind was not exercised"
    assert last["scheduler"]["last_epoch"] == 1 and last["state"]["epoch"] == 1
    assert last["config"]["method"]["fds"]["enabled"] is True


def test_other_kinds_load_weights_only(tmp_path):
    """What the tiny run cannot exercise: an active fp16 grad scaler, SGD momentum, a loss parameter."""
    model = torch.nn.Linear(3, 1)
    sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scaler = torch.amp.GradScaler("cpu", enabled=True, init_scale=1024.0)
    scaler.scale(model(torch.ones(2, 3)).sum()).backward()
    scaler.step(sgd)
    scaler.update()
    scheduler = torch.optim.lr_scheduler.MultiStepLR(sgd, [60, 80], 0.1)
    checkpoint = {"model": {**model.state_dict(), "loss.noise_sigma": torch.tensor(8.0)},
                  "loss": {"noise_sigma": torch.tensor([1.5], requires_grad=False)},
                  "optimizer": sgd.state_dict(), "scheduler": scheduler.state_dict(),
                  "scaler": scaler.state_dict(),
                  "state": {"epoch": 3, "best_metric": math.inf, "best_epoch": -1, "stopped_early": False},
                  "config": {"name": "x", "schedule": {"milestones": [60, 80]}, "expected": {}}, "epoch": None}
    assert checkpoint["scaler"]["scale"] == 1024.0 and checkpoint["optimizer"]["state"][0]["momentum_buffer"] is not None
    path = tmp_path / "kinds.pt"
    torch.save(checkpoint, path)
    assert same(read_checkpoint_file(path), checkpoint)
    fresh = torch.amp.GradScaler("cpu", enabled=True)
    fresh.load_state_dict(read_checkpoint_file(path)["scaler"])
    assert fresh.get_scale() == scaler.get_scale()


def test_malicious_pickle_is_refused_by_evaluate(tmp_path):
    marker = tmp_path / "marker"
    evil = tmp_path / "evil.pt"
    torch.save({"model": MarkerPayload(marker), "config": {}}, evil)
    proc = subprocess.run([sys.executable, "evaluate.py", str(evil)], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert not marker.exists(), "loading the checkpoint ran the code stored in it"
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "--trust-checkpoint" in lines[0] and "beyond tensors and plain types" in lines[0]
    assert "builtins.open" in lines[0] or "io.open" in lines[0]  # names what it refused
    # The control: the file really is malicious, so the test above could fail.
    torch.load(evil, weights_only=False)
    assert marker.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol 4")  # torch notes the plain pickle's protocol
def test_plain_pickle_payload_is_refused(tmp_path):
    """A file written by pickle.dump (not torch.save) with the same payload: refused, not run."""
    marker = tmp_path / "marker"
    path = tmp_path / "raw.pt"
    path.write_bytes(pickle.dumps({"model": MarkerPayload(marker)}, protocol=4))
    with pytest.raises(UserError, match="--trust-checkpoint"):
        load_checkpoint(path)
    assert not marker.exists()


def test_damaged_and_foreign_files_are_one_line_errors(tmp_path):
    good = tmp_path / "good.pt"
    torch.save({"model": {"w": torch.zeros(1000)}, "config": {}}, good)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[:2000])
    with pytest.raises(UserError, match="damaged"):
        load_checkpoint(cut)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"module.linear.weight": torch.zeros(1, 2)}, "epoch": 3}, foreign)
    with pytest.raises(UserError, match="ranksim.convert authors"):
        load_checkpoint(foreign)


def with_extra_object(src: Path, dst: Path) -> Path:
    """A copy of our checkpoint plus an ``argparse.Namespace``, as the authors' scripts save ``args``."""
    checkpoint = torch.load(src, weights_only=True)
    checkpoint["args"] = argparse.Namespace(lr=1e-3)
    torch.save(checkpoint, dst)
    return dst


def test_evaluate_refuses_then_trusts(trained, tmp_path, capsys):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text((trained / "config.yaml").read_text())
    with_extra_object(trained / "checkpoints" / "best.pt", run / "checkpoints" / "best.pt")
    assert evaluate_cli.main([str(run), "--split", "val"]) == 2
    err = capsys.readouterr().err
    assert "argparse.Namespace" in err and "--trust-checkpoint" in err
    assert not (run / "eval_val.json").exists()
    assert evaluate_cli.main([str(run), "--split", "val", "--trust-checkpoint"]) == 0
    assert (run / "eval_val.json").is_file()
    assert "full unpickling" in capsys.readouterr().err  # the opt-in is logged


def test_resume_refuses_then_trusts(trained, tmp_path, capsys):
    import shutil

    run = tmp_path / "resumed"
    shutil.copytree(trained, run)
    (run / "results.json").unlink()
    with_extra_object(trained / "checkpoints" / "last.pt", run / "checkpoints" / "last.pt")
    assert train_cli.main(["--resume", str(run)]) == 2
    assert "--trust-checkpoint" in capsys.readouterr().err
    assert train_cli.main(["--resume", str(run), "--trust-checkpoint"]) == 0  # finished: tests best.pt again
    assert (run / "results.json").is_file()


def test_rrt_stage1_refuses_then_trusts(trained, tmp_path):
    from ranksim.config import load_config
    from ranksim.engine.checkpoint import load_rrt_stage1
    from ranksim.models import build_model

    stage1 = with_extra_object(trained / "checkpoints" / "best.pt", tmp_path / "stage1.pt")
    cfg = load_config(trained / "config.yaml", ["method.rrt.enabled=true", f"method.rrt.stage1={stage1}"])
    model = build_model(cfg, "age")
    with pytest.raises(UserError, match="--trust-checkpoint"):
        load_rrt_stage1(model, cfg)
    load_rrt_stage1(model, cfg, trust_checkpoint=True)
    expected = torch.load(trained / "checkpoints" / "best.pt", weights_only=True)["model"]
    assert torch.equal(model.state_dict()["encoder.0.weight"], expected["encoder.0.weight"])


def test_train_help_documents_the_flag():
    proc = subprocess.run([sys.executable, "train.py", "--help"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert "--trust-checkpoint" in proc.stdout and "only for files you trust" in " ".join(proc.stdout.split())


def test_unsafe_loading_only_on_the_opt_in_path():
    """``weights_only=False`` appears once in the code that loads checkpoints: the --trust-checkpoint branch."""
    hits = []
    for path in [*(REPO / "ranksim").rglob("*.py"), REPO / "train.py", REPO / "evaluate.py",
                 *(REPO / "scripts").rglob("*")]:
        if path.is_file():
            for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                if "weights_only=False" in line:
                    hits.append((path.relative_to(REPO).as_posix(), number, line))
    assert len(hits) == 1, hits
    source = (REPO / "ranksim" / "engine" / "runs.py").read_text()
    branch = re.search(r"    if trust:\n(.*?)\n    try:", source, re.S)
    assert hits[0][0] == "ranksim/engine/runs.py" and branch and "weights_only=False" in branch.group(1)


@pytest.mark.parametrize("code, words", [(errno.ENOSPC, "the disk is full"),
                                         (errno.EFBIG, "the file-size limit (ulimit -f) was reached")])
def test_full_disk_keeps_the_previous_checkpoint_and_removes_the_temporary_file(tmp_path, monkeypatch, code, words):
    """ENOSPC or EFBIG after 64 KiB of a write: torch reports only a RuntimeError; save_atomic
    gives the cause in one line, removes last.pt.tmp, and the old last.pt is untouched."""
    from ranksim.engine import runs

    path = tmp_path / "checkpoints" / "last.pt"
    path.parent.mkdir()
    runs.save_atomic({"model": torch.zeros(10)}, path)
    before = path.read_bytes()

    class FullDisk:
        """The open checkpoint file, on a disk with 64 KiB left."""

        def __init__(self, fh):
            self.fh, self.left = fh, 1 << 16

        def write(self, data):
            if len(data) > self.left:
                raise OSError(code, "no room")
            self.left -= len(data)
            return self.fh.write(data)

        def flush(self):
            self.fh.flush()

    real_init = runs._WriteErrorRecorder.__init__
    monkeypatch.setattr(runs._WriteErrorRecorder, "__init__", lambda self, fh: real_init(self, FullDisk(fh)))
    with pytest.raises(UserError) as err:
        runs.save_atomic({"model": torch.zeros(100_000)}, path, then="resume it")
    assert f"cannot write {path}: {words}" in str(err.value) and f"in {path.parent})" in str(err.value)
    assert str(err.value).endswith("last.pt keeps the previous checkpoint; resume it")
    assert path.read_bytes() == before and sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]


def test_a_write_error_that_is_not_about_room_stays_an_error_with_its_cause(tmp_path, monkeypatch):
    from ranksim.engine import runs

    def broken(self, data):
        self.error = OSError(errno.EIO, "Input/output error")
        raise self.error

    monkeypatch.setattr(runs._WriteErrorRecorder, "write", broken)
    with pytest.raises(Exception) as err:
        runs.save_atomic({"model": torch.zeros(10)}, tmp_path / "x.pt")
    assert not isinstance(err.value, UserError) and not list(tmp_path.iterdir())
