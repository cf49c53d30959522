"""scripts/gpu_check.sh at its CPU size, and the arithmetic of its report.

The script's GPU run cannot happen here; what can rot without a GPU is the script itself, the
benchmarks it calls, the report's parsing and the projection, so the CPU run below goes through
all of them. Step 1 is given a test that sleeps far past its limit, which checks that a step
that runs out of time is reported and does not stop the others; the other steps get limits far
above what they need, so that a loaded machine cannot make the test fail.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tiny import load_script

REPO = Path(__file__).resolve().parents[1]


report = load_script("gpu_check_report")


def reference_row_seconds(train, val, test, epochs, train_rate, eval_rate, kind):
    """The row time written out case by case, as the README's estimate section does it."""
    if kind == "no FDS, no RRT":
        per_epoch = train / train_rate + val / eval_rate
    elif kind == "FDS":               # + the statistics pass, forward-only over train
        per_epoch = train / train_rate + train / eval_rate + val / eval_rate
    elif kind == "RRT stage 2":       # only the last layer trains: a forward pass over train
        per_epoch = train / eval_rate + val / eval_rate
    else:                             # RRT stage 2 with FDS: that, plus the statistics pass
        per_epoch = 2 * train / eval_rate + val / eval_rate
    return epochs * per_epoch + test / eval_rate


def test_projection_matches_hand_arithmetic():
    """Training 1000 img/s, eval 3000 img/s on AgeDB-DIR (12,208 / 2,140 / 2,140, 120 epochs):
    a plain row is (12.208 + 0.71333) x 120 + 0.71333 = 1551.27 s; FDS adds 4.06933 x 120 = 488.32 s
    (2039.59 s); RRT stage 2 is (4.06933 + 0.71333) x 120 + 0.71333 = 574.63 s, with FDS
    (8.13867 + 0.71333) x 120 + 0.71333 = 1062.95 s; the table is 10, 10, 4 and 4 of these:
    15,512.7 + 20,395.9 + 2,298.5 + 4,251.8 = 42,459.0 s."""
    p = report.project_table(1000.0, 3000.0)
    expected = {"no FDS, no RRT": 1551.2733, "FDS": 2039.5933, "RRT stage 2": 574.6333, "RRT stage 2 with FDS": 1062.9533}
    for kind, seconds in expected.items():
        assert p["kinds"][kind]["seconds_per_row"] == pytest.approx(seconds, abs=1e-3)
        assert p["kinds"][kind]["formula"].endswith(f"= {seconds:,.0f} s")
    assert p["table_seconds"] == pytest.approx(42459.01, abs=1e-2)
    assert [k["rows"] for k in p["kinds"].values()] == [10, 10, 4, 4]


def test_projection_reproduces_the_readme_estimate():
    """With the README's assumptions (938 img/s training, a forward pass a third of a step) the
    projection gives its numbers: a VANILLA row (12,208 + 2,140/3) x 120 / 938 = 1,653 s (plus
    the test pass, 0.8 s) and about 13 GPU-hours for the table."""
    p = report.project_table(938.0, 3 * 938.0)
    assert p["kinds"]["no FDS, no RRT"]["seconds_per_row"] == pytest.approx((12208 + 2140 / 3) * 120 / 938 + 2140 / 2814)
    assert 12.5 < p["table_seconds"] / 3600 < 13.0
    imdb = report.project_table(938.0, 3 * 938.0, "IMDB-WIKI-DIR")
    assert imdb["kinds"]["no FDS, no RRT"]["seconds_per_row"] / 3600 == pytest.approx(5.2, abs=0.05)  # README: 5.2 h


def test_read_junit_counts_and_names_failures(tmp_path):
    xml = tmp_path / "j.xml"
    xml.write_text(
        '<?xml version="1.0"?><testsuites><testsuite name="pytest">'
        '<testcase classname="tests.test_a" name="test_ok[cuda]"/>'
        '<testcase classname="tests.test_a" name="test_bad[cuda]"><failure message="boom"/></testcase>'
        '<testcase classname="tests.test_b" name="test_err[cuda]"><error message="setup"/></testcase>'
        '<testcase classname="tests.test_b" name="test_skip[cuda]"><skipped message="CUDA is not available"/></testcase>'
        '</testsuite></testsuites>')
    got = report.read_junit(xml)
    assert (got["passed"], got["failed"], got["skipped"]) == (1, 2, 1)
    assert got["failed_tests"] == ["tests.test_a::test_bad[cuda]", "tests.test_b::test_err[cuda]"]
    assert got["skip_reasons"] == {"CUDA is not available": 1}
    assert report.read_junit(tmp_path / "missing.xml") is None


