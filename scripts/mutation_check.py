#!/usr/bin/env python
"""Mutation check: do the tests notice small, plausible bugs in the methods and their wiring?

    python scripts/mutation_check.py [--only SUBSTRING ...] [--list] [--no-baseline]

Each mutation below replaces one snippet of source, which must occur exactly once in its file,
in a temporary copy of the repository (the working tree's tracked and untracked, not ignored,
files), runs the test files named with it (``pytest -x``), and restores the file. A mutation is
*caught* when pytest reports a failing test; the check fails when any mutation is missed, when a
snippet is not found exactly once (someone edited that code: update the mutation), or when pytest
ends in any other way (a collection error, no test run), so that a stale mutation never passes as
caught. First, the union of the named test files must pass on the unmutated copy.

Not part of the default suite (it runs pytest about 25 times: a few minutes on 2 cores). Run it
before you stop whenever you change a method or the engine; set ``RANKSIM_TEST_DATA`` as for the
tests. Exit status 0 when every mutation is caught, 1 otherwise, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Mutation:
    name: str
    path: str               # file, relative to the repository root
    old: str                # must occur exactly once in the file
    new: str
    tests: tuple[str, ...]  # test files (or pytest node ids) that must catch it
    why: str                # what the bug would mean


STEP = ("tests/test_training_step.py",)
MUTATIONS = [
    # -- the wiring: what training feeds the methods (issue 28's six, then more of the engine) --
    Mutation("gamma dropped from the backward", "ranksim/engine/loop.py",
             "backward_loss = backward_loss + cfg.method.ranksim.gamma * world * ranksim_loss",
             "backward_loss = backward_loss + world * ranksim_loss", STEP,
             "a RankSim row trains without its weight"),
    Mutation("sample weights not passed to the loss", "ranksim/engine/loop.py",
             "self.loss_fn(pred.float(), targets / self.data.target_scale, weights)",
             "self.loss_fn(pred.float(), targets / self.data.target_scale, None)", STEP,
             "every SQINV / LDS row trains as vanilla"),
    Mutation("faithful head returns un-smoothed features", "ranksim/models/head.py",
             "returned = smoothed if (self.fds is not None and self.fds.faithful) else z",
             "returned = z", ("tests/test_fds.py", *STEP),
             "faithful FDS + RankSim rows regularise the wrong features"),
    Mutation("FDS variance clip keeps only its upper bound", "ranksim/methods/fds.py",
             "ratio.clamp_(self.clip_min, self.clip_max)", "ratio.clamp_(max=self.clip_max)",
             ("tests/test_fds.py",), "the lower clip is never applied"),
    Mutation("BNI buckets: LDS convolution without zero padding", "ranksim/methods/balanced_mse.py",
             'lds_sigma), mode="constant")', "lds_sigma))", ("tests/test_balanced_mse.py",),
             "edge buckets get reflected mass"),
    Mutation("BNI buckets on STS-B: centres become lower edges", "ranksim/methods/balanced_mse.py",
             "centres = (np.arange(STS_B_NUM_BINS) + 0.5) / 10.0", "centres = np.arange(STS_B_NUM_BINS) / 10.0",
             ("tests/test_balanced_mse.py",), "STS-B BNI integrates over shifted buckets"),
    Mutation("RankSim lambda not passed", "ranksim/engine/loop.py",
             "regularizer(features.float(), targets, r.interpolation_lambda,",
             "regularizer(features.float(), targets, 2.0,", STEP,
             "a non-default interpolation lambda is ignored"),
    Mutation("ConR weight dropped from the backward", "ranksim/engine/loop.py",
             "backward_loss = backward_loss + cfg.method.conr.weight * get_world_size() * conr_term",
             "backward_loss = backward_loss + get_world_size() * conr_term", STEP, "ConR trains with beta = 1"),
    Mutation("ConR ignores the sample weights", "ranksim/engine/loop.py",
             "weights.repeat(2, 1),\n", "torch.ones_like(weights).repeat(2, 1),\n", STEP,
             "re-weighted ConR rows push as unweighted ones"),
    Mutation("ConR never faithful", "ranksim/engine/loop.py",
             "faithful=self.cfg.method.faithful)",
             "faithful=False)", STEP,
             "faithful rows lose the authors' ConR denominator"),
    Mutation("RankSim sees the features detached", "ranksim/engine/loop.py",
             "ranksim_loss = self.ranksim_loss(features, targets)",
             "ranksim_loss = self.ranksim_loss(features.detach(), targets)", STEP,
             "the regularizer is logged but trains nothing"),
    Mutation("stop rule: ties no longer count as the worst", "ranksim/engine/loop.py",
             "max(history[-window:]) <= history[-1]", "max(history[-window:]) < history[-1]",
             ("tests/test_training_protocol.py",), "a flat validation history never stops STS-B runs"),
    Mutation("RRT stage 2 trains the encoder", "ranksim/engine/checkpoint.py",
             'param.requires_grad = name.startswith("head.linear.")', "param.requires_grad = True",
             ("tests/test_pipeline.py::test_rrt_loads_stage1_encoder_and_trains_only_the_regressor",),
             "RRT rows retrain the whole network"),
    # -- the kernels (caught before issue 28) --
    Mutation("blackbox backward sign flipped", "ranksim/methods/ranking.py",
             "grad = rank_normalised(perturbed).sub_(ranks)", "grad = ranks.sub(rank_normalised(perturbed))",
             ("tests/test_ranking.py",), "RankSim climbs its own loss"),
    Mutation("RankSim averages the rows instead of summing them", "ranksim/methods/regularizer.py",
             'F.mse_loss(feature_ranks, target_ranks, reduction="sum") / m',
             'F.mse_loss(feature_ranks, target_ranks, reduction="mean")',
             ("tests/test_ranking.py",), "gamma means something else than in the paper"),
    Mutation("RankSim label similarity without the absolute value", "ranksim/methods/regularizer.py",
             "distance = (labels[:, None] - by_label[None, :]).abs_()",
             "distance = (labels[:, None] - by_label[None, :])", ("tests/test_ranking.py",),
             "labels ranked by signed difference"),
    Mutation("LDS padding reflects", "ranksim/methods/lds.py",
             'density = convolve1d(density, weights=window, mode="constant")',
             'density = convolve1d(density, weights=window, mode="reflect")', ("tests/test_lds.py",),
             "edge ages get too small weights"),
    Mutation("FDS smoothing padding replicates", "ranksim/methods/fds.py",
             'F.pad(x, (self.half_ks, self.half_ks), mode="reflect")',
             'F.pad(x, (self.half_ks, self.half_ks), mode="replicate")', ("tests/test_fds.py",),
             "edge buckets are smoothed differently from the authors"),
    Mutation("FDS momentum inverted", "ranksim/methods/fds.py",
             "factor = torch.full_like(n, self.momentum)", "factor = torch.full_like(n, 1 - self.momentum)",
             ("tests/test_fds.py",), "running statistics forget too fast"),
    Mutation("many-shot threshold >= 100", "ranksim/evaluation/metrics.py",
             'np.where(counts > many_shot_thr, "many"', 'np.where(counts >= many_shot_thr, "many"',
             ("tests/test_metrics.py",), "ages with exactly 100 samples move region"),
    Mutation("few-shot threshold <= 20", "ranksim/evaluation/metrics.py",
             "np.where(counts < low_shot_thr,", "np.where(counts <= low_shot_thr,",
             ("tests/test_metrics.py",), "ages with exactly 20 samples move region"),
    Mutation("Pearson and Spearman swapped", "ranksim/evaluation/metrics.py",
             '"pearson": _correlation(stats.pearsonr, p, y),', '"pearson": _correlation(stats.spearmanr, p, y),',
             ("tests/test_metrics.py",), "the STS-B table prints Spearman as Pearson"),
    Mutation("ConR faithful denominator forgets the anchor", "ranksim/methods/conr.py",
             "extra = torch.log((n - n_pos).to(x.dtype))[:, None]",
             "extra = torch.log((n - n_pos - 1).clamp(min=1).to(x.dtype))[:, None]", ("tests/test_conr.py",),
             "faithful ConR differs from the authors'"),
    Mutation("GAI without its log-noise term", "ranksim/methods/balanced_mse.py",
             "+ 0.5 * torch.log(noise_var)", "+ 0.0 * torch.log(noise_var)", ("tests/test_balanced_mse.py",),
             "sigma is learnt from the wrong likelihood"),
    # -- the runner and the collector --
    Mutation("sweep values split at commas inside brackets", "ranksim/tools/sweep.py",
             'if char == "," and depth == 0:', 'if char == ",":', ("tests/test_sweep.py",),
             "a swept list value becomes several points"),
    Mutation("collector keeps duplicate seeds", "ranksim/results/report.py",
             "if run.seed in by_seed:", "if False:", ("tests/test_report.py",),
             "a seed run twice counts twice in mean and std"),
    Mutation("collector reports the population std over seeds", "ranksim/results/report.py",
             "statistics.stdev(values)", "statistics.pstdev(values)", ("tests/test_report.py",),
             "the spread over seeds is understated"),
    # -- run identity (ranksim/engine/identity.py): what the runner reuses and the collector groups --
    Mutation("the seed is operational again", "ranksim/engine/identity.py",
             '"output_dir",               # where the run was written',
             '"seed", "output_dir",       # where the run was written',
             ("tests/test_sweep.py", "tests/test_report.py"), "a sweep with a new seed serves the old seed's results"),
    Mutation("results version not checked", "ranksim/engine/identity.py",
             "if identity.results_version != RESULTS_VERSION:\n        return f\"made by",
             "if False:\n        return f\"made by", ("tests/test_sweep.py",), "runs of older code are tabled as current"),
    Mutation("RRT stage 2 without stage1.json counts as current", "ranksim/engine/identity.py",
             'return f"it is an RRT stage 2 without {STAGE1_FILE}', 'return None and f"it is an RRT stage 2 without {STAGE1_FILE}',
             ("tests/test_sweep.py",), "an RRT row whose stage 1 is unknown is reused"),
    Mutation("collector does not label converted weights", "ranksim/results/report.py",
             "[run.title, provenance_label(run.provenance),", '[run.title, "",', ("tests/test_report.py",),
             "the authors' weights look like our run in the table"),
    Mutation("resume keeps validations logged after the checkpoint", "ranksim/engine/checkpoint.py",
             "    if len(lines) > validations:", "    if False:", ("tests/test_run_identity.py",),
             "a killed and resumed run lists validations twice"),
    Mutation("training order shared across seeds", "ranksim/data/seeding.py",
             "generator = torch.Generator().manual_seed(pass_key(self.seed, self.epoch, self.stream) >> 1)",
             "generator = torch.Generator().manual_seed(self.seed + self.epoch)", ("tests/test_run_identity.py",),
             "seed 0's epoch 1 is seed 1's epoch 0"),
    Mutation("synthetic generator ignores a foreign folder", "ranksim/data/age/synthetic.py",
             "if root.is_dir() and not (root / RECORD_NAME).is_file() and any(root.iterdir()):",
             "if False:", ("tests/test_run_identity.py",), "a real dataset given as data.root is deleted"),
]


def working_tree_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, check=True,
                         capture_output=True).stdout.decode()
    return [f for f in out.split("\0") if f and (REPO / f).is_file()]


def copy_tree(dest: Path) -> None:
    for name in working_tree_files():
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, target)


def check_snippets(mutations: list[Mutation]) -> list[str]:
    """One line per mutation whose snippet is not in its file exactly once."""
    problems = []
    for m in mutations:
        path = REPO / m.path
        count = path.read_text().count(m.old) if path.is_file() else -1
        if count != 1:
            where = "file missing" if count < 0 else f"found {count} times"
            problems.append(f"{m.name}: snippet {m.old!r} in {m.path}: {where}, expected once")
    return problems


def run_tests(root: Path, tests: tuple[str, ...] | list[str], stop_first: bool = True) -> tuple[int, float, str]:
    env = dict(os.environ, PYTHONPATH=str(root), PYTHONDONTWRITEBYTECODE="1")
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *(["-x"] if stop_first else []), *tests]
    start = time.time()
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
    return proc.returncode, time.time() - start, (proc.stdout + proc.stderr)[-3000:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", metavar="SUBSTRING", help="run only mutations whose name contains one of these")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--no-baseline", action="store_true", help="skip the run of the unmutated tests")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTATIONS if not args.only or any(s in m.name for s in args.only)]
    if not chosen:
        print(f"error: no mutation name contains any of {args.only}; see --list", file=sys.stderr)
        return 2
    if args.list:
        for i, m in enumerate(chosen, 1):
            print(f"{i:2d}. {m.name} ({m.path}; {', '.join(m.tests)}): {m.why}")
        return 0
    problems = check_snippets(chosen)
    if problems:
        print("error: some mutations no longer match the source; update them in scripts/mutation_check.py:",
              *problems, sep="\n  ", file=sys.stderr)
        return 1

    rows, failed = [], False
    with tempfile.TemporaryDirectory(prefix="ranksim-mutation-") as tmp:
        root = Path(tmp)
        copy_tree(root)
        if not args.no_baseline:
            tests = sorted({t for m in chosen for t in m.tests})
            rc, seconds, tail = run_tests(root, tests, stop_first=False)
            print(f"baseline: {len(tests)} test files, exit {rc}, {seconds:.0f} s", flush=True)
            if rc != 0:
                print("error: the tests fail without any mutation, so nothing can be learnt from them:\n" + tail,
                      file=sys.stderr)
                return 1
        for m in chosen:
            path = root / m.path
            original = path.read_text()
            path.write_text(original.replace(m.old, m.new, 1))
            try:
                rc, seconds, tail = run_tests(root, m.tests)
            finally:
                path.write_text(original)
            result = {0: "MISSED", 1: "caught"}.get(rc, f"ERROR (pytest exit {rc})")
            failed |= result != "caught"
            rows.append((m, result, seconds))
            print(f"  {result:<8} {m.name} ({seconds:.0f} s)", flush=True)
            if result != "caught":
                print("    " + tail.replace("\n", "\n    ")[-1500:], flush=True)

    print("\n| # | mutation | file | tests | result |\n|---|---|---|---|---|")
    for i, (m, result, seconds) in enumerate(rows, 1):
        tests = ", ".join(t.removeprefix("tests/") for t in m.tests)
        print(f"| {i} | {m.name} | {m.path} | {tests} | {result} ({seconds:.0f} s) |")
    caught = sum(r == "caught" for _, r, _ in rows)
    print(f"\n{caught} of {len(rows)} mutations caught")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
