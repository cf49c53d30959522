"""A stand-in for ``train.py`` in the tests of the grid runner: the same command line and run-folder
contract, without torch, in a fraction of a second.

- ``-c CONFIG key=value ...``: resolves the config with ranksim.config, refuses a folder that holds
  ``checkpoints/last.pt`` or ``results.json`` (status 2), writes ``config.yaml``,
  ``checkpoints/last.pt`` (an empty marker) and ``results.json``.
- ``--resume RUN_DIR``: needs ``checkpoints/last.pt``, reads the run's ``config.yaml``, writes
  ``results.json``.
- The test MAE of every region is ``method.ranksim.gamma + seed / 10`` and the GM ``optim.lr * 1000``,
  so that a test can work out the collected means by hand.
- A run whose MAE exceeds ``logging.max_loss`` "diverges", as train.py's does: an ERROR line in
  ``train.log``, status 2. An RRT run whose stage-1 folder has no ``results.json`` fails the same way.
- A new run writes ``checkpoints/best.pt`` with bytes of its own; a new RRT run writes
  ``stage1.json`` with the SHA-256 of its stage 1's ``best.pt``, as train.py does.
- A new run writes ``identity.json`` (trained here, the current results version, the data's
  fingerprint) with ranksim.engine.identity, as train.py does.
- Every call appends its arguments as one JSON line to the file named by ``$FAKE_TRAIN_LOG``.
"""

import hashlib
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ranksim.config import dump, load_config  # noqa: E402
from ranksim.engine.identity import TRAINED, data_fingerprint, write_identity  # noqa: E402


def fail(run_dir: Path, message: str) -> int:
    with open(run_dir / "train.log", "a") as f:
        f.write(f"12:00:00 ERROR {message}\n")
    return 2


def main(argv: list[str]) -> int:
    with open(os.environ["FAKE_TRAIN_LOG"], "a") as f:
        f.write(json.dumps(argv) + "\n")
    if argv[0] == "--resume":
        run_dir = Path(argv[1])
        if not (run_dir / "checkpoints" / "last.pt").is_file():
            return 2
        cfg = load_config(run_dir / "config.yaml")
    else:
        cfg = load_config(argv[1], argv[2:])
        run_dir = Path(cfg.output_dir)
        if (run_dir / "checkpoints" / "last.pt").exists() or (run_dir / "results.json").exists():
            return 2
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        dump(cfg, run_dir / "config.yaml")
        write_identity(run_dir, TRAINED, data_fingerprint(cfg))
        (run_dir / "checkpoints" / "last.pt").write_bytes(b"")
        (run_dir / "checkpoints" / "best.pt").write_bytes(os.urandom(16))
        stage1_best = Path(cfg.method.rrt.stage1) / "checkpoints" / "best.pt"
        if cfg.method.rrt.enabled and stage1_best.is_file():
            (run_dir / "stage1.json").write_text(json.dumps({
                "checkpoint": str(stage1_best.resolve()),
                "sha256": hashlib.sha256(stage1_best.read_bytes()).hexdigest()}))
    mae = cfg.method.ranksim.gamma + cfg.seed / 10
    if mae > cfg.logging.max_loss:
        return fail(run_dir, f"the loss is {mae:.4g} at epoch 0, step 0; training stopped")
    if cfg.method.rrt.enabled and not (Path(cfg.method.rrt.stage1) / "results.json").is_file():
        return fail(run_dir, f"stage-1 run {cfg.method.rrt.stage1} has no results")
    region = {"mse": mae * mae, "mae": mae, "gm": cfg.optim.lr * 1000, "pearson": 0.5, "spearman": 0.5, "count": 10}
    metrics = {r: dict(region) for r in ("all", "many", "medium", "few")}
    (run_dir / "results.json").write_text(json.dumps({"name": cfg.name, "split": "test", "metrics": metrics}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
