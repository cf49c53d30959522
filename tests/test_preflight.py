"""The reproduce scripts' --preflight (ranksim/tools/preflight.py, scripts/reproduce_table.py).

End to end on the tiny synthetic data (tests/tiny.py): a small table with an FDS row, an RRT row on
its stage-1 row's preflight checkpoint, and a row made to fail, whose RRT row is then not run.
"""

import json
import math
import shutil
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tiny import TINY, load_script  # noqa: E402

from ranksim.tools.preflight import RowPlan, check_data, project_row, row_schedule, row_seconds  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def table_folder(tmp_path: Path) -> Path:
    """vanilla, fds, vanilla_ranksim (made to fail: any loss counts as diverged), focal (a config
    that does not load), and an RRT row on vanilla and on vanilla_ranksim."""
    folder = tmp_path / "configs" / "t"
    folder.mkdir(parents=True)
    (folder / "base.yaml").write_text(f"_base_: {REPO / 'configs' / 'quickstart' / 'base.yaml'}\n")
    (folder / "vanilla.yaml").write_text("_base_: base.yaml\ntitle: VANILLA\n")
    (folder / "fds.yaml").write_text("_base_: base.yaml\ntitle: FDS\nmethod: {fds: {enabled: true}}\n")
    (folder / "vanilla_ranksim.yaml").write_text("_base_: base.yaml\ntitle: Vanilla + RankSim\n"
                                                 "method: {ranksim: {enabled: true}}\nlogging: {max_loss: 1.0e-9}\n")
    (folder / "focal.yaml").write_text("_base_: base.yaml\ntitle: Focal-R\nmethod: {losss: focal_l1}\n")  # a typo
    (folder / "rrt.yaml").write_text("_base_: base.yaml\ntitle: RRT\n"
                                     "method: {rrt: {enabled: true, stage1: runs/t/vanilla/seed0}}\n")
    (folder / "rrt_ranksim.yaml").write_text("_base_: base.yaml\ntitle: RRT + RankSim\nmethod: {ranksim: {enabled: true},"
                                             " rrt: {enabled: true, stage1: runs/t/vanilla_ranksim/seed0}}\n")
    return folder


def test_row_seconds_is_the_arithmetic_written_out_and_gpu_check_shares_it():
    """One FDS row: 100 train at 10/s + the statistics pass 100 at 50/s + 20 val at 50/s
    = 10 + 2 + 0.4 = 12.4 s per epoch, times 3 epochs, plus 30 test at 50/s: 37.2 + 0.6 = 37.8 s."""
    sizes = {"train": 100, "val": 20, "test": 30, "epochs": 3, "val_passes": 1}
    assert math.isclose(row_seconds(sizes, 10, 50, 1, 1), 37.8)
    p = project_row(sizes, {"train": 10, "eval": 50}, fds=True)
    assert math.isclose(p["seconds"], 37.8) and p["formula"] == "(100/10.0 + 100/50.0 + 20/50.0) × 3 + 30/50.0 = 38 s"
    assert load_script("gpu_check_report").row_seconds is row_seconds


def test_row_schedule_counts_validations_of_iteration_validated_rows():
    """STS-B: 5,249 train at batch 16 is 329 iterations an epoch, 329/400 validations an epoch;
    300 validations end the run after 300 / (329/400) = 364.7 epochs, before the 400 allowed."""
    from ranksim.config import load_config
    epochs, per_epoch = row_schedule(load_config(REPO / "configs" / "sts_b" / "vanilla.yaml"), 5249)
    assert math.isclose(per_epoch, 329 / 400) and math.isclose(epochs, 300 * 400 / 329)
    assert row_schedule(load_config(REPO / "configs" / "agedb" / "vanilla.yaml"), 12208) == (120.0, 1.0)


