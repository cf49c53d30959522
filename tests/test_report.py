"""The results collector (ranksim/results/report.py, scripts/collect_results.py) on hand-made run folders.

Each run folder is written by hand (config.yaml, results.json, train.log, metrics.jsonl), so the
expected table cells can be worked out here: two seeds of one row give mean ± sample std, and the
authors' number from ranksim/reference/paper_tables.csv follows with our difference.
"""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ranksim.engine.identity import TRAINED, write_identity
from ranksim.results.report import collect, discover_runs, render
from ranksim.data.files import sha256_of

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "collect_results.py"
REGIONS = ("all", "many", "medium", "few")


def metrics(mae: list[float], gm: list[float]) -> dict:
    """A results.json ``metrics`` block from MAE and GM per region (all, many, medium, few)."""
    return {region: {"mse": a * a, "mae": a, "gm": g, "pearson": 0.5, "spearman": 0.5, "count": 10}
            for region, a, g in zip(REGIONS, mae, gm)}


def make_run(root: Path, folder: str, name: str, title: str, seed: int = 0, dataset: str = "agedb",
             results: dict | None = None, log: str = "", validations: int = 0, provenance: dict = TRAINED,
             data: str | None = None, identity: bool = True) -> Path:
    """A run folder; ``identity`` writes its identity.json (current results version) as training does."""
    run = root / folder
    run.mkdir(parents=True)
    if identity:
        write_identity(run, provenance, data)
    cfg = {"name": name, "title": title, "seed": seed, "data": {"dataset": dataset}, "schedule": {"epochs": 120}}
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    (run / "train.log").write_text(log)
    (run / "metrics.jsonl").write_text("".join(json.dumps({"epoch": e}) + "\n" for e in range(validations)))
    if results is not None:
        (run / "results.json").write_text(json.dumps({"name": name, "split": "test", "metrics": results}))
    return run


@pytest.fixture
def runs_dir(tmp_path) -> Path:
    """An AgeDB-DIR table in progress.

    - ``agedb/sqinv_ranksim`` ("SQINV + RankSim"), seeds 0 and 1:
        MAE all 7.00 and 7.20 -> mean 7.10, sample std sqrt(2 * 0.1^2 / 1) = 0.1414 -> "7.10 ± 0.14";
        the authors' MAE all is 6.91 -> "(6.91, +0.19)".
        MAE medium 8.00 and 8.40 -> 8.20 ± 0.28; MAE few 10.00 twice -> 10.00 ± 0.00;
        GM few 7.00 and 7.50 -> 7.25 ± 0.35 (std 0.3536).
    - ``agedb/vanilla``, ``agedb/vanilla_ranksim``, ``agedb/sqinv``: one seed each (no ±); the
      vanilla run has no medium-shot test sample (``None`` metrics -> "-").
    - ``agedb/my_idea``: a row the paper does not have -> last.
    - ``agedb/lds``: failed (an ERROR line in train.log); ``agedb/fds``: unfinished (2 validations).
    - ``imdb_wiki/vanilla``: another dataset, left out of the AgeDB table.
    Folder names are chosen so that alphabetical order is not the paper's order.
    """
    root = tmp_path / "runs"
    make_run(root, "a/sqinv_ranksim/seed0", "agedb/sqinv_ranksim", "SQINV + RankSim", seed=0,
             results=metrics([7.00, 6.00, 8.00, 10.00], [4.50, 4.00, 5.00, 7.00]))
    make_run(root, "a/sqinv_ranksim/seed1", "agedb/sqinv_ranksim", "SQINV + RankSim", seed=1,
             results=metrics([7.20, 6.20, 8.40, 10.00], [4.70, 4.00, 5.40, 7.50]))
    vanilla = metrics([7.77, 6.62, 9.55, 13.67], [5.05, 4.23, 7.01, 10.75])
    vanilla["medium"] = {"mse": None, "mae": None, "gm": None, "pearson": None, "spearman": None, "count": 0}
    make_run(root, "b/vanilla/seed0", "agedb/vanilla", "VANILLA", results=vanilla)
    make_run(root, "c/sqinv/seed0", "agedb/sqinv", "SQINV", results=metrics([7.1] * 4, [4.5] * 4))
    make_run(root, "d/my_idea/seed0", "agedb/my_idea", "My idea", results=metrics([9.0] * 4, [6.0] * 4))
    make_run(root, "e/vanilla_ranksim/seed0", "agedb/vanilla_ranksim", "Vanilla + RankSim",
             results=metrics([7.0] * 4, [4.4] * 4))
    make_run(root, "f/lds/seed0", "agedb/lds", "LDS", validations=3,
             log="12:00:00 INFO run folder runs/agedb/lds/seed0, device cuda\n"
                 "12:30:00 ERROR the loss is nan at epoch 3, step 17; training stopped. "
                 "checkpoints/last.pt keeps the last good epoch\n")
    make_run(root, "g/fds/seed0", "agedb/fds", "FDS", validations=2, log="12:00:00 INFO run folder\n")
    make_run(root, "h/imdb/seed0", "imdb_wiki/vanilla", "VANILLA", dataset="imdb_wiki",
             results=metrics([8.0] * 4, [4.6] * 4))
    return root


