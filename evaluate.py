#!/usr/bin/env python
"""Evaluate a finished run (or one checkpoint) on its validation or test split.

    python evaluate.py runs/quickstart/ranksim/20261128-120000 [--split test]
    python evaluate.py path/to/best.pt --split val
    python evaluate.py RUN --per-label --plots [--save-features] [--compare OTHER_RUN ...]

Loads the checkpoint strictly with the config stored in it, prints every metric per shot region and
the feature diagnostics (ranksim.evaluation.diagnostics.FeatureDiagnostics), and writes eval_<split>.json next to
the checkpoint's run folder. Optionally:

- ``--per-label``: ``per_label_<split>.csv`` (label_bin, label, count, mae, mse, region);
- ``--save-features``: ``features_<split>.npz`` (features, labels, preds), reused by ``--plots``;
- ``--plots``: PNGs in ``<run>/plots/``: the training label histogram, the per-label MAE and MSE,
  and the per-label rank correlation of feature and label similarity (what RankSim optimises);
- ``--compare RUN ...``: the per-label curves of other runs on the same axes (implies ``--plots``).

Checkpoints are read with ``torch.load(weights_only=True)``: a file holding anything beyond
tensors and plain types is refused (exit 2) unless ``--trust-checkpoint`` is given, which is only
for files you trust. The authors' released checkpoints are converted first
(``python -m ranksim.convert authors --help``).

The computations live in ``ranksim/evaluation/diagnostics.py`` and ``ranksim/results/run_outputs.py``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from ranksim.engine.runs import TRUST_HELP


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Evaluate a trained run per shot region (many/medium/few).",
        epilog="Put --compare after the run folder: evaluate.py RUN --plots --compare OTHER1 OTHER2")
    parser.add_argument("target", type=Path, metavar="RUN_DIR_OR_CHECKPOINT",
                        help="a run folder (uses checkpoints/best.pt) or a .pt checkpoint file")
    parser.add_argument("--split", choices=("val", "test"), default="test", help="which split to evaluate (default test)")
    parser.add_argument("--device", default=None, help="auto (default), cpu, cuda or cuda:N")
    parser.add_argument("--data-root", default=None, help="read the data from here instead of the path in the config")
    parser.add_argument("--output", type=Path, default=None,
                        help="where to write the JSON (default: eval_<split>.json in the run folder)")
    parser.add_argument("--per-label", action="store_true",
                        help="write per_label_<split>.csv in the run folder: label_bin, label (bin lower edge), "
                             "count, mae, mse, region (many/medium/few from the training labels)")
    parser.add_argument("--plots", action="store_true",
                        help="write PNGs into <run>/plots/: label_histogram, per_label_mae, per_label_mse, "
                             "rank_correlation (of the split evaluated last); reuses features_<split>.npz when "
                             "it was made by the same checkpoint")
    parser.add_argument("--save-features", action="store_true",
                        help="write features_<split>.npz in the run folder (features, labels, preds)")
    parser.add_argument("--features-dtype", choices=("float32", "float16"), default="float32",
                        help="dtype of the saved features (float16 halves the file; default float32)")
    parser.add_argument("--compare", type=Path, nargs="+", default=[], metavar="RUN",
                        help="other run folders (same dataset and split) drawn on the same axes; implies --plots")
    parser.add_argument("--trust-checkpoint", action="store_true", help=TRUST_HELP)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return evaluate_target(args)
    except KeyboardInterrupt:
        # One line, as train.py gives: each output file is written whole or not at all.
        logging.getLogger("ranksim").error("interrupted; run the same command again to evaluate %s", args.target)
        return 130


def evaluate_target(args: argparse.Namespace) -> int:
    from ranksim.evaluation.diagnostics import FeatureDiagnostics, diagnostics_line, per_label_table, write_per_label_csv
    from ranksim.results.run_outputs import legend_labels, load_compare_run, load_run, save_features, write_plots
    from ranksim.tools.convert import is_converted_run
    from ranksim.data.files import atomic_write
    from ranksim.engine.inference import region_metrics, selection_metric
    from ranksim.errors import UserError
    from ranksim.results.report import region_table
    from ranksim.engine.runs import setup_logging

    setup_logging()
    log = logging.getLogger("ranksim")
    plots = args.plots or bool(args.compare)
    try:
        run = load_run(args.target, args.device, args.data_root, trust=args.trust_checkpoint)
        features_path = run.run_dir / f"features_{args.split}.npz"
        outputs = run.outputs(args.split, with_features=True,
                              reuse=features_path if plots and not args.save_features else None)
        metrics = region_metrics(outputs.preds, outputs.labels, run.data, run.cfg)
        diagnostics = FeatureDiagnostics.for_run(outputs.labels, run.cfg)(outputs.features)
        others = [load_compare_run(path, run, args.split, args.device, args.data_root, trust=args.trust_checkpoint)
                  for path in args.compare]
    except UserError as err:
        log.error("%s", err)
        return UserError.exit_code
    output = args.output or run.run_dir / f"eval_{args.split}.json"
    atomic_write(output, lambda fh: fh.write(json.dumps(
        {"name": run.cfg.name, "split": args.split, "checkpoint": str(args.target), "epoch": run.checkpoint.get("epoch"),
         "metrics": metrics, "diagnostics": diagnostics}, indent=2).encode()))
    print(f"{run.cfg.name}: {args.split} split, checkpoint epoch {run.checkpoint.get('epoch')}")
    print(region_table(metrics))
    print(f"features: {diagnostics_line(diagnostics)}")
    log.info("written %s", output)
    if args.split == "test" and args.target.is_dir() and is_converted_run(run.run_dir):
        # A converted run (python -m ranksim.convert) was never trained: its test metrics are its
        # results, in train.py's layout, so that scripts/collect_results.py lists it.
        results = {"name": run.cfg.name, "split": "test", "best_epoch": run.checkpoint.get("epoch"),
                   "select_by": selection_metric(run.cfg), "metrics": metrics,
                   "converted_from": run.checkpoint.get("converted_from")}
        atomic_write(run.run_dir / "results.json", lambda fh: fh.write(json.dumps(results, indent=2).encode()))
        log.info("written %s", run.run_dir / "results.json")
    if args.save_features:
        path = save_features(features_path, outputs, args.split, run.checkpoint_id, args.features_dtype)
        log.info("written %s", path)
    if args.per_label:
        rows = per_label_table(outputs.preds, outputs.labels, run.data.train_labels, run.data.binning)
        log.info("written %s", write_per_label_csv(rows, run.run_dir / f"per_label_{args.split}.csv"))
    if plots:
        compared = [other.outputs(args.split, with_features=True, reuse=other.run_dir / f"features_{args.split}.npz")
                    for other in others]
        curves = dict(zip(legend_labels([run, *others]), [outputs, *compared]))
        for path in write_plots(run.run_dir / "plots", curves, run.data.train_labels, run.data.binning, args.split):
            log.info("written %s", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
