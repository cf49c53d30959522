#!/usr/bin/env python
"""Assemble scripts/gpu_check.sh's results into DIR/report.md and DIR/report.json.

    python scripts/gpu_check_report.py gpu_check

Reads what the steps left in DIR (``steps.jsonl``, ``cuda_tests.xml``, ``bench_train.json``,
``bench_compile.json``, ``bench_epoch.json``; any may be missing or partial when a step failed or
ran out of time), adds the environment (GPU, driver, versions, git commit, date), and projects
the wall time of one AgeDB-DIR row and of the whole table from the measured rates, with the
arithmetic written out (:func:`project_table`). A CPU run says so at the top: its figures are not
GPU figures.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# The projection arithmetic is shared with the reproduce scripts' --preflight (no torch import).
from ranksim.tools.preflight import duration, row_seconds  # noqa: E402
NINE_MINUTES = 540

# Split sizes and epochs of the age tables (SPEC 6-8; the README's GPU section).
DATASETS = {
    "AgeDB-DIR": {"train": 12_208, "val": 2_140, "test": 2_140, "epochs": 120},
    "IMDB-WIKI-DIR": {"train": 191_509, "val": 11_022, "test": 11_022, "epochs": 90},
}
# Row kinds of an age table (28 rows) and how many passes over the training set each epoch makes:
# (rows, training passes with a backward, forward-only passes). Every epoch also validates once
# (forward-only over val), and the run ends with one test pass. FDS rows add the statistics pass
# (forward-only over train); RRT stage 2 trains only the last layer, so its training pass costs
# about a forward pass.
ROW_KINDS = {
    "no FDS, no RRT": (10, 1, 0),
    "FDS": (10, 1, 1),
    "RRT stage 2": (4, 0, 1),
    "RRT stage 2 with FDS": (4, 0, 2),
}


# --------------------------------------------------------------------------------------------
# Projection


def project_table(train_rate: float, eval_rate: float, dataset: str = "AgeDB-DIR") -> dict:
    """Projected seconds per row kind and for the whole table (one seed), with the arithmetic."""
    sizes = DATASETS[dataset]
    n, v, t, e = sizes["train"], sizes["val"], sizes["test"], sizes["epochs"]
    kinds, total = {}, 0.0
    for kind, (rows, train_passes, forward_passes) in ROW_KINDS.items():
        seconds = row_seconds(sizes, train_rate, eval_rate, train_passes, forward_passes)
        terms = []
        if train_passes:
            terms.append(f"{n:,}/{train_rate:.1f}" if train_passes == 1 else f"{train_passes}×{n:,}/{train_rate:.1f}")
        if forward_passes:
            terms.append(f"{n:,}/{eval_rate:.1f}" if forward_passes == 1 else f"{forward_passes}×{n:,}/{eval_rate:.1f}")
        terms.append(f"{v:,}/{eval_rate:.1f}")
        formula = f"({' + '.join(terms)}) × {e} + {t:,}/{eval_rate:.1f} = {seconds:,.0f} s"
        kinds[kind] = {"rows": rows, "seconds_per_row": seconds, "formula": formula}
        total += rows * seconds
    return {"dataset": dataset, "train_rate": train_rate, "eval_rate": eval_rate, "kinds": kinds,
            "table_seconds": total,
            "table_formula": " + ".join(f"{k['rows']} × {k['seconds_per_row']:,.0f}" for k in kinds.values())
            + f" = {total:,.0f} s"}


# --------------------------------------------------------------------------------------------
# Inputs


def read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def read_steps(folder: Path) -> list[dict]:
    try:
        lines = (folder / "steps.jsonl").read_text().splitlines()
    except OSError:
        return []
    return [json.loads(line) for line in lines if line.strip()]


def read_junit(path: Path) -> dict | None:
    """Counts and the names of failed tests from pytest's ``--junitxml`` file."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return None
    cases = root.iter("testcase")
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    failed, skip_reasons = [], {}
    for case in cases:
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        if case.find("failure") is not None or case.find("error") is not None:
            counts["failed"] += 1
            failed.append(name)
        elif case.find("skipped") is not None:
            counts["skipped"] += 1
            reason = case.find("skipped").get("message", "")
            skip_reasons[reason] = skip_reasons.get(reason, 0) + 1
        else:
            counts["passed"] += 1
    return {**counts, "failed_tests": failed, "skip_reasons": skip_reasons}


