"""Turn the authors' released checkpoints into run folders of this repository.

    python -m ranksim.convert authors CHECKPOINT -c CONFIG --out RUN_DIR [key=value ...]

The run folder holds ``config.yaml`` (CONFIG with the overrides, named ``<name>/authors``),
``checkpoints/best.pt`` in our format and ``env.json`` (our environment plus the source file, its
size and sha256). ``evaluate.py RUN_DIR --split test`` then evaluates it as any run (and, for a
converted run, writes ``results.json`` so that ``scripts/collect_results.py`` lists it). Only
the weights come from the authors; data, model code and metrics are ours.

The layouts are written down once, in :data:`LAYOUTS` and :data:`FDS_BUFFERS`: a change in the
authors' format is a one-line edit there. Every key is mapped by one row of the table; a key no
row maps, a key of ours that nothing fills, or a tensor of another shape is an error naming the
first few keys and the config setting that decides them. Files are read with
``weights_only=True`` (see :func:`ranksim.engine.runs.read_checkpoint_file`).

Facts about the authors' formats, read from their public code (BorealisAI/ranksim-imbalanced-
regression, which builds on YyzHarry/imbalanced-regression):

- age (``agedb-dir``/``imdb-wiki-dir`` ``train.py``): ``torch.save`` of a dict ``{'epoch',
  'model', 'best_loss', 'state_dict', 'optimizer'}``; the model was wrapped in
  ``nn.DataParallel``, so every key of ``state_dict`` starts with ``module.``. Their ResNet-50
  (``resnet.py``) names its layers as torchvision does (``conv1``, ``bn1``, ``layer1..4``), its
  regressor ``linear`` and its FDS module ``FDS``.
- STS-B (``sts-b-dir/trainer.py``): ``model_state_best.th`` is a plain ``state_dict`` of their
  AllenNLP model: the word embedding of the text-field embedder, the BiLSTM inside a
  ``PytorchSeq2SeqWrapper`` (``_module``), the regressor ``sts-b_pred_layer`` and ``FDS``.
- FDS (both): buffers ``epoch`` (float, shape ``(1,)``), ``running_mean``, ``running_var``,
  ``running_mean_last_epoch``, ``running_var_last_epoch``, ``smoothed_mean_last_epoch``,
  ``smoothed_var_last_epoch`` (each ``(buckets, D)``) and ``num_samples_tracked`` ``(buckets,)``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ranksim.data.files import sha256_of
from ranksim.errors import UserError

logger = logging.getLogger("ranksim.convert")


@dataclass(frozen=True)
class Layout:
    """How one family of the authors' checkpoints stores a model."""

    summary: str                           # one line for --help
    container: str | None                  # key of the dict that holds the state dict; None: the file is it
    strip: str                             # prefix on every key (DataParallel's 'module.'), removed first
    prefixes: tuple[tuple[str, str], ...]  # (authors' key prefix, ours), after `strip`
    refused: tuple[tuple[str, str], ...] = ()  # (authors' key prefix, why we cannot map it)


# ------------------------------------------------------------------------------------------------
# The layouts: the one place to edit when the authors' format changes.

LAYOUTS: dict[str, Layout] = {
    "age": Layout(
        summary="AgeDB-DIR / IMDB-WIKI-DIR (RankSim and DIR): dict with 'state_dict', 'epoch', ...; "
                "keys 'module.'-prefixed; ResNet-50 conv1/bn1/layer1-4, regressor 'linear', 'FDS.' buffers",
        container="state_dict",
        strip="module.",
        prefixes=(
            ("conv1.", "encoder.conv1."),
            ("bn1.", "encoder.bn1."),
            ("layer1.", "encoder.layer1."),
            ("layer2.", "encoder.layer2."),
            ("layer3.", "encoder.layer3."),
            ("layer4.", "encoder.layer4."),
            ("linear.", "head.linear."),
            ("FDS.", "head.fds."),
        ),
    ),
    "sts_b": Layout(
        summary="STS-B-DIR: a plain state dict (model_state_best.th) of the AllenNLP model: word "
                "embedding, BiLSTM pair encoder, regressor 'sts-b_pred_layer', 'FDS.' buffers",
        container=None,
        strip="",
        prefixes=(
            ("pair_encoder._text_field_embedder.token_embedder_words.", "embedding."),
            ("pair_encoder._phrase_layer._module.", "lstm."),
            ("sts-b_pred_layer.", "head.linear."),
            ("FDS.", "head.fds."),
        ),
        refused=(
            ("pair_encoder._highway_layer.", "highway layers (their --n_layers_highway > 0); our BiLSTM, "
                                             "like their default, has none"),
        ),
    ),
}

