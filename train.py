#!/usr/bin/env python
"""Train one configuration, then test its best checkpoint.

    python train.py -c configs/quickstart/ranksim.yaml [key.sub=value ...]
    python train.py --resume runs/quickstart/ranksim/20261128-120000

Reads top to bottom: parse, resolve the config, pick the device, name the run folder, build the
data and model, make the run folder, train, test.
The run itself is ranksim.engine.launch.run_training, its loop ranksim.engine.loop; the config
schema (every key, with why it is set) is ranksim/config.py.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ranksim.engine.runs import TRUST_HELP

EPILOG = """\
overrides:
  key.sub=value pairs after the options change any config key, parsed as YAML:
    optim.lr=2.5e-4 optim.batch_size=64 method.ranksim.enabled=true schedule.milestones=[60,80]
  An unknown key or a wrong type is an error that names the closest valid key.

examples:
  python train.py -c configs/quickstart/vanilla.yaml
  python train.py -c configs/agedb/sqinv_ranksim.yaml seed=1 output_dir=runs/agedb_seed1
  python train.py --resume runs/quickstart/vanilla/20261128-120000
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Train a deep imbalanced regression model (RankSim, LDS, FDS, ...).",
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("-c", "--config", type=Path, help="YAML config file (see configs/)")
    source.add_argument("--resume", type=Path, metavar="RUN_DIR",
                        help="continue RUN_DIR from checkpoints/last.pt with the run's own config.yaml")
    parser.add_argument("--device", help="shortcut for device=...: auto (default), cpu, cuda or cuda:N")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--trust-checkpoint", action="store_true",
                        help="for --resume's last.pt and the RRT stage-1 checkpoint (method.rrt.stage1): " + TRUST_HELP)
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides (see below)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Config errors are reported before torch and the models are imported, within a second.
    from ranksim.config import load_config, to_dict
    from ranksim.errors import UserError
    from ranksim.engine.runs import setup_logging

    setup_logging()
    log = logging.getLogger("ranksim")
    overrides = list(args.overrides) + ([f"device={args.device}"] if args.device else [])
    main_process = True
    finished = False
    try:
        if args.resume:
            run_dir = args.resume
            if not (run_dir / "checkpoints" / "last.pt").is_file():
                raise UserError(f"{run_dir} has no checkpoints/last.pt to resume from; "
                                "give the run folder of a run that finished at least one epoch")
            if args.overrides:
                raise UserError("--resume continues a run with its own config.yaml; it takes no overrides "
                                "(start a new run with -c to change the config)")
            cfg = load_config(run_dir / "config.yaml", [f"device={args.device}"] if args.device else [])
        else:
            cfg = load_config(args.config, overrides)
        if args.print_config:
            import yaml
            print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
            return 0
        from ranksim.distributed import broadcast_object, init_distributed, is_main_process
        from ranksim.engine.build import select_device
        from ranksim.engine.launch import run_training
        from ranksim.engine.runs import choose_run_dir, create_run_dir, write_run_files

        device = init_distributed(cfg.device) or select_device(cfg.device)
        main_process = is_main_process()
        if not main_process:
            setup_logging(None, logging.WARNING)

        def on_rank0(fn):
            # Rank 0 acts (a folder name holds a timestamp) and tells the others; an error there
            # is passed on so that no process waits forever.
            value, failure = None, None
            if main_process:
                try:
                    value = fn()
                except UserError as err:
                    failure = str(err)
            value, failure = broadcast_object((value, failure))
            if failure:
                raise UserError(failure)
            return value

        def open_run_dir() -> Path:
            # Called by run_training once the data and model are built: a failed start leaves no
            # folder behind. The folder was named and checked before, so a refusal comes at once.
            nonlocal run_dir
            if not args.resume:
                chosen = run_dir
                run_dir = on_rank0(lambda: create_run_dir(chosen, cfg))
                if main_process:
                    write_run_files(run_dir, cfg, device)
            setup_logging(run_dir if main_process else None, logging.INFO if main_process else logging.WARNING)
            log.info("run folder %s, device %s", run_dir, device)
            return run_dir

        if not args.resume:
            run_dir = on_rank0(lambda: choose_run_dir(cfg))
        results = run_training(cfg, open_run_dir, device, resume=bool(args.resume),
                               trust_checkpoint=args.trust_checkpoint)
        finished = True
    except UserError as err:
        logging.getLogger("ranksim").error("%s", err)
        return UserError.exit_code
    except KeyboardInterrupt:
        log.error("interrupted; resume with: python train.py --resume %s", locals().get("run_dir", "RUN_DIR"))
        return 130
    finally:
        if "ranksim.distributed" in sys.modules:
            sys.modules["ranksim.distributed"].cleanup(finished=finished)
    if not main_process:
        return 0
    from ranksim.results.report import region_table
    log.info("test metrics of the best checkpoint (epoch %d):\n%s", results["best_epoch"],
             region_table(results["metrics"]))
    log.info("results written to %s", run_dir / "results.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
