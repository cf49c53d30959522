"""Grids of runs (ranksim/tools/sweep.py, scripts/sweep.py, scripts/reproduce_table.py).

The runner is driven with tests/fake_train.py in place of train.py: it keeps train.py's command
line and run-folder contract, and its test MAE is ``method.ranksim.gamma + seed / 10``, so each
collected mean is worked out by hand below. One slow test runs the real train.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tiny import load_script

from ranksim.config import dump, load_config, to_dict
from ranksim.errors import UserError
from ranksim.engine.identity import RESULTS_VERSION, comparable, differences, is_operational, without_seed
from ranksim.tools.sweep import Point, grid_points, parse_grid, run_points, split_values, sweep

REPO = Path(__file__).resolve().parent.parent
FAKE = [sys.executable, str(REPO / "tests" / "fake_train.py")]
RANKSIM = REPO / "configs" / "quickstart" / "ranksim.yaml"


@pytest.fixture
def calls(tmp_path, monkeypatch):
    """The argument lists of every fake train.py call, read back after the calls."""
    log = tmp_path / "calls.jsonl"
    monkeypatch.setenv("FAKE_TRAIN_LOG", str(log))

    def read() -> list[list[str]]:
        return [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []
    return read


# ---------------------------------------------------------------------------------------------
# What counts as one config


def test_operational_keys_do_not_change_the_comparable_config(tmp_path):
    a = load_config(RANKSIM, ["seed=0", "output_dir=x", "device=cpu", "data.num_workers=0", "logging.progress=false"])
    b = load_config(RANKSIM, ["seed=3", "output_dir=y", "device=cuda", "data.num_workers=8", "data.root=/elsewhere",
                              "logging.hparams=[seed]", "model.compile=true", "title=Another title"])
    # The seed is part of what a run is; only the collector's rows leave it out.
    assert differences(comparable(a), comparable(b)) == ["seed: 0 -> 3"]
    assert without_seed(comparable(a)) == without_seed(comparable(b))
    c = load_config(RANKSIM, ["method.ranksim.gamma=10"])
    assert differences(comparable(a), comparable(c)) == ["method.ranksim.gamma: 100 -> 10"]
    assert not is_operational("method.ranksim.gamma") and is_operational("logging.progress")
    assert not is_operational("data.root_extra") and is_operational("data.root")


def test_a_stored_config_without_newer_keys_compares_equal_to_its_defaults():
    full = comparable(load_config(RANKSIM, ["optim.lr=1.0"]))
    stored = to_dict(load_config(RANKSIM))
    del stored["method"]["fds"]["clip_max"]  # a key added to the schema after the run
    stored["optim"]["lr"] = 1  # an int where the schema says float
    assert differences(comparable(stored), full) == []
    assert isinstance(comparable(stored)["optim.lr"], float)


def test_rrt_stage1_is_compared_by_the_stage1_run_config(tmp_path):
    """Seeds 0 and 1 of an RRT row load runs/t/vanilla/seed0 and .../seed1: one config."""
    vanilla = REPO / "configs" / "quickstart" / "vanilla.yaml"
    runs = tmp_path / "runs" / "t"
    for seed in (0, 1):
        (runs / "vanilla" / f"seed{seed}").mkdir(parents=True)
        dump(load_config(vanilla, [f"seed={seed}"]), runs / "vanilla" / f"seed{seed}" / "config.yaml")
    (runs / "lds" / "seed0").mkdir(parents=True)
    dump(load_config(vanilla, ["method.reweight=sqrt_inv", "method.lds.enabled=true"]),
         runs / "lds" / "seed0" / "config.yaml")

    def rrt(stage1: str, seed: int) -> dict:
        cfg = load_config(vanilla, ["method.rrt.enabled=true", f"method.rrt.stage1=runs/t/{stage1}", f"seed={seed}"])
        return comparable(cfg, runs / "rrt" / f"seed{seed}")
    assert without_seed(rrt("vanilla/seed0", 0)) == without_seed(rrt("vanilla/seed1", 1))
    assert rrt("vanilla/seed0", 0)["method.rrt.stage1"].startswith("VANILLA [")
    assert rrt("vanilla/seed0", 0) != rrt("lds/seed0", 0)
    assert rrt("missing/seed0", 0)["method.rrt.stage1"] == "runs/t/missing/seed0"  # not found: the path itself


# ---------------------------------------------------------------------------------------------
# Grids


def test_grid_values_split_at_top_level_commas():
    assert split_values("1,10,100") == ["1", "10", "100"]
    assert split_values("[5,8],[6,9]") == ["[5,8]", "[6,9]"]
    assert parse_grid(["method.ranksim.gamma=1,10", "seed=0"]) == {"method.ranksim.gamma": ["1", "10"], "seed": ["0"]}
    with pytest.raises(UserError, match="empty value"):
        split_values("1,,2")
    with pytest.raises(UserError, match="given twice"):
        parse_grid(["seed=0,1", "seed=2"])


def test_grid_points_folders_overrides_and_errors(tmp_path):
    out, points = grid_points(RANKSIM, {"method.ranksim.gamma": [1, 10], "schedule.milestones": ["[1,2]", "[3]"],
                                        "seed": ["0"]}, ["schedule.epochs=4"], tmp_path / "s")
    assert out == tmp_path / "s"
    assert [p.name for p in points] == ["gamma=1_milestones=1-2_seed=0", "gamma=1_milestones=3_seed=0",
                                        "gamma=10_milestones=1-2_seed=0", "gamma=10_milestones=3_seed=0"]
    cfg = load_config(RANKSIM, points[1].overrides)
    assert (cfg.method.ranksim.gamma, cfg.schedule.milestones, cfg.seed, cfg.schedule.epochs) == (1.0, [3], 0, 4)
    assert cfg.output_dir == str(tmp_path / "s" / "gamma=1_milestones=3_seed=0")
    assert cfg.logging.hparams == ["method.ranksim.gamma", "schedule.milestones"]
    _, points = grid_points(RANKSIM, {"method.lds.sigma": [1, 2], "method.fds.sigma": [1, 2]})
    assert points[0].name == "method.lds.sigma=1_method.fds.sigma=1_seed=0"  # leaves shared: the whole key
    assert points[0].out.parent == Path("runs/sweeps/quickstart/ranksim/method.lds.sigma-method.fds.sigma")
    with pytest.raises(UserError, match="does not change what is trained"):
        grid_points(RANKSIM, {"data.num_workers": [0, 2]})
    with pytest.raises(UserError, match="did you mean 'method.ranksim.gamma'"):
        grid_points(RANKSIM, {"method.ranksim.gama": [1, 2]})
    with pytest.raises(UserError, match="must be of type float"):
        grid_points(RANKSIM, {"method.ranksim.gamma": [1, "high"]})
    with pytest.raises(UserError, match="share the run folder"):
        grid_points(RANKSIM, {"model.name": ["resnet_small", "resnet_small "]})
    with pytest.raises(UserError, match="swept and also set"):
        grid_points(RANKSIM, {"seed": [0, 1]}, ["seed=3"])
    with pytest.raises(UserError, match="nothing to sweep"):
        grid_points(RANKSIM, {"seed": [0]})


def test_sweep_runs_every_point_and_collects_one_row_per_config(tmp_path, calls):
    """gamma 1 and 10, seeds 0 and 1: MAE 1.0 and 1.1 -> 1.05 ± 0.07; 10.0 and 10.1 -> 10.05 ± 0.07."""
    outcomes, table = sweep(RANKSIM, {"method.ranksim.gamma": [1, 10], "seed": [0, 1]}, ["schedule.epochs=1"],
                            out=tmp_path / "s", train=FAKE)
    assert [o.status for o in outcomes] == ["ran"] * 4
    assert len(calls()) == 4
    lines = table.splitlines()
    assert lines[0].startswith("| Method | method.ranksim.gamma | seeds | MAE all |")
    assert lines[2] == "| Vanilla + RankSim | 1 | 2 | 1.05 ± 0.07 | 1.05 ± 0.07 | 1.05 ± 0.07 | 1.05 ± 0.07 " \
                       "| 1.00 ± 0.00 | 1.00 ± 0.00 | 1.00 ± 0.00 | 1.00 ± 0.00 |"
    assert lines[3].startswith("| Vanilla + RankSim | 10 | 2 | 10.05 ± 0.07 |")
    assert lines[4] == ""


def test_an_interrupted_sweep_resumes(tmp_path, calls):
    """A second run of the same sweep skips finished points, resumes the interrupted one (last.pt,
    no results) and starts the one that never started."""
    grid = {"method.ranksim.gamma": [1, 10], "seed": [0, 1]}
    sweep(RANKSIM, grid, out=tmp_path / "s", train=FAKE)
    (tmp_path / "s" / "gamma=1_seed=1" / "results.json").unlink()  # stopped after its last checkpoint
    for path in sorted((tmp_path / "s" / "gamma=10_seed=0").rglob("*"), reverse=True):  # never started
        path.rmdir() if path.is_dir() else path.unlink()
    before = len(calls())
    outcomes, table = sweep(RANKSIM, grid, out=tmp_path / "s", train=FAKE)
    assert [o.status for o in outcomes] == ["finished", "resumed", "ran", "finished"]
    assert [c[:2] for c in calls()[before:]] == [["--resume", str(tmp_path / "s" / "gamma=1_seed=1")],
                                                 ["-c", str(RANKSIM)]]
    assert table.count("| 2 |") == 2


def test_a_changed_config_is_refused_or_moved_aside(tmp_path, calls):
    grid = {"method.ranksim.gamma": [1, 10]}
    sweep(RANKSIM, grid, ["optim.lr=1e-3"], out=tmp_path / "s", train=FAKE)
    before = len(calls())
    outcomes, _ = sweep(RANKSIM, grid, ["optim.lr=2e-3", "data.num_workers=3"], out=tmp_path / "s", train=FAKE)
    assert [o.status for o in outcomes] == ["stale", "stale"] and len(calls()) == before
    assert "optim.lr: 0.001 -> 0.002" in outcomes[0].detail and "num_workers" not in outcomes[0].detail
    assert "--rerun-stale" in outcomes[0].detail
    outcomes, table = sweep(RANKSIM, grid, ["optim.lr=2e-3"], out=tmp_path / "s", train=FAKE, rerun_stale=True)
    assert [o.status for o in outcomes] == ["ran", "ran"]
    assert (tmp_path / "s" / "gamma=1_seed=0.stale1" / "results.json").is_file()  # the old run is kept
    set_aside = json.loads((tmp_path / "s" / "gamma=1_seed=0.stale1" / "set_aside.json").read_text())
    assert "optim.lr: 0.001 -> 0.002" in set_aside["reason"]  # the collector leaves it out by this record
    rows = [line for line in table.splitlines() if line.startswith("| Vanilla")]
    assert len(rows) == 2 and all(r.endswith("| 2.00 | 2.00 | 2.00 | 2.00 |") for r in rows)  # GM = lr x 1000
    # (the stale runs, GM 1.00, are not collected)
    _, table = sweep(RANKSIM, grid, ["optim.lr=2e-3", "data.num_workers=3"], out=tmp_path / "s", train=FAKE)
    assert len(calls()) == before + 2  # an operational difference reuses the runs


def test_a_failed_point_stops_only_the_points_that_need_it(tmp_path, calls):
    def point(name, lr, needs=()):
        return Point(name, RANKSIM, [f"optim.lr={lr}", f"output_dir={tmp_path / name}"], tmp_path / name, list(needs))
    points = [point("a", 1e-3), point("b", 1e-3, ["a"]), point("c", 1e-3), point("d", 1e-3, ["c"])]
    points[0].overrides.insert(0, "logging.max_loss=1e-9")
    outcomes = run_points(points, train=FAKE)
    assert [o.status for o in outcomes] == ["failed", "blocked", "ran", "ran"]
    assert outcomes[0].detail == "the loss is 100 at epoch 0, step 0; training stopped"
    assert "needs a, which failed" in outcomes[1].detail
    assert [c[-1] for c in calls()] == [f"output_dir={tmp_path / n}" for n in "acd"]


def test_a_point_is_rerun_when_a_point_it_needs_was(tmp_path, calls):
    def point(name, lr, needs=()):
        return Point(name, RANKSIM, [f"optim.lr={lr}", f"output_dir={tmp_path / name}"], tmp_path / name, list(needs))
    run_points([point("a", 1e-3), point("b", 1e-3, ["a"])], train=FAKE)
    (tmp_path / "a").rename(tmp_path / "a-deleted")  # stage 1 gone: it runs again, and so does b
    outcomes = run_points([point("a", 1e-3), point("b", 1e-3, ["a"])], train=FAKE)
    assert [o.status for o in outcomes] == ["ran", "ran"]
    assert (tmp_path / "b.stale1" / "results.json").is_file()
    outcomes = run_points([point("a", 2e-3), point("b", 1e-3, ["a"])], train=FAKE)  # a changed: refused
    assert [o.status for o in outcomes] == ["stale", "blocked"]
    outcomes = run_points([point("a", 2e-3), point("b", 1e-3, ["a"])], train=FAKE, rerun_stale=True)
    assert [o.status for o in outcomes] == ["ran", "ran"]
    assert (tmp_path / "b.stale2").is_dir()
    outcomes = run_points([point("a", 2e-3), point("b", 1e-3, ["a"])], train=FAKE)
    assert [o.status for o in outcomes] == ["finished", "finished"]


def test_jobs_run_points_side_by_side(tmp_path, calls):
    outcomes, table = sweep(RANKSIM, {"seed": [0, 1, 2]}, out=tmp_path / "s", jobs=3, train=FAKE)
    assert [o.status for o in outcomes] == ["ran"] * 3 and len(calls()) == 3
    assert (tmp_path / "s" / "seed=2" / "console.log").is_file()
    assert "| Vanilla + RankSim | 3 | 100.10 ± 0.10 |" in table


def test_sweep_cli_dry_run_and_errors(tmp_path):
    def cli(*args):
        return subprocess.run([sys.executable, str(REPO / "scripts" / "sweep.py"), *map(str, args)], cwd=REPO,
                              capture_output=True, text=True, timeout=60)
    proc = cli("-c", RANKSIM, "method.ranksim.gamma=1,10", "seed=0,1", "--out", tmp_path / "s", "--dry-run",
               "--", "schedule.epochs=1")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == ["== gamma=1_seed=0", "== gamma=1_seed=1", "== gamma=10_seed=0",
                                                      "== gamma=10_seed=1"]
    assert "schedule.epochs=1 method.ranksim.gamma=10 seed=1" in lines[3]
    assert not (tmp_path / "s").exists()
    proc = cli("-c", RANKSIM, "method.ranksim.gama=1,10")
    assert proc.returncode == 2 and "did you mean 'method.ranksim.gamma'" in proc.stderr
    assert "Traceback" not in proc.stderr


# ---------------------------------------------------------------------------------------------
# The reproduce scripts


def row_folder(tmp_path: Path) -> Path:
    """A small table: vanilla, vanilla_ranksim (made to fail), and an RRT row on each."""
    folder = tmp_path / "configs" / "t"
    folder.mkdir(parents=True)
    (folder / "base.yaml").write_text(f"_base_: {REPO / 'configs' / 'quickstart' / 'base.yaml'}\n")
    (folder / "vanilla.yaml").write_text("_base_: base.yaml\ntitle: VANILLA\n")
    (folder / "vanilla_ranksim.yaml").write_text("_base_: base.yaml\ntitle: Vanilla + RankSim\n"
                                                 "method: {ranksim: {enabled: true}}\nlogging: {max_loss: 1.0e-9}\n")
    (folder / "rrt.yaml").write_text("_base_: base.yaml\ntitle: RRT\n"
                                     "method: {rrt: {enabled: true, stage1: runs/t/vanilla/seed0}}\n")
    (folder / "rrt_ranksim.yaml").write_text("_base_: base.yaml\ntitle: RRT + RankSim\nmethod: {ranksim: {enabled: true},"
                                             " rrt: {enabled: true, stage1: runs/t/vanilla_ranksim/seed0}}\n")
    return folder


def test_reproduce_goes_on_after_a_failed_row_and_exits_non_zero(tmp_path, calls, capsys):
    folder, runs = row_folder(tmp_path), tmp_path / "runs" / "t"
    reproduce = load_script("reproduce_table")
    assert reproduce.main([str(folder), "--runs", str(runs), "--seed", "1"], train=FAKE) == 1
    out = capsys.readouterr().out
    assert (runs / "vanilla" / "seed1" / "results.json").is_file()
    assert (runs / "rrt" / "seed1" / "results.json").is_file()  # after the failed row
    assert not (runs / "rrt_ranksim" / "seed1").exists()  # needs the failed row: not started
    assert [c[1] for c in calls()] == [str(folder / f"{r}.yaml") for r in ("vanilla", "vanilla_ranksim", "rrt")]
    assert f"method.rrt.stage1={runs / 'vanilla' / 'seed1'}" in calls()[2]
    assert "2 rows failed: vanilla_ranksim, rrt_ranksim" in out
    assert "  vanilla_ranksim (failed): the loss is 100.1 at epoch 0, step 0; training stopped" in out
    assert "| VANILLA | 1 |" in out and "| RRT | 1 |" in out  # the collected table


def test_reproduce_sorts_rows_and_reruns_changed_ones(tmp_path, calls, capsys):
    folder, runs = row_folder(tmp_path), tmp_path / "runs" / "t"
    reproduce = load_script("reproduce_table")
    assert reproduce.main([str(folder), "--runs", str(runs), "--rows", "rrt,vanilla"], train=FAKE) == 0
    assert [Path(c[1]).stem for c in calls()] == ["vanilla", "rrt"]  # stage 1 first, whatever --rows says
    assert reproduce.main([str(folder), "--runs", str(runs), "--rows", "rrt,vanilla", "--", "device=cpu"],
                          train=FAKE) == 0
    assert len(calls()) == 2  # finished rows, operational override: nothing runs
    (folder / "vanilla.yaml").write_text("_base_: base.yaml\ntitle: VANILLA\noptim: {lr: 2.0e-3}\n")
    capsys.readouterr()
    assert reproduce.main([str(folder), "--runs", str(runs), "--rows", "rrt,vanilla"], train=FAKE) == 1
    out = capsys.readouterr().out
    assert "optim.lr: 0.001 -> 0.002" in out and len(calls()) == 2
    assert reproduce.main([str(folder), "--runs", str(runs), "--rows", "vanilla,rrt", "--rerun-stale"],
                          train=FAKE) == 0
    assert [Path(c[1]).stem for c in calls()[2:]] == ["vanilla", "rrt"]  # the RRT row follows its stage 1
    assert (runs / "rrt" / "seed0.stale1").is_dir()


def test_reproduce_notices_a_stage1_retrained_by_an_earlier_invocation(tmp_path, calls, capsys):
    """The RRT row's config is unchanged, but its stage 1 was moved aside and trained again by a
    run of the stage-1 row alone: the RRT row is refused, then rerun with --rerun-stale."""
    folder, runs = row_folder(tmp_path), tmp_path / "runs" / "t"
    reproduce = load_script("reproduce_table")
    assert reproduce.main([str(folder), "--runs", str(runs), "--rows", "vanilla,rrt"], train=FAKE) == 0
    (runs / "vanilla" / "seed0").rename(runs / "vanilla" / "seed0.old")
    assert reproduce.main([str(folder), "--runs", str(runs), "--rows", "vanilla"], train=FAKE) == 0
    capsys.readouterr()
    assert reproduce.main([str(folder), "--runs", str(runs), "--rows", "vanilla,rrt"], train=FAKE) == 1
    out = capsys.readouterr().out
    assert "was trained again after this run loaded it" in out and len(calls()) == 3
    assert reproduce.main([str(folder), "--runs", str(runs), "--rows", "rrt", "--rerun-stale"], train=FAKE) == 0
    assert [Path(c[1]).stem for c in calls()[3:]] == ["rrt"] and (runs / "rrt" / "seed0.stale1").is_dir()
    assert reproduce.main([str(folder), "--runs", str(runs), "--rows", "vanilla,rrt"], train=FAKE) == 0
    assert len(calls()) == 4  # the new RRT run loaded the current stage 1: nothing to do


def test_reproduce_errors_exit_2(tmp_path, capsys):
    reproduce = load_script("reproduce_table")
    folder = row_folder(tmp_path)
    assert reproduce.main([str(folder), "--rows", "vanila"]) == 2
    assert "no row 'vanila'" in capsys.readouterr().err
    assert reproduce.main([str(folder), "--", "optim.lrr=1"]) == 2
    assert "did you mean 'optim.lr'" in capsys.readouterr().err


@pytest.mark.slow
def test_reproduce_script_with_real_training(tmp_path, data_root):
    """The shell script end to end with train.py: the failing row and its RRT row are listed, the
    others finish, the status is 1."""
    import tiny
    folder, runs = row_folder(tmp_path), tmp_path / "runs" / "t"
    env = {**os.environ, "PY": sys.executable}
    proc = subprocess.run(["bash", str(REPO / "scripts" / "reproduce_table.sh"), str(folder), "--runs", str(runs),
                           "--", *tiny.TINY, "schedule.epochs=1", f"data.root={data_root}"],
                          cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "2 rows failed: vanilla_ranksim, rrt_ranksim" in proc.stdout
    assert (runs / "vanilla" / "seed0" / "results.json").is_file()
    assert (runs / "rrt" / "seed0" / "results.json").is_file()


def test_swept_keys_are_logged_as_tensorboard_hparams():
    from ranksim.engine.launch import _log_hparams

    class Writer:
        def add_hparams(self, hparams, metrics, run_name):
            self.hparams, self.metrics = hparams, metrics
    cfg = load_config(RANKSIM, ["method.ranksim.gamma=10", "seed=2",
                                "logging.hparams=[method.ranksim.gamma,seed,schedule.milestones]"])
    writer = Writer()
    _log_hparams(writer, cfg, {"metrics": {"all": {"mae": 1.5, "count": 3}, "medium": None}})
    assert (writer.hparams["method.ranksim.gamma"], writer.hparams["seed"]) == (10.0, 2)
    assert writer.hparams["schedule.milestones"] == "[7, 9]"  # lists as text: TensorBoard takes scalars only
    assert writer.metrics == {"hparam/all_mae": 1.5}
    with pytest.raises(UserError, match="not a config value; did you mean 'method.ranksim.gamma'"):
        load_config(RANKSIM, ["logging.hparams=[method.ranksim.gama]"])
    with pytest.raises(UserError, match="'method.ranksim', which is not a config value"):
        load_config(RANKSIM, ["logging.hparams=[method.ranksim]"])


def test_points_that_need_each_other_are_an_error(tmp_path):
    points = [Point("a", RANKSIM, [], tmp_path / "a", ["b"]), Point("b", RANKSIM, [], tmp_path / "b", ["a"])]
    with pytest.raises(UserError, match="need each other"):
        run_points(points, train=FAKE)


def test_exit_status_of_the_command_line_entry_points(capsys):
    """The one place that turns a UserError into status 2 and Ctrl-C into 130 (sweep and prepare)."""
    from ranksim.errors import exit_status

    def interrupted():
        raise KeyboardInterrupt

    def bad_input():
        raise UserError("no such folder; give another --root")
    assert exit_status(lambda: None, "-") == 0 and exit_status(lambda: 1, "-") == 1
    assert exit_status(bad_input, "-") == 2
    assert capsys.readouterr().err == "error: no such folder; give another --root\n"
    assert exit_status(interrupted, "interrupted; run it again to resume") == 130
    assert capsys.readouterr().err == "interrupted; run it again to resume\n"


# ---------------------------------------------------------------------------------------------
# What a run is (ranksim.engine.identity): seed, results version, stage 1, provenance


def test_a_seed_1_sweep_after_a_seed_0_sweep_trains_and_the_table_counts_two_seeds(tmp_path, calls):
    """The same grid with -- seed=0, then -- seed=1: four runs, and each row has both seeds
    (gamma 1: MAE 1.0 and 1.1 -> 1.05 ± 0.07)."""
    grid = {"method.ranksim.gamma": [1, 10]}
    outcomes, _ = sweep(RANKSIM, grid, ["seed=0"], out=tmp_path / "s", train=FAKE)
    assert [o.status for o in outcomes] == ["ran", "ran"]
    outcomes, table = sweep(RANKSIM, grid, ["seed=1"], out=tmp_path / "s", train=FAKE)
    assert [o.status for o in outcomes] == ["ran", "ran"] and len(calls()) == 4
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == [
        "gamma=10_seed=0", "gamma=10_seed=1", "gamma=1_seed=0", "gamma=1_seed=1"]
    rows = [line for line in table.splitlines() if line.startswith("| Vanilla")]
    assert rows[0].startswith("| Vanilla + RankSim | 1 | 2 | 1.05 ± 0.07 |")
    assert rows[1].startswith("| Vanilla + RankSim | 10 | 2 | 10.05 ± 0.07 |")


def test_a_finished_run_of_another_seed_in_the_folder_is_not_reused(tmp_path, calls):
    point = Point("a", RANKSIM, ["seed=0", f"output_dir={tmp_path / 'a'}"], tmp_path / "a")
    run_points([point], train=FAKE)
    other = Point("a", RANKSIM, ["seed=1", f"output_dir={tmp_path / 'a'}"], tmp_path / "a")
    (outcome,) = run_points([other], train=FAKE)
    assert outcome.status == "stale" and "seed: 0 -> 1" in outcome.detail and len(calls()) == 1


def test_runs_of_another_results_version_are_refused_and_not_tabled(tmp_path, calls):
    """A run marked with an old results version, and one made before versions were recorded, are
    stale: refused with the reason, no table of them, moved aside and rerun with --rerun-stale."""
    grid = {"method.ranksim.gamma": [1, 10]}
    sweep(RANKSIM, grid, out=tmp_path / "s", train=FAKE)
    identity = tmp_path / "s" / "gamma=1_seed=0" / "identity.json"
    identity.write_text(json.dumps({**json.loads(identity.read_text()), "results_version": RESULTS_VERSION - 1}))
    (tmp_path / "s" / "gamma=10_seed=0" / "identity.json").unlink()
    outcomes, table = sweep(RANKSIM, grid, out=tmp_path / "s", train=FAKE)
    assert [o.status for o in outcomes] == ["stale", "stale"] and len(calls()) == 2
    assert f"made by results version {RESULTS_VERSION - 1}" in outcomes[0].detail
    assert "before results versions were recorded" in outcomes[1].detail
    assert table == ""  # no row was produced for this command
    outcomes, table = sweep(RANKSIM, grid, out=tmp_path / "s", train=FAKE, rerun_stale=True)
    assert [o.status for o in outcomes] == ["ran", "ran"] and len(calls()) == 4
    assert table.count("| Vanilla + RankSim |") == 2 and "| 1 | 1 | 1.00 |" in table


def test_an_rrt_run_without_stage1_record_is_stale_and_its_row_is_not_printed(tmp_path, calls, capsys):
    folder, runs = row_folder(tmp_path), tmp_path / "runs" / "t"
    reproduce = load_script("reproduce_table")
    assert reproduce.main([str(folder), "--runs", str(runs), "--rows", "vanilla,rrt"], train=FAKE) == 0
    assert "| RRT | 1 |" in capsys.readouterr().out
    (runs / "rrt" / "seed0" / "stage1.json").unlink()  # as made before the record existed
    assert reproduce.main([str(folder), "--runs", str(runs), "--rows", "vanilla,rrt"], train=FAKE) == 1
    out = capsys.readouterr().out
    assert "RRT stage 2 without stage1.json" in out and len(calls()) == 2
    assert "| VANILLA | 1 |" in out and "| RRT |" not in out  # the refused row shows no number


def test_reproduce_seed_override_means_the_same_as_the_seed_option(tmp_path, calls, capsys):
    folder, runs = row_folder(tmp_path), tmp_path / "runs" / "t"
    reproduce = load_script("reproduce_table")
    assert reproduce.main([str(folder), "--runs", str(runs), "--rows", "vanilla,rrt", "--", "seed=1"], train=FAKE) == 0
    assert (runs / "vanilla" / "seed1" / "results.json").is_file() and not (runs / "vanilla" / "seed0").exists()
    assert f"method.rrt.stage1={runs / 'vanilla' / 'seed1'}" in calls()[1]
    assert all(c.count("seed=1") == 1 for c in calls())
    assert reproduce.main([str(folder), "--runs", str(runs), "--seed", "0", "--", "seed=1"], train=FAKE) == 2
    assert "two seeds given" in capsys.readouterr().err
    assert reproduce.main([str(folder), "--runs", str(runs), "--", f"output_dir={tmp_path}"], train=FAKE) == 2
    assert "use --runs DIR" in capsys.readouterr().err
