"""End to end: train.py, evaluate.py, run folders, resume, and every user-error path.

Training runs call ``train.main`` in this process (importing torch once saves seconds per run);
one run and every error path go through real subprocesses, so that exit codes, messages and the
absence of tracebacks are what a user would see. The tiny synthetic dataset is generated once per
test session.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
import train as train_cli  # noqa: E402
from tiny import TINY  # noqa: E402
RUN_FILES = ["config.yaml", "env.json", "train.log", "metrics.jsonl", "results.json",
             "checkpoints/last.pt", "checkpoints/best.pt"]


def run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def train_args(out: Path, data_root: Path, config: str, *overrides: str) -> list[str]:
    return ["-c", str(REPO / "configs" / "quickstart" / f"{config}.yaml"), *TINY, f"data.root={data_root}",
            f"output_dir={out}", *overrides]


def train(tmp_path: Path, data_root: Path, config: str, *overrides: str, name: str = "run") -> tuple[int, Path]:
    """Train in this process; returns the exit status and the run folder."""
    out = tmp_path / name
    return train_cli.main(train_args(out, data_root, config, *overrides)), out


def test_train_cli_subprocess(tmp_path, data_root):
    """The real command line once: exit 0, the test table on the console, the run folder."""
    out = tmp_path / "cli"
    proc = run("train.py", *train_args(out, data_root, "vanilla", "schedule.epochs=1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "test metrics of the best checkpoint" in proc.stderr and "few" in proc.stderr
    assert (out / "results.json").is_file()


def assert_user_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    for fragment in fragments:
        assert fragment in proc.stderr, f"{fragment!r} not in:\n{proc.stderr}"


METHODS = {
    "vanilla": ("vanilla", []),
    "lds": ("sqinv_lds", []),
    "fds": ("fds", []),
    "fds_faithful": ("fds", ["method.faithful=true"]),
    "ranksim": ("ranksim", []),
}


@pytest.mark.parametrize("method", METHODS)
def test_train_end_to_end(tmp_path, data_root, method):
    config, overrides = METHODS[method]
    rc, out = train(tmp_path, data_root, config, *overrides)
    assert rc == 0
    for name in RUN_FILES:
        assert (out / name).is_file(), f"{name} missing from the run folder"
    assert list(out.glob("events.out.tfevents.*")), "no TensorBoard event file"
    results = json.loads((out / "results.json").read_text())
    assert set(results["metrics"]) == {"all", "many", "medium", "few"}
    assert set(results["metrics"]["all"]) == {"mse", "mae", "gm", "pearson", "spearman", "count", "bmse", "bmae"}
    assert results["metrics"]["all"]["count"] > 0
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[0])["epoch"] == 0
    env = json.loads((out / "env.json").read_text())
    assert {"commit", "dirty", "torch", "device"} <= set(env) and env["device"] == "cpu"
    if method.startswith("fds"):
        state = torch.load(out / "checkpoints" / "last.pt", weights_only=False)["model"]
        assert any(key.startswith("head.fds.") for key in state), "FDS buffers are not in the checkpoint"
    if method == "ranksim":
        assert json.loads(lines[0])["train"]["ranksim_loss"] > 0
    diagnostics = ("cos_mean", "cos_p05", "ranksim_reg", "rank_corr")  # in every run, not only RankSim's
    assert set(json.loads(lines[-1])["val_diagnostics"]) == set(diagnostics)
    assert set(results["diagnostics"]) == set(diagnostics)


def test_rrt_loads_stage1_encoder_and_trains_only_the_regressor(tmp_path, data_root):
    rc, stage1 = train(tmp_path, data_root, "vanilla", name="stage1")
    assert rc == 0
    rc, stage2 = train(tmp_path, data_root, "sqinv_lds", "method.rrt.enabled=true",
                       f"method.rrt.stage1={stage1}", name="stage2")
    assert rc == 0
    before = torch.load(stage1 / "checkpoints" / "best.pt", weights_only=False)["model"]
    after = torch.load(stage2 / "checkpoints" / "best.pt", weights_only=False)["model"]
    # Which stage 1 was loaded, for the reproduce scripts' staleness check (issue 18, item 6)
    loaded = json.loads((stage2 / "stage1.json").read_text())
    best = (stage1 / "checkpoints" / "best.pt").resolve()
    assert loaded == {"checkpoint": str(best), "sha256": hashlib.sha256(best.read_bytes()).hexdigest()}
    for key, value in before.items():
        if key.startswith("head.linear."):
            assert not torch.equal(value, after[key]), f"{key} was not re-trained"
        else:
            assert torch.equal(value, after[key]), f"{key} of the frozen encoder changed"


@pytest.mark.parametrize("mode", [
    # The paper-table mode: train-mode FDS pass in a seeded order, augmentation included.
    pytest.param(["method.faithful=true"], id="faithful"),
    pytest.param([], id="fixed", marks=pytest.mark.slow),
])
def test_resume_equals_uninterrupted(tmp_path, data_root, mode):
    """A run stopped after epoch 2 of 3 and resumed ends with the same weights and results.json.

    The loader uses two persistent workers, as the paper configs do (their pool starts at the
    resumed epoch, not at epoch 0). The stopped run is the same config with
    ``schedule.epochs=2`` (its milestone at 2 is not reached, so its first two epochs are the
    full run's); raising ``epochs`` in its config.yaml and resuming is what a user does after a
    kill. A second uninterrupted run checks that seeded CPU runs repeat exactly at all.
    """
    common = ["schedule.epochs=3", "schedule.milestones=[2]", "method.ranksim.enabled=true",
              "method.fds.enabled=true", "method.reweight=sqrt_inv", "method.lds.enabled=true",
              "data.num_workers=2", "data.persistent_workers=true", *mode]
    rc, full = train(tmp_path, data_root, "vanilla", *common, name="full")
    assert rc == 0
    rc, again = train(tmp_path, data_root, "vanilla", *common, name="again")
    assert rc == 0
    rc, cut = train(tmp_path, data_root, "vanilla", *common, "schedule.epochs=2", name="cut")
    assert rc == 0
    assert torch.load(cut / "checkpoints" / "last.pt", weights_only=False)["state"]["epoch"] == 2
    (cut / "config.yaml").write_text((cut / "config.yaml").read_text().replace("epochs: 2", "epochs: 3"))
    (cut / "results.json").unlink()
    assert train_cli.main(["--resume", str(cut)]) == 0
    weights = {name: torch.load(run / "checkpoints" / "last.pt", weights_only=False)["model"]
               for name, run in (("full", full), ("again", again), ("resumed", cut))}
    for key, value in weights["full"].items():
        assert torch.equal(weights["again"][key], value), f"two seeded runs differ in {key}"
        assert torch.equal(weights["resumed"][key], value), f"the resumed run differs in {key}"
    full_results = json.loads((full / "results.json").read_text())
    resumed = json.loads((cut / "results.json").read_text())
    assert resumed["best_epoch"] == full_results["best_epoch"]
    assert resumed["metrics"] == full_results["metrics"]


def test_rrt_stage2_with_fds_keeps_stage1_statistics_until_their_epoch(tmp_path, data_root):
    """SPEC 8: stage 2 starts from stage 1's FDS buffers and their stored epoch; statistics of
    earlier epochs are ignored (the stale-epoch guard), so a stage-2 epoch 0 leaves them alone
    when stage 1's best epoch was later."""
    rc, stage1 = train(tmp_path, data_root, "fds", "schedule.epochs=1", name="stage1")
    assert rc == 0
    best_path = stage1 / "checkpoints" / "best.pt"
    best = torch.load(best_path, weights_only=False)
    best["model"]["head.fds.stored_epoch"].fill_(5)  # as if stage 1's best epoch had been 5
    # Stage 2's frozen encoder would recompute stage 1's own statistics: shift them, so that any
    # update shows.
    best["model"]["head.fds.running_mean"] += 1.0
    torch.save(best, best_path)
    rc, stage2 = train(tmp_path, data_root, "fds", "schedule.epochs=1", "method.reweight=sqrt_inv",
                       "method.rrt.enabled=true", f"method.rrt.stage1={stage1}", name="stage2")
    assert rc == 0
    after = torch.load(stage2 / "checkpoints" / "last.pt", weights_only=False)["model"]
    for key in ("running_mean", "running_var", "num_samples_tracked", "stored_epoch"):
        assert torch.equal(after[f"head.fds.{key}"], best["model"][f"head.fds.{key}"]), \
            f"stage 2 epoch 0 changed the stage-1 FDS {key}"


def test_evaluate_run_folder_and_checkpoint(tmp_path, data_root):
    rc, out = train(tmp_path, data_root, "vanilla")
    assert rc == 0
    proc = run("evaluate.py", str(out), "--split", "test")
    assert proc.returncode == 0, proc.stderr
    evaluated = json.loads((out / "eval_test.json").read_text())
    assert evaluated["metrics"] == json.loads((out / "results.json").read_text())["metrics"]
    assert "medium" in proc.stdout and "mae" in proc.stdout
    assert "rank_corr" in proc.stdout and evaluated["diagnostics"] == json.loads((out / "results.json").read_text())["diagnostics"]
    proc = run("evaluate.py", str(out / "checkpoints" / "best.pt"), "--split", "val")
    assert proc.returncode == 0, proc.stderr
    assert (out / "eval_val.json").is_file()


# ---------------------------------------------------------------------------------------------
# Bad input: exit status 2, one message naming the problem and the fix, no traceback


def test_missing_config_file():
    assert_user_error(run("train.py", "-c", "configs/nope.yaml"), "config file not found", "nope.yaml")


def test_unknown_key_suggests_the_right_one():
    proc = run("train.py", "-c", "configs/quickstart/vanilla.yaml", "method.ranksm.gamma=3")
    assert_user_error(proc, "unknown key 'method.ranksm'", "did you mean 'method.ranksim'", "command line")


def test_unknown_key_in_a_file_names_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"_base_: {REPO}/configs/quickstart/base.yaml\noptim:\n  btch_size: 4\n")
    assert_user_error(run("train.py", "-c", str(bad)), "bad.yaml", "optim.btch_size", "optim.batch_size")