def test_markdown_table_cells_order_and_unfinished_runs(runs_dir):
    text = render(collect(discover_runs(runs_dir), "agedb"), "markdown")
    lines = text.splitlines()
    assert lines[0] == ("| Method | seeds | MAE all | MAE many | MAE medium | MAE few "
                        "| GM all | GM many | GM medium | GM few |")
    rows = [line for line in lines[2:] if line.startswith("| ")]
    # Paper order: vanilla, its RankSim twin, sqinv, its twin; rows the paper lacks come last.
    assert [row.split(" | ")[0][2:] for row in rows] == [
        "VANILLA", "Vanilla + RankSim", "SQINV", "SQINV + RankSim", "My idea"]
    assert rows[3] == ("| SQINV + RankSim | 2 | 7.10 ± 0.14 (6.91, +0.19) | 6.10 ± 0.14 | 8.20 ± 0.28 "
                       "| 10.00 ± 0.00 | 4.60 ± 0.14 | 4.00 ± 0.00 | 5.20 ± 0.28 | 7.25 ± 0.35 |")
    assert rows[0] == "| VANILLA | 1 | 7.77 | 6.62 | - | 13.67 | 5.05 | 4.23 | - | 10.75 |"
    assert "imdb" not in text and "8.00" not in text, "a run of another dataset leaked into the table"
    below = text[text.index("Runs without results:"):].splitlines()
    assert below[1] == (f"  {runs_dir / 'f/lds/seed0'}: failed: the loss is nan at epoch 3, step 17; "
                        "training stopped. checkpoints/last.pt keeps the last good epoch")
    assert below[2] == f"  {runs_dir / 'g/fds/seed0'}: unfinished: 2 validations of 120 epochs"
    assert len(below) == 3


def test_csv_format(runs_dir):
    text = render(collect(discover_runs(runs_dir), "agedb"), "csv")
    records = list(csv.DictReader(io.StringIO(text)))
    assert list(records[0]) == ["row", "title", "seeds", "metric", "shot", "ours", "std", "theirs", "difference", "note"]
    rows = [r for r in records if not r["note"]]
    assert len(rows) == 5 * 8  # five rows x (MAE, GM) x four regions
    # The runs without results, as below the markdown table: one record each, only its note filled.
    assert [r["note"] for r in records if r["note"]] == [
        f"run without results {runs_dir / 'f/lds/seed0'}: failed: the loss is nan at epoch 3, step 17; "
        "training stopped. checkpoints/last.pt keeps the last good epoch",
        f"run without results {runs_dir / 'g/fds/seed0'}: unfinished: 2 validations of 120 epochs"]
    assert all(set(r.values()) == {"", r["note"]} for r in records if r["note"])
    cell = next(r for r in rows if r["row"] == "agedb/sqinv_ranksim" and r["metric"] == "mae" and r["shot"] == "all")
    assert cell["title"] == "SQINV + RankSim" and cell["seeds"] == "0 1"
    assert float(cell["ours"]) == pytest.approx(7.10)
    assert float(cell["std"]) == pytest.approx(0.02 ** 0.5)
    assert float(cell["theirs"]) == 6.91
    assert float(cell["difference"]) == pytest.approx(0.19)
    medium = next(r for r in rows if r["row"] == "agedb/vanilla" and r["metric"] == "mae" and r["shot"] == "medium")
    assert medium["ours"] == medium["std"] == medium["theirs"] == medium["difference"] == ""
    assert [r["row"] for r in rows[::8]] == ["agedb/vanilla", "agedb/vanilla_ranksim", "agedb/sqinv",
                                             "agedb/sqinv_ranksim", "agedb/my_idea"]


