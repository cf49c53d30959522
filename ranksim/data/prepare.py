"""Dataset preparation commands: ``python -m ranksim.data.prepare DATASET [options]``.

Each dataset family's preparation commands live in its package (``ranksim/data/age/prepare.py``,
``ranksim/data/sts_b/prepare.py``); this module only dispatches, so that one command name serves
every dataset and ``--help`` lists them all. Every preparation function takes the remaining
command-line arguments and returns an exit status; a :class:`~ranksim.errors.UserError` becomes one
short message and exit status 2.
"""

from __future__ import annotations

import importlib
import logging
import sys

from ranksim.errors import exit_status

# name -> (module, function, one-line help). The module is imported only when chosen, so that
# preparing one dataset never needs another's optional dependencies.
COMMANDS = {
    "imdb_wiki": ("ranksim.data.age.prepare", "prepare_imdb_wiki_main",
                  "download IMDB-WIKI face crops and the IMDB-WIKI-DIR split (or rebuild it)"),
    "agedb": ("ranksim.data.age.prepare", "prepare_agedb_main",
              "unpack the AgeDB zip you obtained and get the AgeDB-DIR split (or rebuild it)"),
    "cache": ("ranksim.data.age.prepare", "build_cache_main",
              "build the one-time 224x224 uint8 image cache of an age dataset"),
    "sts_b": ("ranksim.data.sts_b.prepare", "prepare_sts_b_main",
              "download the STS-B-DIR split files (or rebuild them from GLUE STS-B)"),
    "glove": ("ranksim.data.sts_b.prepare", "prepare_glove_main",
              "download GloVe 840B 300-d and cache the embedding matrix for the STS-B vocabulary"),
}


def usage() -> str:
    lines = ["usage: python -m ranksim.data.prepare DATASET [options]", "", "datasets:"]
    lines += [f"  {name:<10} {help_}" for name, (_, _, help_) in COMMANDS.items()]
    lines += ["", "Run 'python -m ranksim.data.prepare DATASET --help' for the options of one."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"error: unknown dataset {name!r}; choose one of {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module_name, function_name, _ = COMMANDS[name]
    function = getattr(importlib.import_module(module_name), function_name)
    return exit_status(lambda: function(rest), "interrupted; partial downloads are kept and resume on the next run")


if __name__ == "__main__":
    sys.exit(main())