def test_wrong_type_and_bad_value():
    assert_user_error(run("train.py", "-c", "configs/quickstart/vanilla.yaml", "optim.lr=fast"),
                      "'optim.lr' must be of type float")
    assert_user_error(run("train.py", "-c", "configs/quickstart/vanilla.yaml", "method.reweight=sqrt"),
                      "method.reweight", "sqrt_inv")
    assert_user_error(run("train.py", "-c", "configs/quickstart/vanilla.yaml", "method.lds.enabled=true"),
                      "method.reweight")
    for value in ("0", "-1"):
        assert_user_error(run("train.py", "-c", "configs/quickstart/ranksim.yaml",
                              f"method.ranksim.interpolation_lambda={value}"),
                          "method.ranksim.interpolation_lambda", "positive")


def assert_short(proc: subprocess.CompletedProcess, most: int = 3) -> None:
    """At most a few lines on the console (what the user sees), the error last."""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) <= most and "ERROR" in lines[-1], proc.stderr


def test_binary_config_file(tmp_path):
    binary = tmp_path / "some.bin"
    binary.write_bytes(bytes(range(256)) * 8)
    proc = run("train.py", "-c", str(binary))
    assert_user_error(proc, "some.bin is not a text file")
    assert_short(proc, most=1)


def test_fds_value_that_cannot_work_stops_before_anything_is_built(tmp_path):
    proc = run("train.py", "-c", "configs/quickstart/fds.yaml", "method.fds.bucket_num=0", f"output_dir={tmp_path / 'out'}")
    assert_user_error(proc, "'method.fds.bucket_num' 0", "leave no bucket")
    assert_short(proc, most=1)
    assert not (tmp_path / "out").exists()