def test_latex_format(runs_dir):
    lines = render(collect(discover_runs(runs_dir), "agedb"), "latex").splitlines()
    assert lines[0] == "\\begin{tabular}{l" + "r" * 9 + "}"
    assert lines[1].startswith("Method & seeds & MAE all & MAE many") and lines[1].endswith("GM few \\\\ \\hline")
    assert lines[5] == ("SQINV + RankSim & 2 & 7.10 $\\pm$ 0.14 (6.91, +0.19) & 6.10 $\\pm$ 0.14 & 8.20 $\\pm$ 0.28 "
                        "& 10.00 $\\pm$ 0.00 & 4.60 $\\pm$ 0.14 & 4.00 $\\pm$ 0.00 & 5.20 $\\pm$ 0.28 "
                        "& 7.25 $\\pm$ 0.35 \\\\")
    assert lines[7] == "\\end{tabular}"
    assert lines[8:] == ["% Runs without results:",
                         f"%   {runs_dir / 'f/lds/seed0'}: failed: the loss is nan at epoch 3, step 17; training "
                         "stopped. checkpoints/last.pt keeps the last good epoch",
                         f"%   {runs_dir / 'g/fds/seed0'}: unfinished: 2 validations of 120 epochs"]


def collect_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=60)


def test_cli_formats_and_dataset_choice(runs_dir):
    proc = collect_cli(runs_dir, "--dataset", "agedb", "--format", "latex")
    assert proc.returncode == 0, proc.stderr
    assert "SQINV + RankSim & 2 & 7.10 $\\pm$ 0.14 (6.91, +0.19)" in proc.stdout
    proc = collect_cli(runs_dir / "h", "--format", "csv")  # one dataset under the folder: chosen by itself
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[1].startswith("imdb_wiki/vanilla,VANILLA,0,mae,all,8.0,")


def test_cli_errors_exit_2_with_a_message(runs_dir, tmp_path):
    proc = collect_cli(tmp_path / "absent")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "absent is not a folder" in proc.stderr and "runs/agedb" in proc.stderr
    proc = collect_cli(runs_dir)
    assert proc.returncode == 2 and "runs of several datasets (agedb, imdb_wiki)" in proc.stderr
    assert "--dataset" in proc.stderr
    (tmp_path / "empty").mkdir()
    proc = collect_cli(tmp_path / "empty")
    assert proc.returncode == 2 and "no runs under" in proc.stderr
    assert "config.yaml" in proc.stderr and "--dataset" not in proc.stderr, "--dataset cannot help an empty folder"


# ---------------------------------------------------------------------------------------------
# Grouping by config: runs written from real resolved configs, as train.py writes them


def resolved_run(root: Path, folder: str, config: str, overrides: list[str], results: dict) -> Path:
    """A run folder whose config.yaml is the config train.py would store for these overrides."""
    from ranksim.config import dump, load_config

    run = root / folder
    (run / "checkpoints").mkdir(parents=True)
    cfg = load_config(REPO / "configs" / config, [*overrides, f"output_dir={run}"])
    dump(cfg, run / "config.yaml")
    write_identity(run, TRAINED, None)
    (run / "checkpoints" / "best.pt").write_bytes(folder.encode())
    if cfg.method.rrt.enabled:  # the stage-1 checkpoint it loaded, as train.py records it
        best = root / cfg.method.rrt.stage1 / "checkpoints" / "best.pt"
        (run / "stage1.json").write_text(json.dumps({"checkpoint": str(best), "sha256": sha256_of(best)}))
    (run / "results.json").write_text(json.dumps({"name": config, "split": "test", "metrics": results}))
    return run


