"""What a run is, and that training keeps it provable (ranksim/engine/identity.py and its users).

- The synthetic-data generator never deletes a folder that is not its own.
- Each (seed, epoch) has its own training order, so the seeds of a row are independent.
- A resume after a kill drops the validations logged after the checkpoint, so each is logged once.
- Every run records its identity (results version, provenance, data fingerprint); a resume of a
  run of another results version is refused; TensorBoard shows only the loss terms in use.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ranksim.data.seeding import ShuffledShard
from ranksim.engine.identity import RESULTS_VERSION, data_fingerprint, read_identity

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import train as train_cli  # noqa: E402
from tiny import TINY  # noqa: E402

VANILLA = REPO / "configs" / "quickstart" / "vanilla.yaml"


def snapshot(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_folder_that_is_not_the_synthetic_set_is_refused_and_left_intact(tmp_path):
    """A real dataset given as data.root to a quick-start config: exit 2, one line, every file kept."""
    root = tmp_path / "agedb-dir"
    (root / "images").mkdir(parents=True)
    (root / "images" / "0001_45.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a face" * 10)
    (root / "agedb.csv").write_text("age,path,split\n45,images/0001_45.jpg,train\n")
    before = snapshot(root)
    proc = subprocess.run([sys.executable, str(REPO / "train.py"), "-c", str(VANILLA), *TINY,
                           f"data.root={root}", f"output_dir={tmp_path / 'run'}"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert f"data.root {root} holds files that are not the synthetic data set" in proc.stderr
    assert snapshot(root) == before
    assert not (tmp_path / "run").exists()


def test_the_synthetic_set_replaces_only_its_own_folder(tmp_path):
    from ranksim.config import SyntheticConfig
    from ranksim.data.age.synthetic import ensure_synthetic
    from ranksim.errors import UserError

    root = tmp_path / "synthetic"
    small = SyntheticConfig(num_samples=120, image_size=8)
    ensure_synthetic(root, small)
    ensure_synthetic(root, SyntheticConfig(num_samples=150, image_size=8))  # its own record: regenerated
    assert len((root / "synthetic.csv").read_text().splitlines()) == 151
    (tmp_path / "empty").mkdir()
    ensure_synthetic(tmp_path / "empty", small)  # an empty folder is filled
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="is a file"):
        ensure_synthetic(tmp_path / "file", small)
    assert (tmp_path / "file").read_text() == "x"


def test_each_seed_and_epoch_has_its_own_training_order():
    orders = {}
    for seed in range(3):
        for epoch in range(3):
            shard = ShuffledShard(100, seed, stream=0, pad=True)
            shard.set_epoch(epoch)
            orders[(seed, epoch)] = tuple(shard)
    assert len(set(orders.values())) == 9, "two (seed, epoch) pairs share a permutation"
    # DistributedSampler's seed + epoch would make these two equal
    assert orders[(0, 1)] != orders[(1, 0)]
    # Under DDP the padded shards are equal in length and cover every sample.
    shards = [ShuffledShard(101, 0, rank, 2, stream=0, pad=True) for rank in range(2)]
    assert [len(s) for s in shards] == [51, 51] and [len(list(s)) for s in shards] == [51, 51]
    assert set(list(shards[0]) + list(shards[1])) == set(range(101))
    assert list(ShuffledShard(100, 0, stream=0, pad=True)) == list(ShuffledShard(100, 0, stream=0, pad=True))


def test_the_trainer_orders_seed0_epoch1_apart_from_seed1_epoch0(data_root):
    from ranksim.config import load_config
    from ranksim.engine.loop import Trainer

    def order(seed: int, epoch: int) -> list[int]:
        cfg = load_config(VANILLA, [*TINY, f"data.root={data_root}", f"seed={seed}", "data.num_workers=0"])
        sampler = Trainer(cfg, None, torch.device("cpu")).train_sampler
        sampler.set_epoch(epoch)
        return [index for _, index in sampler]
    assert order(0, 1) != order(1, 0)
    assert sorted(order(0, 1)) == sorted(order(1, 0))


def test_a_resume_after_a_kill_logs_each_validation_once(tmp_path, data_root, monkeypatch):
    """Validations every 2 steps (7 steps an epoch); the run is killed just after its 5th validation
    (epoch 1), while last.pt holds 3. After the resume, metrics.jsonl has each validation once, with the values of
    an uninterrupted run."""
    from ranksim.engine.loop import Trainer

    args = ["-c", str(VANILLA), *TINY, f"data.root={data_root}", "schedule.val_every_iters=2",
            "data.num_workers=0", "logging.tensorboard=false"]
    assert train_cli.main([*args, f"output_dir={tmp_path / 'whole'}"]) == 0
    whole = [json.loads(line) for line in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]

    original, calls = Trainer.validation_step, []

    def killed_after_fifth(self, epoch, train_metrics):
        stop = original(self, epoch, train_metrics)
        calls.append(epoch)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return stop
    monkeypatch.setattr(Trainer, "validation_step", killed_after_fifth)
    run = tmp_path / "killed"
    assert train_cli.main([*args, f"output_dir={run}"]) == 130
    assert calls == [0, 0, 0, 1, 1] and len(whole) == 7
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 5
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["state"]["validations"] == 3
    monkeypatch.setattr(Trainer, "validation_step", original)
    assert train_cli.main(["--resume", str(run)]) == 0
    resumed = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in resumed] == [r["step"] for r in whole]
    assert len({r["step"] for r in resumed}) == len(resumed) == 7
    assert [r["val"]["all"]["mae"] for r in resumed] == pytest.approx([r["val"]["all"]["mae"] for r in whole])


def test_a_run_records_its_identity_and_tensorboard_shows_only_terms_in_use(tmp_path, data_root):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from ranksim.config import load_config

    run = tmp_path / "run"
    overrides = [*TINY, f"data.root={data_root}", "schedule.epochs=1", "schedule.milestones=[]",
                 "logging.log_every_iters=1", "data.num_workers=0"]
    assert train_cli.main(["-c", str(VANILLA), *overrides, f"output_dir={run}"]) == 0
    identity = read_identity(run)
    assert identity.results_version == RESULTS_VERSION and identity.provenance == {"kind": "trained"}
    assert identity.data == data_fingerprint(load_config(VANILLA, overrides)) and len(identity.data) == 16
    tags = EventAccumulator(str(run)).Reload().Tags()["scalars"]
    assert "train/loss" in tags and "train_epoch/task_loss" in tags
    assert not [t for t in tags if "ranksim_loss" in t or "conr_loss" in t], tags


def test_a_run_of_another_results_version_is_not_resumed(tmp_path, data_root):
    run = tmp_path / "run"
    assert train_cli.main(["-c", str(VANILLA), *TINY, f"data.root={data_root}", "schedule.epochs=1",
                           "schedule.milestones=[]", "logging.tensorboard=false", f"output_dir={run}"]) == 0
    (run / "results.json").unlink()
    record = json.loads((run / "identity.json").read_text())
    (run / "identity.json").write_text(json.dumps({**record, "results_version": RESULTS_VERSION - 1}))
    proc = subprocess.run([sys.executable, str(REPO / "train.py"), "--resume", str(run)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"this code is version {RESULTS_VERSION}" in proc.stderr
    assert (run / "checkpoints" / "last.pt").is_file()


def test_a_downloaded_split_file_is_checked_against_the_published_one(tmp_path):
    """IMDB-WIKI (hash unknown): rows per split against the published counts; AgeDB: SHA-256.
    A file that fails is moved aside as .rejected, with one line saying so."""
    import dataclasses

    from conftest import real_split_dir
    from ranksim.data.age.benchmarks import AGEDB, IMDB_WIKI
    from ranksim.data.age.prepare import check_published_split
    from ranksim.errors import UserError

    small = dataclasses.replace(IMDB_WIKI, published={"train": 2, "val": 1, "test": 1})
    split = tmp_path / "imdb_wiki.csv"
    split.write_text("age,path,split\n30,a.jpg,train\n31,b.jpg,train\n32,c.jpg,val\n33,d.jpg,test\n")
    check_published_split(split, small)
    assert split.is_file()
    with pytest.raises(UserError, match=r"rows per split \(train 2, val 1, test 1\) differ"):
        check_published_split(split, IMDB_WIKI)
    assert not split.exists() and (tmp_path / "imdb_wiki.csv.rejected").is_file()
    real = real_split_dir("agedb-dir")
    if real is not None:
        copy = tmp_path / "agedb.csv"
        copy.write_bytes((real / "agedb.csv").read_bytes())
        check_published_split(copy, AGEDB)
        copy.write_bytes((real / "agedb.csv").read_bytes().replace(b",train", b",val", 1))
        with pytest.raises(UserError, match="SHA-256"):
            check_published_split(copy, AGEDB)
