#!/usr/bin/env python
"""Evaluate a finished run (or one checkpoint) on its validation or test split.

    python evaluate.py runs/quickstart/ranksim/20261128-120000 [--split test]
    python evaluate.py path/to/best.pt --split val

Loads the checkpoint strictly with the config stored in it, prints every metric per shot region
and writes eval_<split>.json next to the checkpoint's run folder.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Evaluate a trained run per shot region (many/medium/few).")
    parser.add_argument("target", type=Path, metavar="RUN_DIR_OR_CHECKPOINT",
                        help="a run folder (uses checkpoints/best.pt) or a .pt checkpoint file")
    parser.add_argument("--split", choices=("val", "test"), default="test", help="which split to evaluate (default test)")
    parser.add_argument("--device", default=None, help="auto (default), cpu, cuda or cuda:N")
    parser.add_argument("--data-root", default=None, help="read the data from here instead of the path in the config")
    parser.add_argument("--output", type=Path, default=None,
                        help="where to write the JSON (default: eval_<split>.json in the run folder)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from ranksim.data.build import build_data
    from ranksim.engine import config_of_checkpoint, evaluate, make_loader, select_device
    from ranksim.errors import UserError
    from ranksim.models import build_model
    from ranksim.report import region_table
    from ranksim.runs import load_checkpoint, load_state_strict, setup_logging

    setup_logging()
    log = logging.getLogger("ranksim")
    try:
        checkpoint = load_checkpoint(args.target)
        cfg = config_of_checkpoint(checkpoint, args.target)
        if args.data_root:
            cfg.data.root = args.data_root
        device = select_device(args.device or cfg.device)
        data = build_data(cfg)
        model = build_model(cfg, data.binning, data.vocab_size, data.embeddings).to(device)
        load_state_strict(model, checkpoint["model"], args.target)
        loader = make_loader(cfg, getattr(data, args.split), data, shuffle=False)
        metrics, _, _ = evaluate(model, loader, data, cfg, device, args.split)
    except UserError as err:
        log.error("%s", err)
        return UserError.exit_code
    run_dir = args.target if args.target.is_dir() else args.target.resolve().parent.parent
    output = args.output or run_dir / f"eval_{args.split}.json"
    output.write_text(json.dumps({"name": cfg.name, "split": args.split, "checkpoint": str(args.target),
                                  "epoch": checkpoint.get("epoch"), "metrics": metrics}, indent=2))
    print(f"{cfg.name}: {args.split} split, checkpoint epoch {checkpoint.get('epoch')}")
    print(region_table(metrics))
    log.info("written %s", output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