# FDS buffer names after the "FDS." prefix: (authors', ours). The authors' epoch counter is a float
# tensor of shape (1,), ours a long scalar; FDS buffers are reshaped and cast to ours when their
# element counts agree.
FDS_BUFFERS: tuple[tuple[str, str], ...] = (
    ("epoch", "stored_epoch"),
    ("running_mean", "running_mean"),
    ("running_var", "running_var"),
    ("running_mean_last_epoch", "running_mean_last_epoch"),
    ("running_var_last_epoch", "running_var_last_epoch"),
    ("smoothed_mean_last_epoch", "smoothed_mean_last_epoch"),
    ("smoothed_var_last_epoch", "smoothed_var_last_epoch"),
    ("num_samples_tracked", "num_samples_tracked"),
)
FDS_OURS = "head.fds."
FDS_THEIRS = "FDS."

# Which config setting decides the shape of our keys, for the error messages.
SHAPE_HINTS = (
    ("head.fds.", "method.fds.bucket_num - method.fds.bucket_start buckets x the feature size"),
    ("embedding.", "the vocabulary that data.root, data.max_vocab and data.max_seq_len give"),
    ("lstm.", "model.hidden_size and model.num_layers (the authors': 1500 and 2)"),
    ("head.linear.", "the feature size (model.name / model.hidden_size)"),
    ("encoder.", "model.name (the authors' age models are resnet50)"),
)

SHOW = 4  # names listed in an error message


def layout_name(cfg) -> str:
    """The layout of the authors' checkpoints for a config's dataset and model."""
    if cfg.data.dataset == "sts_b":
        return "sts_b"
    if cfg.model.name != "resnet50":
        raise UserError(f"the authors' age checkpoints are ResNet-50 models but the config has "
                        f"model.name={cfg.model.name}; use the config of the row (configs/agedb/ or configs/imdb_wiki/)")
    return "age"


def _names(keys, limit: int = SHOW) -> str:
    keys = list(keys)
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def looks_like(obj: Any) -> str | None:
    """The layout an object read from a checkpoint file seems to have, or ``None``."""
    if not isinstance(obj, dict):
        return None
    for name, layout in LAYOUTS.items():
        state = obj.get(layout.container) if layout.container else obj
        if not isinstance(state, dict) or not state:
            continue
        keys = [k for k in state if isinstance(k, str)]
        stripped = [k[len(layout.strip):] for k in keys if k.startswith(layout.strip)]
        if len(stripped) == len(keys) and any(k.startswith(p) for k in stripped for p, _ in layout.prefixes[:2]):
            return name
    if "model" in obj and "config" in obj:
        return "ranksim"
    return None


def unwrap(obj: Any, name: str, source: Path) -> tuple[dict, dict]:
    """``(state dict, plain metadata)`` of a checkpoint in layout ``name``; a ``UserError`` otherwise."""
    layout = LAYOUTS[name]
    state = obj.get(layout.container) if isinstance(obj, dict) and layout.container else obj
    fits = isinstance(state, dict) and state and all(
        isinstance(k, str) and k.startswith(layout.strip) and hasattr(v, "shape") for k, v in state.items())
    if not fits:
        seen = looks_like(obj)
        found = (f"keys {_names(map(str, obj))}" if isinstance(obj, dict) else f"a {type(obj).__name__}")
        hint = {"ranksim": "it is already a checkpoint of this repository: evaluate it directly",
                None: "is it one of the authors' released checkpoints?"}.get(
            seen, f"it looks like the {seen} layout; use a config of that dataset")
        raise UserError(f"{source} does not have the authors' {name} layout ({layout.summary}); it holds {found}: "
                        f"{hint}")
    meta = {k: v for k, v in obj.items() if k != layout.container and isinstance(v, (int, float, str))} \
        if layout.container else {}
    return state, meta