def test_bottleneck_verdict():
    def recipe(train, loader, util):
        return {"timed_epoch": {"images_per_s": train, "gpu_util": None if util is None else {"mean": util}},
                "loader_only": {"images_per_s": loader}}
    assert "loading limits training" in report.bottleneck_verdict(recipe(1000, 1100, 95))
    assert "loading limits training" in report.bottleneck_verdict(recipe(1000, 5000, 40))
    assert "GPU sets the pace" in report.bottleneck_verdict(recipe(1000, 5000, 95))
    assert "no GPU utilisation" in report.bottleneck_verdict(recipe(1000, 5000, None))
    assert report.bottleneck_verdict({}) == "not measured"


def test_bench_train_table_ratio_is_to_the_authors_side_of_the_same_batch():
    sys.path.insert(0, str(REPO / "benchmarks"))
    from bench_train import table_lines
    rows = [{"batch": 64, "side": "ours", "images_per_s": 300.0, "peak_gib": 2.0, "warmup_s": 1.0},
            {"batch": 64, "side": "authors", "images_per_s": 100.0, "peak_gib": 3.0, "warmup_s": 1.0},
            {"batch": 256, "side": "ours", "images_per_s": 500.0, "peak_gib": None, "warmup_s": 1.0},
            {"batch": 256, "side": "authors", "images_per_s": 125.0, "peak_gib": None, "warmup_s": 1.0}]
    lines = table_lines(rows)
    assert "| 64 | ours | 300.0 | 3.00x | 2.00 |" in lines[2]
    assert "| 256 | ours | 500.0 | 4.00x | - |" in lines[4]
    assert table_lines(rows[2:3])[2].split("|")[4].strip() == "-"  # no baseline measured: no ratio


def test_gpu_check_script_on_cpu(tmp_path):
    """The whole script at its CPU size: it finishes, writes the report and the raw JSON, says that
    it is not on a GPU, and reports step 1 (a test that sleeps past its limit) as out of time
    while the others run."""
    out = tmp_path / "gpu_check"
    sleeper = tmp_path / "sleeper" / "test_sleeps.py"
    sleeper.parent.mkdir()
    sleeper.write_text("import time\nimport pytest\n\n\n@pytest.mark.cuda\ndef test_sleeps():\n"
                       "    time.sleep(3600)\n")
    generous = "1800"  # the CPU steps take seconds; only a hang reaches this
    env = dict(os.environ, PY=sys.executable, GPU_CHECK_T_TESTS="5", GPU_CHECK_T_BENCH=generous,
               GPU_CHECK_T_EPOCH=generous, GPU_CHECK_T_REPORT=generous)
    proc = subprocess.run(["bash", "scripts/gpu_check.sh", "--cpu-tiny", "--out", str(out), "--tests", str(sleeper)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=3 * 1800 + 60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    steps = {s["name"]: s for s in map(json.loads, (out / "steps.jsonl").read_text().splitlines())}
    assert steps["cuda_tests"]["status"] == "timeout"
    assert [steps[n]["status"] for n in ("bench_train", "bench_epoch")] == ["ok", "ok"], \
        {n: (out / s["log"]).read_text()[-2000:] for n, s in steps.items()}
    assert "bench_compile" not in steps  # GPU only

    text = (out / "report.md").read_text()
    assert "NOT GPU FIGURES" in text
    assert "| cuda_tests | **ran out of time** |" in text

    raw = json.loads((out / "report.json").read_text())
    assert raw["on_gpu"] is False
    bench = raw["bench_train"]
    assert bench["complete"] and {r["side"] for r in bench["rows"]} == {"ours", "authors"}
    assert all(r["images_per_s"] > 0 for r in bench["rows"])
    epoch = raw["bench_epoch"]
    assert epoch["complete"] and epoch["tiny"] and epoch["config"] == "configs/agedb/sqinv_ranksim.yaml"
    paper = epoch["recipes"]["paper"]
    assert paper["cache"] and paper["num_workers"] == 2 and paper["train_samples"] == 64
    assert paper["timed_epoch"]["images"] == 64 and paper["loader_only"]["images"] == 64
    assert paper["timed_epoch"]["gpu_util"] is None and paper["gpu_util_source"] == "no GPU"
    # The projection in the report is the arithmetic above applied to the measured rates.
    train_rate, eval_rate = paper["timed_epoch"]["images_per_s"], paper["eval_train"]["images_per_s"]
    projected = raw["projection"]["paper"]["AgeDB-DIR"]
    for kind, k in projected["kinds"].items():
        assert k["seconds_per_row"] == pytest.approx(
            reference_row_seconds(12208, 2140, 2140, 120, train_rate, eval_rate, kind))
    assert projected["kinds"]["no FDS, no RRT"]["formula"] in text
