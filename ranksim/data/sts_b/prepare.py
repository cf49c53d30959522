"""The STS-B-DIR preparation commands (dispatched by ``python -m ranksim.data.prepare``).

- ``sts_b --root DIR``: download the published split files (:mod:`~ranksim.data.sts_b.published`)
  or ``--rebuild`` them from GLUE STS-B (:mod:`~ranksim.data.sts_b.rebuild_split`), then check
  every row and print the row counts.
- ``glove --root DIR --sts-b-root DIR``: download GloVe and cache the embedding matrix of the
  STS-B-DIR vocabulary (:mod:`~ranksim.data.sts_b.glove`).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ranksim.data.sts_b.glove import (CACHE_VOCAB, GLOVE_URL, build_glove_matrix, glove_source,
                                      write_embedding_cache)
from ranksim.data.sts_b.published import PUBLISHED_ROWS, SOURCES, download_splits
from ranksim.data.sts_b.rebuild_split import GLUE_STS_B_URL, rebuild_splits
from ranksim.data.sts_b.split_files import SPLIT_FILES, read_sts_tsv, split_paths
from ranksim.data.sts_b.text import TOKENIZERS, load_splits_tokenised, resolve_tokenizer, vocab_for_splits
from ranksim.errors import UserError

logger = logging.getLogger(__name__)


def _count_table(root: Path) -> tuple[str, dict[str, int]]:
    counts = {split: len(read_sts_tsv(path).rows) for split, path in split_paths(root).items()}
    lines = [f"{'split':<6} {'file':<14} {'rows':>6} {'published':>10}"]
    for split, name in SPLIT_FILES.items():
        mark = "" if counts[split] == PUBLISHED_ROWS[split] else "  (differs)"
        lines.append(f"{split:<6} {name:<14} {counts[split]:>6,} {PUBLISHED_ROWS[split]:>10,}{mark}")
    return "\n".join(lines), counts


def prepare_sts_b_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ranksim.data.prepare sts_b",
        description="Download the STS-B-DIR split files (train_new.tsv, dev_new.tsv, test_new.tsv), or "
                    "rebuild them from GLUE STS-B, then check every row and print the row counts.")
    parser.add_argument("--root", default="data/sts-b-dir", help="folder for the three split files "
                        "(default: %(default)s)")
    parser.add_argument("--source", choices=sorted(SOURCES), default="ranksim",
                        help="which published split to download: 'ranksim' (the RankSim paper's, default) or "
                             "'dir' (the DIR paper's; a different draw, results are not comparable)")
    parser.add_argument("--base-url", default=None,
                        help="download from this folder URL instead (a mirror; http(s):// or file://)")
    parser.add_argument("--force", action="store_true",
                        help="replace split files that exist but differ from what this command would write")
    parser.add_argument("--rebuild", action="store_true",
                        help="rebuild the split from GLUE STS-B with a fixed seed instead of downloading it")
    parser.add_argument("--glue-dir", default=None,
                        help=f"with --rebuild: folder holding GLUE STS-B train.tsv and dev.tsv (unzip {GLUE_STS_B_URL})")
    parser.add_argument("--seed", type=int, default=0, help="with --rebuild: seed of the draw (default: %(default)s)")
    args = parser.parse_args(argv)
    root = Path(args.root)

    if args.rebuild:
        if not args.glue_dir:
            raise UserError(f"--rebuild needs --glue-dir, a folder with GLUE STS-B train.tsv and dev.tsv "
                            f"(unzip {GLUE_STS_B_URL})")
        existing = [root / n for n in SPLIT_FILES.values() if (root / n).exists()]
        if existing and not args.force:
            raise UserError(f"{root} already holds {', '.join(p.name for p in existing)}; pass --force to "
                            f"overwrite them with a rebuilt split, or choose another --root")
        counts = rebuild_splits(args.glue_dir, root, seed=args.seed)
        logger.info("rebuilt the split with seed %d: %s", args.seed, counts)
    else:
        if args.glue_dir:
            raise UserError("--glue-dir is used only with --rebuild")
        download_splits(root, args.source, base_url=args.base_url, force=args.force)

    table, _ = _count_table(root)
    print(table)
    return 0


def prepare_glove_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ranksim.data.prepare glove",
        description="Download GloVe 840B 300-d (2 GB zip, resumable) and cache the embedding matrix of the "
                    "STS-B-DIR vocabulary, so that training loads it in seconds. Needs the split files.")
    parser.add_argument("--root", default="data/glove", help="folder for the GloVe zip and the cached matrix "
                        "(default: %(default)s)")
    parser.add_argument("--sts-b-root", default="data/sts-b-dir",
                        help="folder with the STS-B-DIR split files (default: %(default)s)")
    parser.add_argument("--url", default=GLOVE_URL, help="where to download the GloVe zip (default: %(default)s)")
    parser.add_argument("--max-seq-len", type=int, default=40,
                        help="tokens kept per sentence; must match the training config (default: %(default)s)")
    parser.add_argument("--max-vocab", type=int, default=30000,
                        help="vocabulary size; must match the training config (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the N(0, 1) vectors of words missing from GloVe (default: %(default)s)")
    parser.add_argument("--tokenizer", choices=TOKENIZERS, default="auto",
                        help="must match the training config's data.tokenizer (default: %(default)s: punkt "
                             "when NLTK's punkt data is installed)")
    args = parser.parse_args(argv)
    root = Path(args.root)

    # The vocabulary first: a missing split should fail before a 2 GB download, not after.
    tokenizer = resolve_tokenizer(args.tokenizer)
    vocab = vocab_for_splits(load_splits_tokenised(args.sts_b_root, args.max_seq_len, tokenizer), args.max_vocab)
    source = glove_source(root, args.url)
    logger.info("reading %s for %d vocabulary words (a few minutes for the full GloVe)", source, len(vocab))
    matrix, in_glove = build_glove_matrix(source, vocab, seed=args.seed)
    path = write_embedding_cache(root, vocab, matrix, in_glove)
    found = int(in_glove.sum())
    words = len(vocab) - 1
    print(f"vocabulary   {words:>7,} words + padding\n"
          f"in GloVe     {found:>7,} ({100.0 * found / max(words, 1):.1f}%)\n"
          f"random       {words - found:>7,} (N(0, 1), seed {args.seed})\n"
          f"tokenizer    {tokenizer}\n"
          f"cache        {path} and {path.with_name(CACHE_VOCAB).name}")
    return 0