def test_age_outside_the_dataset_range_names_the_row_and_leaves_no_folder(tmp_path, data_root):
    import shutil

    root = tmp_path / "negative"
    shutil.copytree(data_root, root)
    lines = (root / "synthetic.csv").read_text().splitlines()
    row = next(i for i, line in enumerate(lines) if line.endswith(",train"))
    lines[row] = "-5," + lines[row].split(",", 1)[1]
    (root / "synthetic.csv").write_text("\n".join(lines) + "\n")
    proc = run("train.py", *train_args(tmp_path / "out", root, "vanilla"))
    assert_user_error(proc, f"synthetic.csv, line {row + 1}: age -5 is outside 0..59")
    assert_short(proc)
    assert not (tmp_path / "out").exists(), "a run that failed before training left its folder"


def test_missing_data_folder(tmp_path):
    proc = run("train.py", "-c", "configs/quickstart/vanilla.yaml", "data.dataset=agedb",
               f"data.root={tmp_path / 'absent'}", f"output_dir={tmp_path / 'out'}")
    assert_user_error(proc, "does not exist", "python -m ranksim.data.prepare agedb")
    assert not (tmp_path / "out").exists(), "a run that failed before training left its folder"


def test_failed_start_leaves_no_timestamped_folder(tmp_path, monkeypatch):
    """The default runs/<name>/<timestamp> is made only once the data and model are built."""
    monkeypatch.chdir(tmp_path)
    rc = train_cli.main(["-c", str(REPO / "configs/agedb/vanilla.yaml"), f"data.root={tmp_path / 'absent'}",
                         "device=cpu"])
    assert rc == 2
    assert not (tmp_path / "runs").exists(), sorted(str(p) for p in (tmp_path / "runs").rglob("*"))