def test_configs_differing_in_one_override_are_two_labelled_rows_of_two_seeds(tmp_path):
    """gamma 1: MAE all 3.0 (seed 0) and 3.2 (seed 1) -> 3.10 ± 0.14; gamma 10: 5.0 and 5.4 -> 5.20 ± 0.28.
    Seed 1 of gamma 10 also ran on other workers and device: operational, the same config."""
    for gamma, maes in ((1, (3.0, 3.2)), (10, (5.0, 5.4))):
        for seed, mae in enumerate(maes):
            extra = ["data.num_workers=4", "device=cpu", "logging.progress=false"] if (gamma, seed) == (10, 1) else []
            resolved_run(tmp_path, f"g{gamma}s{seed}", "quickstart/ranksim.yaml",
                         [f"method.ranksim.gamma={gamma}", f"seed={seed}", *extra], metrics([mae] * 4, [1.0] * 4))
    resolved_run(tmp_path, "vanilla", "quickstart/vanilla.yaml", [], metrics([4.0] * 4, [1.0] * 4))
    table = collect(discover_runs(tmp_path), "synthetic")
    assert [(r["title"], r["seeds"]) for r in table["rows"]] == [
        ("VANILLA", [0]),
        ("Vanilla + RankSim (method.ranksim.gamma=1)", [0, 1]),
        ("Vanilla + RankSim (method.ranksim.gamma=10)", [0, 1])]
    lines = render(table).splitlines()
    assert lines[3].startswith("| Vanilla + RankSim (method.ranksim.gamma=1) | 2 | 3.10 ± 0.14 |")
    assert lines[4].startswith("| Vanilla + RankSim (method.ranksim.gamma=10) | 2 | 5.20 ± 0.28 |")
    assert table["duplicates"] == []
    columns = collect(discover_runs(tmp_path), "synthetic", columns=["method.ranksim.gamma"])
    assert render(columns).splitlines()[3].startswith("| Vanilla + RankSim | 1 | 2 | 3.10 ± 0.14 |")


def test_same_config_and_seed_twice_is_a_duplicate_not_a_second_seed(tmp_path):
    """Two seed-0 runs of one config (MAE 3.0 in folder a, 9.0 in folder b) and a seed-1 run (3.4):
    the row has 2 seeds, 3.0 and 3.4 -> 3.20 ± 0.28; b is listed as a duplicate of a."""
    resolved_run(tmp_path, "a", "quickstart/ranksim.yaml", ["seed=0"], metrics([3.0] * 4, [1.0] * 4))
    resolved_run(tmp_path, "b", "quickstart/ranksim.yaml", ["seed=0", "data.num_workers=3"], metrics([9.0] * 4, [1.0] * 4))
    resolved_run(tmp_path, "c", "quickstart/ranksim.yaml", ["seed=1"], metrics([3.4] * 4, [1.0] * 4))
    table = collect(discover_runs(tmp_path), "synthetic")
    assert [(r["title"], r["seeds"]) for r in table["rows"]] == [("Vanilla + RankSim", [0, 1])]
    assert table["duplicates"] == [(str(tmp_path / "b"), str(tmp_path / "a"))]
    text = render(table)
    assert "| Vanilla + RankSim | 2 | 3.20 ± 0.28 |" in text
    assert f"  {tmp_path / 'b'}: same as {tmp_path / 'a'}" in text.split("Duplicate runs")[1]