def map_keys(state: dict, name: str) -> tuple[dict, list[str], list[tuple[str, str]]]:
    """Rename the authors' keys to ours with the layout's table.

    Returns ``(mapped state, keys no row maps, [(key, reason)] for keys the layout refuses)``.
    """
    layout = LAYOUTS[name]
    fds_names = dict(FDS_BUFFERS)
    mapped, unknown, refused = {}, [], []
    for key, value in state.items():
        rest = key[len(layout.strip):]
        reason = next((why for prefix, why in layout.refused if rest.startswith(prefix)), None)
        if reason is not None:
            refused.append((key, reason))
            continue
        target = next((ours + rest[len(theirs):] for theirs, ours in layout.prefixes if rest.startswith(theirs)), None)
        if target is not None and target.startswith(FDS_OURS):
            buffer = fds_names.get(target[len(FDS_OURS):])
            target = FDS_OURS + buffer if buffer else None
        if target is None:
            unknown.append(key)
        else:
            mapped[target] = value
    return mapped, unknown, refused


def check_against_config(mapped: dict, cfg, source: Path, vocab_size: int = 0) -> None:
    """The checks that need only the config (and, for STS-B, our vocabulary size), before any model is built."""
    has_fds = any(k.startswith(FDS_OURS) for k in mapped)
    if has_fds and not cfg.method.fds.enabled:
        raise UserError(f"{source}: the checkpoint has FDS buffers ({FDS_THEIRS}running_mean, ...) but the config has "
                        "FDS disabled (method.fds.enabled: false); use the config of the row with FDS")
    if cfg.method.fds.enabled and not has_fds:
        raise UserError(f"{source}: the config enables FDS (method.fds.enabled: true) but the checkpoint has no FDS "
                        "buffers; use the config of the row without FDS")
    if "embedding.weight" in mapped and vocab_size:
        theirs, ours = mapped["embedding.weight"].shape[0], vocab_size
        if theirs != ours:
            raise UserError(
                f"{source}: the checkpoint's word embedding has {theirs} rows but our vocabulary has {ours} words "
                f"(built from the split files in data.root={cfg.data.root} with data.max_vocab={cfg.data.max_vocab}, "
                f"data.max_seq_len={cfg.data.max_seq_len}); the rows would pair with the wrong words, so the "
                "checkpoint is refused: use the authors' STS-B-DIR split files (python -m ranksim.data.prepare sts_b)")


def check_embedding_rows(embedding, vocab: list[str], cfg, source: Path) -> str:
    """Prove that the checkpoint's embedding rows meet our vocabulary's words in the same order.

    The authors' embeddings are frozen GloVe rows, so the row of every word found in GloVe must
    equal that word's vector in our GloVe cache (``data.glove_dir``). A ``UserError`` names the
    first words whose rows differ. Without a usable cache the order cannot be checked: a warning
    says so. Returns what was found, for the run's ``env.json``.
    """
    import numpy as np

    from ranksim.data.sts_b.glove import CACHE_FOUND, GLOVE_HINT, read_glove_rows

    glove_dir = cfg.data.glove_dir
    cache = read_glove_rows(glove_dir, vocab) if glove_dir else None
    if cache is None:
        hint = GLOVE_HINT.format(glove=glove_dir or "data/glove", root=cfg.data.root, max_seq_len=cfg.data.max_seq_len,
                                 max_vocab=cfg.data.max_vocab) + f" --tokenizer {cfg.data.tokenizer}"
        where = f"data.glove_dir={glove_dir} holds no GloVe cache of this vocabulary with {CACHE_FOUND}" if glove_dir \
            else "data.glove_dir is empty"
        logger.warning("the order of the vocabulary was NOT checked against the checkpoint's embedding rows (%s); "
                       "to check it, prepare GloVe: %s", where, hint)
        return "not checked: no GloVe cache"
    glove, found = cache
    theirs = embedding.detach().cpu().double().numpy()
    rows = np.flatnonzero(found)
    # Float32 GloVe parsed two ways (theirs via float64) may differ in the last bit, a wrong word by far more.
    wrong = rows[~np.isclose(theirs[rows], glove[rows].astype(np.float64), rtol=1e-5, atol=1e-6).all(axis=1)]
    if len(wrong):
        raise UserError(
            f"{source}: {len(wrong)} of {len(rows)} embedding rows of words in GloVe differ from their GloVe vectors "
            f"(first: {_names(repr(vocab[i]) for i in wrong)}): the checkpoint's vocabulary order is not ours "
            f"(ours built with data.tokenizer={cfg.data.tokenizer}; the authors' used punkt), so its rows would meet the wrong words")
    logger.info("vocabulary order checked: the %d embedding rows of words in GloVe equal their GloVe vectors", len(rows))
    return f"checked: {len(rows)} rows equal GloVe"