def environment(benches: list[dict | None]) -> dict:
    """Date, versions, GPU and git state. torch is not imported (a second or more on a small CPU):
    its version comes from the package metadata, and the CUDA details from the benchmarks' JSON."""
    env = {"date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "host_cpus": os.cpu_count(),
           "python": platform.python_version(), "platform": platform.platform(),
           "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
    try:
        env["torch"] = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        env["torch"] = None
    for bench in benches:
        if bench:
            env["torch"] = bench.get("torch") or env["torch"]  # with its build tag (+cuXXX)
            env.setdefault("device", bench.get("device"))
            env.setdefault("cuda", bench.get("cuda"))
            for key in ("torch_cuda", "cudnn"):
                if bench.get(key) is not None:
                    env.setdefault(key, bench[key])
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        if smi.returncode == 0:
            env["nvidia_smi"] = smi.stdout.strip().splitlines()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        git = lambda *a: subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()  # noqa: E731
        env["git_commit"] = git("rev-parse", "HEAD") or None
        env["git_dirty"] = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        pass
    return env


# --------------------------------------------------------------------------------------------
# Report


def bottleneck_verdict(recipe: dict) -> str:
    epoch, loader = recipe.get("timed_epoch"), recipe.get("loader_only")
    if not epoch or not loader:
        return "not measured"
    headroom = loader["images_per_s"] / epoch["images_per_s"]
    util = (epoch.get("gpu_util") or {}).get("mean")
    text = f"loading alone runs {headroom:.1f}× as fast as training"
    if util is None:
        return text + " (no GPU utilisation: not on a GPU, or NVML and nvidia-smi unavailable)"
    text += f"; the GPU was busy {util:.0f}% of the time on average"
    if headroom < 1.3 or util < 60:
        return text + ": **loading limits training** (raise data.num_workers, or build the cache)"
    if util >= 85:
        return text + ": the GPU sets the pace, loading keeps up"
    return text + ": mostly GPU-bound, with some waiting on data or the host"


def steps_section(steps: list[dict]) -> list[str]:
    lines = ["| step | status | seconds | limit s | log |", "|---|---|---:|---:|---|"]
    for s in steps:
        status = {"ok": "ok", "timeout": "**ran out of time**"}.get(s["status"], f"**failed** (exit {s['rc']})")
        lines.append(f"| {s['name']} | {status} | {float(s['seconds']):.1f} | {s['limit_s']} | {s['log']} |")
    return lines


def bench_section(bench: dict | None, table: Path, title: str, step: str) -> list[str]:
    lines = [f"## {title}", ""]
    if not bench or not bench.get("rows") or not table.is_file():
        return lines + [f"No figures: step `{step}` did not produce any (see its log).", ""]
    # The benchmark's own table (bench_train.table_lines), from its markdown file.
    table_lines = [line for line in table.read_text().splitlines() if line.startswith("|")]
    lines += [f"{bench['device']}, model {bench['model']} at {bench['image_size']} px, FDS + RankSim, "
              f"{bench['warmup']} warm-up and {bench['steps']} timed steps per side, random on-device batches "
              f"(no data loading); ours: {bench['precision']}{', channels_last' if bench['channels_last'] else ''}.",
              ""] + table_lines + [""]
    if not bench.get("complete"):
        lines += ["*Incomplete: the step stopped before every batch size was measured.*", ""]
    return lines


def compile_verdict(compiled: dict | None) -> str | None:
    rows = {r["side"]: r for r in (compiled or {}).get("rows", [])}
    if "ours" not in rows or "ours_compiled" not in rows:
        return None
    gain = rows["ours_compiled"]["images_per_s"] / rows["ours"]["images_per_s"]
    verdict = "helps" if gain > 1.05 else "does not help enough to matter"
    return (f"torch.compile {verdict}: {gain:.2f}× the uncompiled step at batch {rows['ours']['batch']}, "
            f"after {rows['ours_compiled']['warmup_s']:.0f} s of warm-up including compilation "
            f"(uncompiled warm-up {rows['ours']['warmup_s']:.0f} s).")


def epoch_section(epoch: dict | None) -> list[str]:
    lines = ["## End-to-end epoch with data loading", ""]
    if not epoch or not epoch.get("data"):
        return lines + ["No figures: step `bench_epoch` did not produce any (see its log).", ""]
    d = epoch["data"]
    lines += [f"`{epoch['config']}` through `ranksim.engine.loop.Trainer` and its DataLoader, on {epoch['device']}. "
              f"Data: {d['images']:,} synthetic JPEGs of {d['jpeg_size']} px ({d['jpeg_kib']:.0f} KiB each), "
              f"AgeDB-like ages, split {d['split']['train']:,} / {d['split']['val']:,} / {d['split']['test']:,}; "
              f"generated in {d['generate_s']:.1f} s, uint8 cache built in {d['cache_build_s']:.1f} s "
              f"({d['images'] / max(d['cache_build_s'], 1e-9):,.0f} img/s on {d['cache_workers']} processes).", "",
              "| recipe | model | batch | workers | cache | warm-up epoch s | timed epoch img/s | loader alone img/s "
              "| GPU busy % (mean / median / min, samples) | host CPU busy % | peak GiB | eval img/s (train / val) |",
              "|---|---|---:|---:|---|---:|---:|---:|---|---:|---:|---|"]
    verdicts = []
    for name, r in epoch.get("recipes", {}).items():
        te, lo = r.get("timed_epoch"), r.get("loader_only")
        util = (te or {}).get("gpu_util")
        util_text = (f"{util['mean']:.0f} / {util['median']:.0f} / {util['min']:.0f}, {util['samples']}" if util
                     else f"- ({r.get('gpu_util_source', 'not measured')})")
        fmt = lambda v, f="{:.1f}": "-" if v is None else f.format(v)  # noqa: E731
        label = f"{name} ({', '.join(r['overrides']) or 'config as written'})"
        lines.append(
            f"| {label} | {r.get('model', '-')} {r.get('image_size', '')} px {r.get('precision', '')} | "
            f"{r.get('batch_size', '-')} | {r.get('num_workers', '-')} | {'yes' if r.get('cache') else 'no'} | "
            f"{fmt((r.get('warmup_epoch') or {}).get('seconds'))} | {fmt((te or {}).get('images_per_s'))} | "
            f"{fmt((lo or {}).get('images_per_s'))} | {util_text} | {fmt((te or {}).get('host_cpu_busy_pct'), '{:.0f}')} | "
            f"{fmt((te or {}).get('peak_gib'), '{:.2f}')} | {fmt((r.get('eval_train') or {}).get('images_per_s'))} / "
            f"{fmt((r.get('eval_val') or {}).get('images_per_s'))} |")
        verdicts.append(f"- **{name}**: {bottleneck_verdict(r)}.")
    lines += [""] + verdicts + [""]
    if not epoch.get("complete"):
        lines += ["*Incomplete: the step stopped before every recipe was measured.*", ""]
    lines += ["The timed epoch is the second one (the first starts the workers and selects kernels); the eval "
              "rate is `ranksim.engine.inference.predict` as validation runs it, a fresh loader included.", ""]
    return lines


def projection_section(epoch: dict | None, on_gpu: bool) -> tuple[list[str], dict]:
    lines = ["## Projected wall time of the AgeDB-DIR table", ""]
    projections = {}
    recipes = {name: r for name, r in ((epoch or {}).get("recipes") or {}).items()
               if r.get("timed_epoch") and r.get("eval_train")}
    if not recipes:
        return lines + ["No projection: the end-to-end epoch was not measured.", ""], projections
    if not on_gpu:
        lines += ["*These are CPU smoke-size rates (a narrow network on 16 px images): the arithmetic below is "
                  "shown so that it is checked, and the times mean nothing for a GPU.*", ""]
    lines += ["Seconds per row = (training passes × train / training rate + forward passes × train / eval rate "
              "+ val / eval rate) × epochs + test / eval rate, with AgeDB-DIR's 12,208 train, 2,140 val, "
              "2,140 test images and 120 epochs. The training rate is the timed epoch's (data loading "
              "included); the eval rate is the forward-only rate over the training set (validation, the FDS "
              "statistics pass, and the frozen-encoder training of RRT stage 2). Both were measured at the "
              "config's batch size; the table's rows without RankSim train at batch 256 and may run faster.", ""]
    for name, r in recipes.items():
        train_rate, eval_rate = r["timed_epoch"]["images_per_s"], r["eval_train"]["images_per_s"]
        p = project_table(train_rate, eval_rate)
        projections[name] = {"AgeDB-DIR": p, "IMDB-WIKI-DIR": project_table(train_rate, eval_rate, "IMDB-WIKI-DIR")}
        lines += [f"**{name}** ({', '.join(r['overrides']) or 'the config as written'}): training "
                  f"{train_rate:.1f} img/s, eval {eval_rate:.1f} img/s", "",
                  "| row kind | rows | per row | arithmetic |", "|---|---:|---:|---|"]
        for kind, k in p["kinds"].items():
            lines.append(f"| {kind} | {k['rows']} | {duration(k['seconds_per_row'])} | {k['formula']} |")
        imdb = projections[name]["IMDB-WIKI-DIR"]["table_seconds"]
        lines += [f"| **whole table, one seed** | 28 | **{duration(p['table_seconds'])}** | {p['table_formula']} |", "",
                  f"One row like this config (no FDS, no RRT): **{duration(p['kinds']['no FDS, no RRT']['seconds_per_row'])}**. "
                  f"The same rates on IMDB-WIKI-DIR (191,509 train, 11,022 val, 90 epochs) give "
                  f"{duration(imdb)} for its table.", ""]
    return lines, projections


def build_report(folder: Path) -> tuple[str, dict]:
    run = read_json(folder / "run.json") or {}
    steps = read_steps(folder)
    tests = read_junit(folder / "cuda_tests.xml")
    bench = read_json(folder / "bench_train.json")
    compiled = read_json(folder / "bench_compile.json")
    epoch = read_json(folder / "bench_epoch.json")
    env = environment([bench, compiled, epoch])
    on_gpu = run.get("mode") == "gpu"  # the script found CUDA available
    elapsed = time.time() - run["started"] if "started" in run else None

    lines = ["# GPU check report", ""]
    if on_gpu:
        gpu = env.get("device") or (env.get("nvidia_smi") or ["unknown GPU"])[0]
        lines += [f"**GPU: {gpu}**, {env.get('date_utc')}.", ""]
    else:
        lines += ["**NOT GPU FIGURES.** This run was on the CPU at the tiny smoke size "
                  f"({run.get('reason', 'no CUDA device was available')}). "
                  "Every rate below only shows that the script and its arithmetic work; none of it "
                  "measures or predicts GPU performance.", ""]
    lines += [f"- date: {env.get('date_utc')}; git commit {env.get('git_commit')}"
              f"{' (uncommitted changes)' if env.get('git_dirty') else ''}",
              f"- torch {env.get('torch')} (CUDA {env.get('torch_cuda')}, cuDNN {env.get('cudnn')}), "
              f"Python {env.get('python')}, {env.get('host_cpus')} CPUs, {env.get('platform')}"]
    if env.get("nvidia_smi"):
        lines.append(f"- nvidia-smi: {'; '.join(env['nvidia_smi'])}")
    if elapsed is not None:
        within = "within" if elapsed <= NINE_MINUTES else "**over**"
        lines.append(f"- steps 1-4 and this report took {elapsed:.0f} s ({within} the 9-minute budget)")
    lines += ["", "## Steps", ""] + steps_section(steps) + [""]

    lines += ["## CUDA-marked tests (`pytest -m cuda`)", ""]
    if tests is None:
        lines += ["No result file: the step did not finish (see its log).", ""]
    else:
        lines.append(f"{tests['passed']} passed, {tests['failed']} failed, {tests['skipped']} skipped.")
        for reason, count in tests["skip_reasons"].items():
            lines.append(f"- skipped {count}: {reason}")
        for name in tests["failed_tests"]:
            lines.append(f"- FAILED {name}")
        lines.append("")

    lines += bench_section(bench, folder / "bench_train.md", "Training step: ours vs the authors' recipe", "bench_train")
    if on_gpu:
        lines += bench_section(compiled, folder / "bench_compile.md", "torch.compile", "bench_compile")
        verdict = compile_verdict(compiled)
        if verdict:
            lines += [verdict, ""]
    lines += epoch_section(epoch)
    projection_lines, projections = projection_section(epoch, on_gpu)
    lines += projection_lines
    raw = {"run": run, "environment": env, "on_gpu": on_gpu, "elapsed_s": elapsed, "steps": steps,
           "cuda_tests": tests, "bench_train": bench, "bench_compile": compiled, "bench_epoch": epoch,
           "projection": projections}
    return "\n".join(lines) + "\n", raw


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="the output folder of scripts/gpu_check.sh")
    args = parser.parse_args(argv)
    if not args.folder.is_dir():
        print(f"error: {args.folder} is not a folder; run scripts/gpu_check.sh first", file=sys.stderr)
        return 2
    text, raw = build_report(args.folder)
    (args.folder / "report.json").write_text(json.dumps(raw, indent=1))
    (args.folder / "report.md").write_text(text)
    print(f"wrote {args.folder / 'report.md'} and report.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