def test_data_check_names_missing_and_undecodable_images(tmp_path, data_root):
    """A copy of the synthetic data with one image removed and one overwritten with junk: one line
    each, saying what to run; the untouched copy passes."""
    from ranksim.config import load_config
    root = tmp_path / "synthetic"
    shutil.copytree(data_root, root)
    cfg = load_config(REPO / "configs" / "quickstart" / "vanilla.yaml", [*TINY, f"data.root={root}"])
    assert check_data([cfg]).problems == []
    table = (root / "synthetic.csv").read_text().splitlines()
    header = table[0].split(",")
    paths = [line.split(",")[header.index("path")] for line in table[1:]]
    (root / paths[0]).unlink()
    for path in paths[1:]:  # all the others undecodable, so that the sample surely holds one
        (root / path).write_bytes(b"not a jpeg")
    problems = check_data([cfg]).problems
    assert any("1 image(s) missing" in p and f"rm -r {root}" in p for p in problems), problems
    assert any("sampled images do not decode" in p for p in problems), problems


def test_plans_add_the_stage1_row_of_an_rrt_row(tmp_path):
    reproduce = load_script("reproduce_table")
    folder = table_folder(tmp_path)
    rows = reproduce.table_rows(folder)
    plans = reproduce.preflight_plans(folder, rows, ["rrt"], 0, [])
    assert [(p.name, p.stage1) for p in plans] == [("vanilla", None), ("rrt", "vanilla")]
    assert isinstance(plans[0], RowPlan)


def test_preflight_runs_every_row_reports_the_failed_one_and_writes_nothing_under_runs(tmp_path, data_root,
                                                                                        monkeypatch, capsys):
    """Six rows on tiny data: vanilla, fds and rrt pass (rrt on vanilla's preflight checkpoint),
    vanilla_ranksim fails in training and focal at its config, each with its error, rrt_ranksim
    is not run; status 1; JSON beside the
    scratch folder, which is removed; no runs/ folder."""
    monkeypatch.chdir(tmp_path)
    reproduce = load_script("reproduce_table")
    folder = table_folder(tmp_path)
    scratch = tmp_path / "pf" / "t-1"
    status = reproduce.main([str(folder), "--preflight", "--preflight-dir", str(scratch), "--preflight-iters", "3",
                             "--rows", "vanilla,fds,vanilla_ranksim,focal,rrt,rrt_ranksim", "--",
                             *TINY, f"data.root={data_root}"])
    out = capsys.readouterr().out
    assert status == 1
    assert not scratch.exists() and not (tmp_path / "runs").exists()
    report = json.loads((tmp_path / "pf" / "t-1.json").read_text())
    rows = report["rows"]
    assert report["complete"] and not (tmp_path / "pf" / "t-1.json.tmp").exists()
    assert [rows[r]["status"] for r in ("vanilla", "fds", "vanilla_ranksim", "focal", "rrt", "rrt_ranksim")] == \
        ["ok", "ok", "failed", "failed", "ok", "not run"]
    assert "TrainingDiverged" in rows["vanilla_ranksim"]["error"]
    assert "does not load" in rows["focal"]["error"] and "losss" in rows["focal"]["error"]
    assert rows["rrt"]["stage1_checkpoint"] == str((scratch / "vanilla" / "checkpoints" / "best.pt").resolve())
    assert rows["fds"]["fds"] and rows["fds"]["fds_pass_s"] > 0 and rows["vanilla"]["fds_pass_s"] is None
    assert rows["fds"]["fds_smoothed_batches"] == 3  # epoch 1's three iterations, on epoch 0's statistics (the
    # statistics pass of the quick-start config's fixed mode runs in eval mode, without smoothing)
    splits = pd.read_csv(data_root / "synthetic.csv")["split"].value_counts()
    for name in ("vanilla", "fds", "rrt"):
        r = rows[name]
        assert r["iterations"] == 6  # two epochs of 3
        # the projection is for the whole split, not the preflight's subsets
        assert [r["sizes"][s] for s in ("train", "val", "test")] == [splits[s] for s in ("train", "val", "test")]
        assert r["train_samples_per_s"] > 0 and r["eval_samples_per_s"] > 0 and r["loader_samples_per_s"] > 0
        assert math.isclose(r["projection"]["seconds"], row_seconds(
            {**r["sizes"], "epochs": 2}, min(r["train_samples_per_s"], r["loader_samples_per_s"]),
            r["eval_samples_per_s"], 1, int(r["fds"])))
    assert math.isclose(report["table_seconds"], sum(rows[r]["projection"]["seconds"] for r in ("vanilla", "fds", "rrt")))
    assert "| vanilla_ranksim | **FAILED**" in out and "table total, one seed" in out