def check_against_model(mapped: dict, expected: dict, source: Path) -> dict:
    """Compare the mapped state with our model's; return it with FDS buffers in our shape and dtype.

    ``expected`` is our model's ``state_dict()``. Raises a ``UserError`` naming the first
    differences and the config settings they depend on.
    """
    missing = [k for k in expected if k not in mapped]
    unexpected = [k for k in mapped if k not in expected]
    if missing or unexpected:
        parts = []
        if unexpected:
            parts.append(f"it has keys our model lacks ({_names(unexpected)})")
        if missing:
            parts.append(f"it lacks keys our model has ({_names(missing)})")
        raise UserError(f"{source} does not match the config's model: {'; '.join(parts)}; "
                        f"these depend on {_hint(unexpected + missing)}")
    out, wrong = {}, []
    for key, ours in expected.items():  # in our order
        theirs = mapped[key].detach().cpu()
        if tuple(theirs.shape) == tuple(ours.shape):
            out[key] = theirs.to(ours.dtype).contiguous()
        elif key.startswith(FDS_OURS) and theirs.numel() == ours.numel():
            out[key] = theirs.reshape(ours.shape).to(ours.dtype).contiguous()
        else:
            wrong.append(f"{key} {tuple(theirs.shape)} vs {tuple(ours.shape)}")
    if wrong:
        first = wrong[0].split(" ")[0]
        raise UserError(f"{source}: tensor shapes differ from the config's model (checkpoint vs config): "
                        f"{_names(wrong, 3)}; they depend on {_hint([first])}")
    return out


def _hint(keys: list[str]) -> str:
    for prefix, hint in SHAPE_HINTS:
        if any(k.startswith(prefix) for k in keys):
            return hint
    return "the model config"


def convert_authors(source: Path, config: Path, out: Path, overrides: list[str] = (), trust: bool = False) -> Path:
    """Convert one authors' checkpoint into the run folder ``out``; returns the checkpoint written."""
    import torch

    from ranksim.config import dump, load_config, to_dict
    from ranksim.engine.identity import converted, data_fingerprint, write_identity
    from ranksim.models import build_model
    from ranksim.engine.runs import environment, read_checkpoint_file, save_atomic

    source, out = Path(source), Path(out)
    if not source.is_file():
        raise UserError(f"checkpoint {source} not found")
    if (out / "checkpoints").exists() or (out / "results.json").exists():
        raise UserError(f"{out} already holds a run; choose another --out")
    cfg = load_config(config, list(overrides))
    cfg.name = f"{cfg.name}/authors"  # never averaged with our own seeds of the row by collect_results
    cfg.output_dir = str(out)
    name = layout_name(cfg)
    state, meta = unwrap(read_checkpoint_file(source, trust), name, source)
    mapped, unknown, refused = map_keys(state, name)
    if refused:
        raise UserError(f"{source}: {_names([k for k, _ in refused])}: {refused[0][1]}")
    if unknown:
        raise UserError(f"{source}: keys that the {name} layout does not map ({_names(unknown)}); "
                        f"the layout expects prefixes {', '.join(LAYOUTS[name].strip + p for p, _ in LAYOUTS[name].prefixes)}"
                        " (ranksim/tools/convert.py LAYOUTS)")
    vocab = []
    if name == "sts_b":
        from ranksim.data.sts_b.text import load_splits_tokenised, resolve_tokenizer, vocab_for_splits
        d = cfg.data
        d.tokenizer = resolve_tokenizer(d.tokenizer)  # recorded in the run's config.yaml
        vocab = vocab_for_splits(load_splits_tokenised(d.root, d.max_seq_len, d.tokenizer), d.max_vocab)
    vocab_size = len(vocab)
    check_against_config(mapped, cfg, source, vocab_size)
    # Our model's keys, shapes and dtypes, from a model built on the meta device (no memory, no
    # initialisation); the weights themselves are the authors'. evaluate.py then loads them strictly.
    with torch.device("meta"):
        expected = build_model(cfg, "sts_b" if name == "sts_b" else "age", vocab_size).state_dict()
    weights = check_against_model(mapped, expected, source)
    epoch = meta.get("epoch")
    record = {"path": str(source.resolve()), "sha256": sha256_of(source), "bytes": source.stat().st_size,
              "layout": name, "metadata": meta}
    if name == "sts_b":
        record["vocabulary_order"] = check_embedding_rows(weights["embedding.weight"], vocab, cfg, source)
    checkpoint = {"model": weights, "config": to_dict(cfg), "epoch": epoch if isinstance(epoch, int) else None,
                  "step": None, "converted_from": record}
    (out / "checkpoints").mkdir(parents=True)
    dump(cfg, out / "config.yaml")
    target = out / "checkpoints" / "best.pt"
    save_atomic(checkpoint, target)
    env = {**environment(torch.device("cpu")), "converted_from": record}
    (out / "env.json").write_text(json.dumps(env, indent=2))
    # The provenance keeps these weights out of our seeds' means: the collector shows them as a
    # row of their own, the authors' weights evaluated here.
    write_identity(out, converted("authors", record), data_fingerprint(cfg))
    logger.info("converted %s (%s layout, sha256 %s) into %s", source, name, record["sha256"][:12], out)
    return target


