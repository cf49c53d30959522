#!/usr/bin/env python
"""Controlled runs behind the README's "What RankSim does to the features" (issue 10).

Each experiment is one quick-start config with ``key=value`` overrides, run through ``train.py``
for every seed into ``<out>/<experiment>/seed<N>/`` by the sweep runner
(:func:`ranksim.tools.sweep.run_points`): finished runs are skipped, interrupted ones resumed, and a
folder holding another config is refused, so the script can be stopped and started again. Every run records the feature diagnostics of
:class:`ranksim.evaluation.diagnostics.FeatureDiagnostics` on the validation split at each epoch
(``metrics.jsonl``). The table and the figure use the validation split only: nothing here reads
test results.

    python scripts/ranksim_collapse.py                       # every experiment, seed 0
    python scripts/ranksim_collapse.py --only w8 w8_center --seeds 0 1 2 --jobs 3
    python scripts/ranksim_collapse.py --report-only         # table and figure from finished runs

Writes ``<out>/collapse.md`` (one row per experiment: the last validation's diagnostics and the
best validation MAE, mean ± std over the finished seeds) and ``<out>/collapse.png`` (the
validation regularizer and cosine similarity per epoch).
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

logger = logging.getLogger("ranksim.collapse")

QS = "configs/quickstart"
# name -> (config, overrides, what the row tests). Vanilla and RankSim come in pairs that differ
# only in RankSim, so each factor is switched on and off with the regularizer.
EXPERIMENTS: dict[str, tuple[str, list[str], str]] = {
    "w8_vanilla": (f"{QS}/vanilla.yaml", [], "the old quick start: width 8, 32-d pooled ReLU features"),
    "w8_ranksim": (f"{QS}/ranksim.yaml", [], "the same with RankSim (gamma 100, lambda 2)"),
    "w8_ranksim_center": (f"{QS}/ranksim.yaml", ["method.ranksim.center_features=true"],
                          "RankSim on batch-centred features: the common component removed"),
    "w8_ranksim_center_g10": (f"{QS}/ranksim.yaml", ["method.ranksim.center_features=true", "method.ranksim.gamma=10"],
                              "centred features, gamma 10"),
    "w8_ranksim_center_g1": (f"{QS}/ranksim.yaml", ["method.ranksim.center_features=true", "method.ranksim.gamma=1"],
                             "centred features, gamma 1"),
    "w8_ranksim_center_g0.1": (f"{QS}/ranksim.yaml", ["method.ranksim.center_features=true", "method.ranksim.gamma=0.1"],
                               "centred features, gamma 0.1"),
    "w32_vanilla": (f"{QS}/vanilla.yaml", ["model.width=32"], "feature dimension 128"),
    "w32_ranksim": (f"{QS}/ranksim.yaml", ["model.width=32"], "feature dimension 128 with RankSim"),
    "w32_ranksim_center": (f"{QS}/ranksim.yaml", ["model.width=32", "method.ranksim.center_features=true"],
                           "feature dimension 128, RankSim on centred features"),
    "r50_vanilla": (f"{QS}/vanilla.yaml", ["model.name=resnet50", "schedule.epochs=5", "schedule.milestones=[4]"],
                    "the paper's ResNet-50, 2048-d features, 5 epochs"),
    "r50_ranksim": (f"{QS}/ranksim.yaml", ["model.name=resnet50", "schedule.epochs=5", "schedule.milestones=[4]"],
                    "the paper's ResNet-50 with RankSim, 5 epochs"),
}


# ---------------------------------------------------------------------------------------------
# Probes: short controlled trainings outside train.py, where the loss itself can be switched


PROBES: dict[str, dict] = {
    # name -> settings; every probe trains the quick-start width-8 net on the synthetic data
    "task_only": dict(task=1.0, ranksim=0.0),
    "ranksim_only": dict(task=0.0, ranksim=1.0),
    "ranksim_only_center": dict(task=0.0, ranksim=1.0, center=True),
    "ranksim_only_sgd": dict(task=0.0, ranksim=1.0, optimizer="sgd", lr=0.1),
    "ranksim_only_lambda50": dict(task=0.0, ranksim=1.0, lam=50.0),
    "ranksim_only_bn_eval": dict(task=0.0, ranksim=1.0, bn_eval=True),
    "both_gamma100": dict(task=1.0, ranksim=100.0),
    "both_gamma100_center": dict(task=1.0, ranksim=100.0, center=True),
    "ranksim_only_w32": dict(task=0.0, ranksim=1.0, width=32),
    "ranksim_only_small_step": dict(task=0.0, ranksim=0.01),  # Adam undoes the scale: only lambda*g shrinks
    # The paper's models: ResNet-50 (2048-d) at the quick start's 32 px, and the STS-B CPU BiLSTM
    # on the real STS-B-DIR split (--sts-b-root), batch 16.
    "r50_task_only": dict(task=1.0, ranksim=0.0, model="resnet50"),
    "r50_ranksim_only": dict(task=0.0, ranksim=1.0, model="resnet50"),
    "r50_ranksim_only_center": dict(task=0.0, ranksim=1.0, model="resnet50", center=True),
    "stsb_task_only": dict(task=1.0, ranksim=0.0, config="configs/sts_b/cpu_vanilla.yaml"),
    "stsb_ranksim_only": dict(task=0.0, ranksim=1.0, config="configs/sts_b/cpu_vanilla.yaml"),
    "stsb_ranksim_only_center": dict(task=0.0, ranksim=1.0, config="configs/sts_b/cpu_vanilla.yaml", center=True),
}


def probe(name: str, steps: int, seed: int = 0, every: int = 0, sts_b_root: str = "data/sts-b-dir") -> list[dict]:
    """Train for ``steps`` steps with the probe's loss; the val diagnostics at 0, every, ..., steps."""
    import torch
    from torch import nn

    from ranksim.evaluation.diagnostics import FeatureDiagnostics
    from ranksim.config import load_config
    from ranksim.data.build import build_data
    from ranksim.engine.inference import predict
    from ranksim.models import build_model
    from ranksim.methods.regularizer import batchwise_ranking_regularizer

    p = dict(dict(task=1.0, ranksim=0.0, center=False, optimizer="adam", lr=1e-3, lam=2.0, bn_eval=False, width=8,
                  model="resnet_small", config=f"{QS}/vanilla.yaml"), **PROBES[name])
    overrides = [f"seed={seed}", "logging.progress=false"]
    if p["config"].startswith(QS):
        overrides += [f"model.width={p['width']}", f"model.name={p['model']}"]
    else:
        overrides += [f"data.root={sts_b_root}"]
    cfg = load_config(REPO / p["config"], overrides)
    torch.manual_seed(seed)
    data = build_data(cfg)
    model = build_model(cfg, data.binning, data.vocab_size, data.embeddings)
    optim = (torch.optim.Adam(model.parameters(), lr=p["lr"]) if p["optimizer"] == "adam"
             else torch.optim.SGD(model.parameters(), lr=p["lr"], momentum=0.9))
    loader = torch.utils.data.DataLoader(data.train, batch_size=cfg.optim.batch_size, shuffle=True, drop_last=True,
                                         collate_fn=data.collate, generator=torch.Generator().manual_seed(seed))
    diagnostics, curve, step = None, [], 0
    generator = torch.Generator().manual_seed(seed)

    def measure():
        nonlocal diagnostics
        preds, labels, features = predict(model, data.val, data, cfg, torch.device("cpu"), with_features=True)
        diagnostics = diagnostics or FeatureDiagnostics(labels, cfg.optim.batch_size, 2.0, seed=seed)
        curve.append({"step": step, "val_mae": float(np.abs(preds - labels).mean()), **diagnostics(features)})
        logger.info("probe %s step %d: %s", name, step, curve[-1])

    measure()
    while step < steps:
        for images, targets, _ in loader:
            model.train()
            if p["bn_eval"]:
                for m in model.modules():
                    if isinstance(m, nn.BatchNorm2d):
                        m.eval()
            pred, z = model(images)
            task = (pred - targets / data.target_scale)
            loss = p["task"] * (task.abs().mean() if cfg.method.loss == "l1" else task.square().mean())
            if p["ranksim"]:
                loss = loss + p["ranksim"] * batchwise_ranking_regularizer(z, targets, p["lam"], generator,
                                                                           center_features=p["center"])
            optim.zero_grad()
            loss.backward()
            optim.step()
            step += 1
            if every and step % every == 0 and step < steps:
                measure()
            if step >= steps:
                break
    measure()
    return curve