def test_preflight_keeps_its_scratch_folder_and_refuses_an_existing_one(tmp_path, data_root, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    reproduce = load_script("reproduce_table")
    folder = table_folder(tmp_path)
    scratch = tmp_path / "pf" / "keep"
    args = [str(folder), "--preflight", "--keep", "--preflight-dir", str(scratch), "--preflight-iters", "3",
            "--rows", "vanilla", "--", *TINY, f"data.root={data_root}"]
    assert reproduce.main(args) == 0
    assert (scratch / "vanilla" / "checkpoints" / "best.pt").is_file()
    assert reproduce.main(args) == 2  # never reuses (or deletes) a folder it did not create
    assert "already exists" in capsys.readouterr().err
    assert (scratch / "vanilla").is_dir()
    assert reproduce.main([str(folder), "--keep"]) == 2


class SlowLoader:
    """Batches of 4 samples, the first ``burst`` at once (prefetched by the workers), then one
    every ``pause`` seconds."""

    def __init__(self, batches: int, burst: int, pause: float):
        self.batches, self.burst, self.pause = batches, burst, pause

    def __len__(self):
        return self.batches

    def __iter__(self):
        import time
        for i in range(self.batches):
            if i >= self.burst:
                time.sleep(self.pause)
            yield (None, [0] * 4, None)


def test_loader_rate_leaves_out_the_prefetched_burst():
    """2 workers: 6 batches read, the first 2 (the burst) left out, then 4 batches of 4 samples
    every 0.05 s: 16 samples / 0.2 s = 80 samples/s, where counting the burst would give more."""
    from ranksim.tools.preflight import _loader_rate
    rate = _loader_rate(SlowLoader(20, burst=2, pause=0.05), workers=2, iters=3)
    assert 60 < rate <= 80


def test_training_rate_leaves_out_warm_up_iterations():
    """_FewBatches marks the time after each batch is trained on: with 2 warm-up iterations of 0.1 s
    and 3 of 0.02 s, the rate is 3 × 4 samples / 0.06 s = 200 samples/s."""
    import time

    from ranksim.tools.preflight import WARMUP_ITERS, _FewBatches, _rate
    assert WARMUP_ITERS == 2
    few = _FewBatches(SlowLoader(10, burst=10, pause=0), limit=5, synchronize=lambda: None)
    assert len(few) == 5
    for step, _ in enumerate(few):
        time.sleep(0.1 if step < 2 else 0.02)
    marks = few.epochs[-1]
    assert len(marks) == 6 and len(few.samples) == 5
    assert 150 < _rate(marks, few.samples, 2) <= 200


def test_eval_rate_of_a_one_batch_split_is_timed_from_the_start(monkeypatch):
    """A validation split smaller than one batch (the synthetic data's 249 rows at batch 256) still
    gets a rate, so the row gets a projection: one batch of 4 samples that takes 0.1 s gives at most
    40 samples/s. Two batches keep the rule "after the first batch"."""
    import contextlib
    import time
    from types import SimpleNamespace

    import torch

    import ranksim.engine.build as build
    import ranksim.engine.inference as inference
    from ranksim.tools.preflight import _eval_rate

    def slow_model(inputs):
        time.sleep(0.1)

    model = type("SlowModel", (), {"eval": lambda self: None, "__call__": lambda self, x: slow_model(x)})()
    trainer = SimpleNamespace(model=model, cfg=None, device="cpu", data=None)
    monkeypatch.setattr(inference, "autocast", lambda cfg, device: contextlib.nullcontext())
    monkeypatch.setattr(inference, "to_device", lambda x, device: x)
    batch = (torch.zeros(4, 1), torch.zeros(4), None)
    monkeypatch.setattr(build, "make_loader", lambda cfg, dataset, data: [batch])
    one = _eval_rate(trainer, None, lambda: None)
    assert one is not None and 20 < one <= 40
    monkeypatch.setattr(build, "make_loader", lambda cfg, dataset, data: [batch, batch, batch])
    assert 30 < _eval_rate(trainer, None, lambda: None) <= 40
    monkeypatch.setattr(build, "make_loader", lambda cfg, dataset, data: [])
    assert _eval_rate(trainer, None, lambda: None) is None