def is_converted_run(run_dir: Path) -> bool:
    """Whether ``run_dir`` was made by this converter (its recorded provenance, ranksim.engine.identity)."""
    from ranksim.engine.identity import read_identity

    return read_identity(run_dir).provenance.get("kind") == "converted"


HELP = """\
layouts (chosen by the config's dataset; written down in ranksim/tools/convert.py LAYOUTS):
""" + "\n".join(textwrap.fill(f"{name}: {layout.summary}", 100, initial_indent="  ", subsequent_indent="    ")
                for name, layout in LAYOUTS.items()) + """

  Every key is mapped by one table row (FDS buffers by name: epoch -> stored_epoch, the others
  unchanged). Missing or extra keys, shape differences, FDS buffers with FDS disabled in the config
  (or the reverse), an STS-B embedding whose row count differs from our vocabulary, and one whose
  rows of words in GloVe differ from their GloVe vectors (the vocabulary order, checked when
  data.glove_dir holds the prepared GloVe cache; otherwise a warning says it was not checked) are
  refused with exit status 2. FDS buffers are kept when the config enables FDS (evaluation does not smooth).

safety:
  The file is read with torch.load(weights_only=True, map_location='cpu'). A file holding objects
  beyond tensors and plain types is refused unless --trust-checkpoint is given (only for files you
  trust: full unpickling runs any code stored in the file).

example (AgeDB-DIR, SQINV + RankSim, the authors' README):
  python -m ranksim.convert authors ckpt.best.pth.tar -c configs/agedb/sqinv_ranksim.yaml \\
      --out runs/authors/agedb/sqinv_ranksim
  python evaluate.py runs/authors/agedb/sqinv_ranksim --split test
  python scripts/collect_results.py runs/authors/agedb
"""


def main(argv: list[str] | None = None) -> int:
    from ranksim.engine.runs import TRUST_HELP, setup_logging

    parser = argparse.ArgumentParser(prog="python -m ranksim.convert",
                                     description="Convert released checkpoints into run folders of this repository.")
    sub = parser.add_subparsers(dest="command", required=True)
    authors = sub.add_parser("authors", help="the RankSim / DIR authors' released checkpoints",
                             description="Convert one of the authors' released checkpoints (AgeDB-DIR, IMDB-WIKI-DIR, "
                                         "STS-B-DIR) into a run folder that evaluate.py and collect_results.py accept.",
                             epilog=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    authors.add_argument("checkpoint", type=Path, help="the downloaded file (e.g. ckpt.best.pth.tar, model_state_best.th)")
    authors.add_argument("-c", "--config", type=Path, required=True,
                         help="the config of the checkpoint's row (see the README table), e.g. configs/agedb/sqinv_ranksim.yaml")
    authors.add_argument("--out", type=Path, required=True, help="the run folder to create")
    authors.add_argument("--trust-checkpoint", action="store_true", help=TRUST_HELP)
    authors.add_argument("overrides", nargs="*", metavar="key=value",
                         help="config overrides, e.g. data.root=PATH (needed for STS-B: the vocabulary is rebuilt)")
    # key=value overrides go at the end, after the options; argparse would not take them there
    # after a positional, so they are collected from the leftovers.
    args, rest = parser.parse_known_args(argv)
    bad = [r for r in rest if r.startswith("-") or "=" not in r]
    if bad:
        parser.error(f"unrecognized arguments: {' '.join(bad)}")
    args.overrides = [*args.overrides, *rest]
    setup_logging()
    try:
        convert_authors(args.checkpoint, args.config, args.out, args.overrides, args.trust_checkpoint)
    except UserError as err:
        logger.error("%s", err)
        return UserError.exit_code
    print(f"written {args.out}; evaluate it with: python evaluate.py {args.out} --split test")
    return 0


if __name__ == "__main__":
    sys.exit(main())