def test_failed_start_does_not_block_its_own_folder(tmp_path, data_root):
    """A folder without checkpoints/last.pt or results.json (a start that failed before its first
    epoch) takes a new run; its stale metrics lines are dropped."""
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / "config.yaml").write_text("left by a failed start\n")
    (out / "env.json").write_text("{}")
    (out / "metrics.jsonl").write_text('{"stale": true}\n')
    assert train_cli.main(train_args(out, data_root, "vanilla", "schedule.epochs=1")) == 0
    assert (out / "results.json").is_file()
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1
    (out / "checkpoints" / "last.pt").unlink()
    assert_user_error(run("train.py", *train_args(out, data_root, "vanilla")), "already holds a run")


def test_checkpoint_that_does_not_match_the_config(tmp_path, data_root):
    rc, out = train(tmp_path, data_root, "vanilla")
    assert rc == 0
    checkpoint = torch.load(out / "checkpoints" / "best.pt", weights_only=False)
    checkpoint["config"]["model"]["width"] = 8
    torch.save(checkpoint, tmp_path / "mismatch.pt")
    assert_user_error(run("evaluate.py", str(tmp_path / "mismatch.pt")), "does not match the config")


def test_exploding_loss_stops_and_keeps_last_good_checkpoint(tmp_path, data_root):
    """A resumed run whose loss passes logging.max_loss stops at once; last.pt stays as it was."""
    rc, out = train(tmp_path, data_root, "vanilla", "schedule.epochs=1", name="good")
    assert rc == 0
    before = (out / "checkpoints" / "last.pt").read_bytes()
    config = (out / "config.yaml").read_text().replace("epochs: 1", "epochs: 2").replace("max_loss: 1000000.0", "max_loss: 1.0e-09")
    (out / "config.yaml").write_text(config)
    proc = run("train.py", "--resume", str(out))
    assert_user_error(proc, "at epoch 1, step 0", "checkpoints/last.pt keeps the run as it was after epoch 0")
    assert (out / "checkpoints" / "last.pt").read_bytes() == before


def test_nan_loss_names_epoch_and_step(tmp_path, data_root):
    """Diverged in the first epoch: the message says that no checkpoint exists, not that last.pt keeps one."""
    proc = run("train.py", *train_args(tmp_path / "nan", data_root, "vanilla", "optim.lr=1e30"))
    assert_user_error(proc, "at epoch 0, step", "Lower optim.lr", "no checkpoint was written")
    assert "last.pt keeps" not in proc.stderr
    assert not (tmp_path / "nan" / "checkpoints" / "last.pt").exists()


def test_existing_run_folder_is_not_overwritten(tmp_path, data_root):
    rc, out = train(tmp_path, data_root, "vanilla", "schedule.epochs=1")
    assert rc == 0
    proc = run("train.py", *train_args(out, data_root, "vanilla", "schedule.epochs=1"))
    assert_user_error(proc, "already holds a run", "--resume")


def test_help_explains_options():
    proc = run("train.py", "--help")
    assert proc.returncode == 0 and "--resume" in proc.stdout and "key=value" in proc.stdout
    proc = run("evaluate.py", "--help")
    assert proc.returncode == 0 and "--split" in proc.stdout


def test_no_input_prompts_anywhere():
    for path in list(REPO.glob("*.py")) + list((REPO / "ranksim").rglob("*.py")) + list((REPO / "scripts").rglob("*.py")):
        assert "input(" not in path.read_text().replace("_input(", ""), f"{path} calls input()"


def test_iteration_validation_patience_and_plateau_decay(tmp_path, data_root):
    """The STS-B protocol shape: validate every N iterations, decay the LR on no improvement, stop on patience."""
    rc, out = train(tmp_path, data_root, "vanilla", "schedule.epochs=20", "schedule.val_every_iters=2",
                    "schedule.patience=2", "schedule.plateau_lr_factor=0.5", "optim.lr=1e-6",
                    "schedule.milestones=[]", "schedule.max_validations=12")
    assert rc == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2 * (i + 1) for i in range(len(records))]
    # A record's lr is the one trained with up to that validation; the plateau scheduler then
    # halves it when that validation was not a new best.
    bad = 0
    for before, after in zip(records, records[1:]):
        expected = before["lr"] * (1.0 if before["best"] else 0.5)
        assert after["lr"] == pytest.approx(expected), "LR not multiplied by plateau_lr_factor"
    for record in records:
        bad = 0 if record["best"] else bad + 1
    assert bad == 2 or len(records) == 12, "stopped neither by patience nor by max_validations"