def run_probes(out: Path, names: list[str], steps: int, jobs: int, sts_b_root: str) -> str:
    # One process per probe: threads would share torch's global generator, so the nets' initial
    # weights would depend on the order in which the threads ran.
    os.environ["OMP_NUM_THREADS"] = "1"
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        runs = [pool.submit(probe, n, steps, 0, max(1, steps // 4), sts_b_root) for n in names]
        curves = dict(zip(names, (run.result() for run in runs)))
    path = out / "probes.json"
    stored = json.loads(path.read_text()) if path.is_file() else {}
    stored.update(curves)
    path.write_text(json.dumps(stored, indent=1))
    curves = stored
    keys = ("ranksim_reg", "rank_corr", "cos_mean", "cos_p05", "val_mae")
    lines = ["| probe | settings | " + " | ".join(f"{k} start → end" for k in keys) + " |",
             "|---|---|" + "---|" * len(keys)]
    for name, curve in curves.items():
        cells = [f"{curve[0][k]:.3f} → {curve[-1][k]:.3f}" for k in keys]
        lines.append(f"| {name} | {PROBES[name]} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    (out / "probes.md").write_text(f"{steps} steps, seed 0, diagnostics on the validation split\n\n{table}\n")
    return table


def points(out: Path, names: list[str], seeds: list[int], extra: list[str]):
    """The runs as points of :func:`ranksim.tools.sweep.run_points`, which skips, resumes and checks them."""
    from ranksim.tools.sweep import Point

    return [Point(f"{name}/seed{seed}", REPO / EXPERIMENTS[name][0],
                  [*EXPERIMENTS[name][1], *extra, f"seed={seed}", f"output_dir={out / name / f'seed{seed}'}",
                   "logging.progress=false"], out / name / f"seed{seed}")
            for name in names for seed in seeds]


def read_run(run_dir: Path) -> dict | None:
    path = run_dir / "metrics.jsonl"
    if not (run_dir / "results.json").is_file() or not path.is_file():
        return None
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    diag = [r["val_diagnostics"] for r in records if "val_diagnostics" in r]
    best = min(records, key=lambda r: r["val"]["all"]["mae"])
    return {"curve": diag, "last": diag[-1] if diag else {}, "best_val": best["val"]}


def report(out: Path, names: list[str], seeds: list[int] | None = None) -> str:
    """The table (and figure) over the finished runs of ``seeds`` (all finished seeds when None)."""
    keys = ("ranksim_reg", "rank_corr", "cos_mean", "cos_p05")
    lines = ["| experiment | seeds | " + " | ".join(f"{k} (val, last epoch)" for k in keys)
             + " | best val MAE all | best val MAE few | what it tests |",
             "|---|---|" + "---|" * (len(keys) + 3)]
    curves = {}
    for name in names:
        folders = [d for d in sorted((out / name).glob("seed*")) if d.is_dir()
                   and (seeds is None or d.name in {f"seed{s}" for s in seeds})]
        runs = [r for r in map(read_run, folders) if r]
        if not runs:
            continue
        curves[name] = [r["curve"] for r in runs]

        def cell(values):
            values = [v for v in values if v is not None]
            if not values:
                return "n/a"
            return f"{np.mean(values):.3f}" + (f" ± {np.std(values, ddof=1):.3f}" if len(values) > 1 else "")
        row = [cell([r["last"].get(k) for r in runs]) for k in keys]
        row += [cell([r["best_val"]["all"]["mae"] for r in runs]),
                cell([(r["best_val"]["few"] or {}).get("mae") for r in runs])]
        lines.append(f"| {name} | {len(runs)} | " + " | ".join(row) + f" | {EXPERIMENTS[name][2]} |")
    table = "\n".join(lines)
    (out / "collapse.md").write_text(table + "\n")
    _figure(out / "collapse.png", curves)
    return table


def _figure(path: Path, curves: dict) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for name, runs in curves.items():
        style = "--" if "vanilla" in name else "-"
        for i, key in enumerate(("ranksim_reg", "rank_corr", "cos_mean")):
            values = np.array([[d.get(key, np.nan) for d in run] for run in runs if len(run) == len(runs[0])], float)
            if values.size:
                axes[i].plot(np.nanmean(values, axis=0), style, label=name)
    for ax, title in zip(axes, ("RankSim regularizer (val batches)", "rank correlation (val)", "mean cosine similarity (val)")):
        ax.set_title(title)
        ax.set_xlabel("epoch")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=list(EXPERIMENTS), default=list(EXPERIMENTS),
                        help="experiments to run (default: all)")
    parser.add_argument("--seeds", nargs="+", type=int, default=None,
                        help="seeds per experiment (default 0); the table covers these seeds "
                             "(with no --seeds, every finished seed)")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "ranksim_collapse", help="where the runs go")
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel (default 1)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads per run (default: the machine's cores divided by --jobs)")
    parser.add_argument("--python", default=sys.executable, help="the interpreter that runs train.py")
    parser.add_argument("--report-only", action="store_true", help="only write the table and figure")
    parser.add_argument("--probes", nargs="*", choices=list(PROBES), default=None,
                        help="instead of train.py runs, short controlled trainings whose loss is switched "
                             "(task only, RankSim only, ...); with no names, all of them")
    parser.add_argument("--sts-b-root", default="data/sts-b-dir",
                        help="the prepared STS-B-DIR split for the stsb_* probes (default data/sts-b-dir)")
    parser.add_argument("--probe-steps", type=int, default=165, help="training steps per probe (default 165, 3 epochs)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides for every run")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.probes is not None:
        print(run_probes(args.out, args.probes or list(PROBES), args.probe_steps, args.jobs, args.sts_b_root))
        return 0
    status = 0
    if not args.report_only:
        from ranksim.tools.sweep import report_failures, run_points

        # Each run's torch threads: the cores shared out, so that parallel runs do not oversubscribe.
        os.environ["OMP_NUM_THREADS"] = str(args.threads or max(1, (os.cpu_count() or 1) // args.jobs))
        outcomes = run_points(points(args.out, args.only, args.seeds or [0], args.overrides), [args.python, str(REPO / "train.py")],
                              jobs=args.jobs)
        status = report_failures(outcomes, "runs")
    print(report(args.out, args.only, args.seeds))
    logger.info("written %s and %s", args.out / "collapse.md", args.out / "collapse.png")
    return status


if __name__ == "__main__":
    sys.exit(main())