def test_paper_script_runs_collect_one_unlabelled_row_per_table_row(tmp_path):
    """Runs as scripts/reproduce_table.sh makes them (runs/agedb/ROW/seedN, RRT stage 1 of the same
    seed, an operational override on one seed): one row per table row, 2 seeds, the authors'
    numbers beside ours, as before grouping by config."""
    for seed in (0, 1):
        common = [f"seed={seed}", "logging.progress=false"] + (["data.num_workers=16"] if seed else [])
        for row, mae in (("vanilla", 7.7), ("sqinv_ranksim", 7.0)):
            resolved_run(tmp_path, f"runs/agedb/{row}/seed{seed}", f"agedb/{row}.yaml", common,
                         metrics([mae + seed / 10] * 4, [5.0] * 4))
        resolved_run(tmp_path, f"runs/agedb/rrt/seed{seed}", "agedb/rrt.yaml",
                     common + [f"method.rrt.stage1=runs/agedb/vanilla/seed{seed}"], metrics([7.5] * 4, [5.0] * 4))
    table = collect(discover_runs(tmp_path / "runs" / "agedb"), "agedb")
    assert [(r["title"], r["seeds"]) for r in table["rows"]] == [
        ("VANILLA", [0, 1]), ("SQINV + RankSim", [0, 1]), ("RRT", [0, 1])]
    lines = render(table).splitlines()
    assert lines[2].startswith("| VANILLA | 2 | 7.75 ± 0.07 |")
    assert lines[3].startswith("| SQINV + RankSim | 2 | 7.05 ± 0.07 (6.91, +0.14) |")
    assert lines[4].startswith("| RRT | 2 | 7.50 ± 0.00 |")


# ---------------------------------------------------------------------------------------------
# Run identity: provenance, data and results version keep rows apart


def test_converted_weights_are_a_row_of_their_own_beside_our_seeds(tmp_path):
    """Our seeds 0 and 1 (MAE all 7.0 and 7.4 -> 7.20 ± 0.28) and the authors' converted weights
    (6.5, seed 0 like ours): two rows, the converted one labelled, both beside the published 6.91."""
    authors = {"kind": "converted", "source": "authors", "file": "ckpt.best.pth.tar", "sha256": "0" * 64}
    for seed, mae in ((0, 7.0), (1, 7.4)):
        make_run(tmp_path, f"ours/seed{seed}", "agedb/sqinv_ranksim", "SQINV + RankSim", seed=seed,
                 results=metrics([mae] * 4, [4.0] * 4))
    make_run(tmp_path, "authors", "agedb/sqinv_ranksim/authors", "SQINV + RankSim", seed=0,
             results=metrics([6.5] * 4, [4.0] * 4), provenance=authors)
    table = collect(discover_runs(tmp_path), "agedb")
    assert [(r["title"], r["seeds"]) for r in table["rows"]] == [
        ("SQINV + RankSim", [0, 1]), ("SQINV + RankSim [the authors' weights, evaluated here]", [0])]
    assert table["duplicates"] == []
    lines = render(table).splitlines()
    assert lines[2].startswith("| SQINV + RankSim | 2 | 7.20 ± 0.28 (6.91, +0.29) |")
    assert lines[3].startswith("| SQINV + RankSim [the authors' weights, evaluated here] | 1 | 6.50 (6.91, -0.41) |")


def test_runs_on_other_data_are_never_grouped(tmp_path):
    """Two seeds of one config on split A (MAE 3 and 5 -> 4.00 ± 1.41) and one on split B (9)."""
    make_run(tmp_path, "a0", "agedb/vanilla", "VANILLA", seed=0, results=metrics([3.0] * 4, [1.0] * 4), data="a" * 16)
    make_run(tmp_path, "a1", "agedb/vanilla", "VANILLA", seed=1, results=metrics([5.0] * 4, [1.0] * 4), data="a" * 16)
    make_run(tmp_path, "b0", "agedb/vanilla", "VANILLA", seed=0, results=metrics([9.0] * 4, [1.0] * 4), data="b" * 16)
    table = collect(discover_runs(tmp_path), "agedb")
    assert [(r["title"], r["seeds"]) for r in table["rows"]] == [
        ("VANILLA [data aaaaaaaa]", [0, 1]), ("VANILLA [data bbbbbbbb]", [0])]
    assert table["duplicates"] == []
    assert render(table).splitlines()[2].startswith("| VANILLA [data aaaaaaaa] | 2 | 4.00 ± 1.41 |")