def test_tensorboard_holds_loss_terms_metrics_and_figures(tmp_path, data_root):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from tensorboard.plugins.hparams import plugin_data_pb2

    rc, out = train(tmp_path, data_root, "ranksim", "logging.log_every_iters=1",
                    "logging.hparams=[method.ranksim.gamma,optim.batch_size,seed]")
    assert rc == 0
    tags = {"scalars": set(), "images": set()}
    steps, hparams = {}, set()
    for path in out.glob("events.out.tfevents.*"):
        acc = EventAccumulator(str(path), size_guidance={"images": 0, "scalars": 0})
        acc.Reload()
        for kind in tags:
            tags[kind] |= set(acc.Tags()[kind])
        for tag in acc.Tags()["scalars"]:
            steps[tag] = [event.step for event in acc.Scalars(tag)]
        try:
            contents = acc.PluginTagToContent("hparams").values()
        except KeyError:  # the hparams are in a file of their own
            contents = []
        for content in contents:
            hparams |= set(plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams)
    # One x-axis: the per-epoch training means sit on the global steps of the validations.
    assert steps["train_epoch/loss"] == steps["val_all/mae"], steps
    assert len(steps["train_epoch/loss"]) == 2 and steps["train_epoch/loss"][-1] == max(steps["train/loss"]), steps
    # The swept keys replace the short names of the same values; the others keep theirs.
    assert {"method.ranksim.gamma", "optim.batch_size", "seed", "lr", "ranksim"} <= hparams
    assert not {"ranksim_gamma", "batch_size"} & hparams, hparams
    assert {"train/loss", "train/task_loss", "train/ranksim_loss", "train/lr",
            "val_all/mae", "val_few/mae", "val_features/ranksim_reg", "val_features/rank_corr",
            "val_features/cos_mean", "val_features/cos_p05"} <= tags["scalars"]
    assert {"data/train_label_histogram", "val/per_label_error", "test/per_label_error"} <= tags["images"]


def test_corrupt_image_stops_naming_the_file_or_is_skipped(tmp_path, data_root):
    import shutil

    root = tmp_path / "broken"
    shutil.copytree(data_root, root)
    shutil.rmtree(root / "cache")  # read the JPEGs themselves
    victim = (root / "synthetic.csv").read_text().splitlines()[1].split(",")[1]
    (root / victim).write_bytes(b"not a jpeg")
    proc = run("train.py", *train_args(tmp_path / "stop", root, "vanilla", "schedule.epochs=1"))
    assert_user_error(proc, Path(victim).name)
    rc, out = train(tmp_path, root, "vanilla", "schedule.epochs=1", "data.skip_bad_images=true", name="skip")
    assert rc == 0
    assert "skipped unreadable image" in (out / "train.log").read_text()


def test_full_disk_at_a_checkpoint_is_one_line_and_leaves_no_temporary_file(tmp_path, data_root):
    """Under a file-size limit (ulimit -f) that best.pt (the model) fits in and last.pt (model and
    Adam's two moments, about 3x) does not: one line saying so and where, no last.pt.tmp.
    That an earlier last.pt is kept is tests/test_checkpoints.py's full-disk test."""
    import io
    import resource

    from ranksim.config import load_config
    from ranksim.models import build_model

    args = train_args(tmp_path / "out", data_root, "vanilla", "schedule.epochs=1")
    model = io.BytesIO()
    torch.save(build_model(load_config(args[1], args[2:])).state_dict(), model)
    limit = 2 * len(model.getvalue()) + 20_000

    def file_size_limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    proc = subprocess.run([sys.executable, "train.py", *args], cwd=REPO, capture_output=True, text=True, timeout=300,
                          preexec_fn=file_size_limit)
    last = tmp_path / "out" / "checkpoints" / "last.pt"
    assert_user_error(proc, f"cannot write {last}: the file-size limit (ulimit -f) was reached",
                      "no last.pt was written", "run the same command again")
    assert (last.parent / "best.pt").is_file()
    assert not list((tmp_path / "out").rglob("*.tmp")), sorted((tmp_path / "out").rglob("*.tmp"))