def test_stale_runs_are_listed_and_counted_only_when_asked(tmp_path):
    """A run of older code (no identity.json) is left out of the row and listed; with
    include_stale it is a row of its own, marked."""
    make_run(tmp_path, "new", "agedb/vanilla", "VANILLA", seed=0, results=metrics([3.0] * 4, [1.0] * 4))
    make_run(tmp_path, "old", "agedb/vanilla", "VANILLA", seed=1, results=metrics([8.0] * 4, [1.0] * 4),
             identity=False)
    table = collect(discover_runs(tmp_path), "agedb")
    assert [(r["title"], r["seeds"]) for r in table["rows"]] == [("VANILLA", [0])]
    assert table["stale"] == [(str(tmp_path / "old"), table["stale"][0][1])]
    assert "before results versions were recorded" in table["stale"][0][1]
    assert "Stale runs" in render(table)
    table = collect(discover_runs(tmp_path), "agedb", include_stale=True)
    assert [(r["title"], r["seeds"]) for r in table["rows"]] == [("VANILLA", [0]), ("VANILLA [stale]", [1])]


def test_row_labels_name_only_settings_that_change_training(tmp_path):
    """Two vanilla runs differing in an FDS setting while FDS is off are one config: one row, no label."""
    resolved_run(tmp_path, "a", "quickstart/vanilla.yaml", ["seed=0"], metrics([3.0] * 4, [1.0] * 4))
    resolved_run(tmp_path, "b", "quickstart/vanilla.yaml", ["seed=1", "method.fds.bucket_num=60",
                                                            "method.ranksim.interpolation_lambda=5"],
                 metrics([3.4] * 4, [1.0] * 4))
    table = collect(discover_runs(tmp_path), "synthetic")
    assert [(r["title"], r["seeds"]) for r in table["rows"]] == [("VANILLA", [0, 1])]


LATEX_SPECIAL = re.compile(r"[&%$#_{}~^\\]")


def latex_problems(text: str) -> list[str]:
    """A small check that a tabular compiles: every line is tabular markup, a row of cells, or a
    % comment; once the escapes (\\_, \\textbackslash{}, ...) and the table's own markup ($\\pm$,
    the row ends, & between cells) are taken out, no cell holds a special character; every row has
    as many cells as the column spec says."""
    problems, width = [], None
    for line in text.splitlines():
        if not line or line.startswith("%") or line == "\\end{tabular}":
            continue
        spec = re.fullmatch(r"\\begin\{tabular\}\{(l[lr]*)\}", line)
        if spec:
            width = len(spec.group(1))
            continue
        body = line.removesuffix(" \\\\ \\hline").removesuffix(" \\\\")
        if body == line:
            problems.append(f"not a table row: {line}")
        body = re.sub(r"\\(textbackslash|textasciitilde|textasciicircum)\{\}|\\[&%$#_{}]", "", body.replace("$\\pm$", ""))
        cells = body.split(" & ")
        if len(cells) != width:
            problems.append(f"{len(cells)} cells, the tabular has {width}: {line}")
        problems += [f"unescaped {c!r} in: {line}" for cell in cells for c in LATEX_SPECIAL.findall(cell)]
    return problems


def test_latex_check_finds_unescaped_specials():
    """The check itself: it must flag the labels the collector used to print."""
    head = "\\begin{tabular}{lr}\nMethod & MAE \\\\ \\hline\n"
    assert latex_problems(head + "Vanilla (method.ranksim.interpolation_lambda=2) & 3.00 \\\\\n\\end{tabular}")
    assert latex_problems(head + "A & B & 3.00 \\\\\n\\end{tabular}")
    assert latex_problems(head + "x & 3.00 \\\\\nDuplicate runs:\n\\end{tabular}")
    assert not latex_problems(head + "a\\_b \\& c\\textbackslash{} & 3.00 $\\pm$ 0.1 \\\\\n\\end{tabular}\n% a_b & 50%")


def test_every_format_carries_labels_seeds_duplicates_and_unfinished_runs_and_latex_compiles(tmp_path):
    """Two interpolation_lambda values (row labels with '_'), a title with every LaTeX special, a
    duplicate and an unfinished run: the latex has no unescaped special, a seeds column and the
    notes as comments; the csv has the same notes as records; the markdown as before."""
    title = "Mine_1 & 100% #2 {x} ~^$\\"
    for lam, seeds in ((1, (0, 1)), (2, (0,))):
        for seed in seeds:
            resolved_run(tmp_path, f"l{lam}s{seed}", "quickstart/ranksim.yaml",
                         [f"method.ranksim.interpolation_lambda={lam}", f"seed={seed}"], metrics([3.0 + seed] * 4, [1.0] * 4))
    resolved_run(tmp_path, "l2s0_again", "quickstart/ranksim.yaml", ["method.ranksim.interpolation_lambda=2", "seed=0"],
                 metrics([9.0] * 4, [1.0] * 4))
    resolved_run(tmp_path, "mine", "quickstart/vanilla.yaml", [f"title='{title}'"], metrics([4.0] * 4, [1.0] * 4))
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "config.yaml").write_text((tmp_path / "mine" / "config.yaml").read_text())
    table = collect(discover_runs(tmp_path), "synthetic", columns=[])

    latex = render(table, "latex", diagnostics=True)
    assert latex_problems(latex) == [], latex
    assert "Vanilla + RankSim (method.ranksim.interpolation\\_lambda=1) & 2 & 3.50" in latex
    assert "Mine\\_1 \\& 100\\% \\#2 \\{x\\} \\textasciitilde{}\\textasciicircum{}\\$\\textbackslash{} & 1 & 4.00" in latex
    comments = [line for line in latex.splitlines() if line.startswith("%")]
    assert f"%   {tmp_path / 'l2s0_again'}: same as {tmp_path / 'l2s0'}" in comments
    assert any(str(unfinished) in line and "unfinished" in line for line in comments)

    records = list(csv.DictReader(io.StringIO(render(table, "csv"))))
    assert {r["title"] for r in records if not r["note"]} == {
        "Vanilla + RankSim (method.ranksim.interpolation_lambda=1)",
        "Vanilla + RankSim (method.ranksim.interpolation_lambda=2)", title}
    assert {r["seeds"] for r in records if r["title"].endswith("lambda=1)")} == {"0 1"}
    notes = [r["note"] for r in records if r["note"]]
    assert notes[0] == (f"duplicate run {tmp_path / 'l2s0_again'}: the same config and seed as {tmp_path / 'l2s0'}; "
                        "left out of the means")
    assert notes[1].startswith(f"run without results {unfinished}: unfinished") and len(notes) == 2

    markdown = render(table)
    assert f"  {tmp_path / 'l2s0_again'}: same as {tmp_path / 'l2s0'}" in markdown
    assert f"| {title} | 1 | 4.00 |" in markdown


def test_cli_latex_on_stdout_is_only_the_table(tmp_path):
    """`collect_results.py --format latex > table.tex`: notes are LaTeX comments, nothing on stderr."""
    resolved_run(tmp_path, "a", "quickstart/ranksim.yaml", ["seed=0"], metrics([3.0] * 4, [1.0] * 4))
    resolved_run(tmp_path, "b", "quickstart/ranksim.yaml", ["seed=0", "data.num_workers=3"], metrics([9.0] * 4, [1.0] * 4))
    proc = collect_cli(tmp_path, "--format", "latex")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert latex_problems(proc.stdout) == [] and "% Duplicate runs" in proc.stdout


def test_runs_set_aside_are_left_out_by_their_record_not_their_name(tmp_path):
    """A run the runner moved aside carries set_aside.json and is left out; a folder that merely
    ends in .stale1 is a run like any other."""
    from ranksim.engine.identity import record_set_aside

    make_run(tmp_path, "a", "agedb/vanilla", "VANILLA", seed=0, results=metrics([3.0] * 4, [1.0] * 4))
    make_run(tmp_path, "b.stale1", "agedb/vanilla", "VANILLA", seed=1, results=metrics([5.0] * 4, [1.0] * 4))
    make_run(tmp_path, "c", "agedb/vanilla", "VANILLA", seed=2, results=metrics([9.0] * 4, [1.0] * 4))
    make_run(tmp_path, "c/inner", "agedb/vanilla", "VANILLA", seed=3, results=metrics([9.0] * 4, [1.0] * 4))
    record_set_aside(tmp_path / "c", "its config.yaml differs from the config asked for")
    assert sorted(r.seed for r in discover_runs(tmp_path)) == [0, 1]  # c and the run inside it are left out
