"""What a run *is*: the one definition that the runner, the collector and the converter share.

Two runs are the same run when all of these agree:

* **the config that decides what is trained** (:func:`comparable`): the resolved config with
  defaults filled in, without the :data:`OPERATIONAL_KEYS` (run folder, device, loading, logging)
  and without the settings of methods that are off (``method.fds.bucket_num`` of a run without
  FDS). The seed is part of it: the runner never reuses a run of another seed. Only the
  collector, when it groups the seeds of one config into a table row, leaves the seed out
  (:func:`without_seed`).
* **the results version** (:data:`RESULTS_VERSION`): which version of the numerics made it.
* **the provenance**: trained here, or converted from a named source (the authors' weights).
* **the data**: a fingerprint of the split it trained, validated and tested on
  (:func:`data_fingerprint`: labels and sample ids, not the images).

The last three are written by training and by the converter into the run folder's
``identity.json`` (:func:`write_identity`); a run without that file was made before this record
existed, so its numerics are unknown and it counts as stale (:func:`stale_reason`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ranksim.config import Config, to_dict
from ranksim.errors import UserError

logger = logging.getLogger(__name__)

# Bump this when a change to the code changes the numbers a run produces with an unchanged
# config: the maths of a method or a metric, the data order or augmentation, the model's
# initialisation, the vocabulary. Runs of another version are then stale: the reproduce and sweep
# scripts refuse to reuse them (or move them aside with --rerun-stale), and the collector leaves
# them out of its means unless asked. Pure speed or logging changes do not bump it.
#   1: every run made before the version was recorded (no identity.json)
#   2: training order from a (seed, epoch) key; STS-B vocabulary in the authors' order; BNI with
#      one bucket per age below 200; ConR and BMC over the global batch under DDP
RESULTS_VERSION = 2
IDENTITY_FILE = "identity.json"
STAGE1_FILE = "stage1.json"  # RRT stage 2: the stage-1 checkpoint it loaded, and its SHA-256

# Keys (or whole sections) that do not change what a run trains. Runs that differ only in them
# are the same run: the reproduce and sweep scripts reuse a finished run whose stored config
# differs from the requested one only here, and the collector puts them in one row.
OPERATIONAL_KEYS = (
    "output_dir",               # where the run was written
    "name", "title",            # labels (the collector keeps rows of different titles apart itself)
    "expected",                 # the authors' numbers, once carried by configs; not a setting
    "device",                   # cpu / cuda:N: same computation (up to floating-point order)
    "data.root",                # the same data on another disk or machine (data_fingerprint tells)
    "data.split_file",          # likewise: where the split file is, not what it holds
    "data.use_cache",           # the uint8 image cache is lossless
    "data.num_workers", "data.persistent_workers", "data.pin_memory", "data.prefetch_factor",  # loading speed
    "model.channels_last", "model.compile",  # memory format and compilation: speed only
    "logging",                  # TensorBoard, progress bars, log intervals, the divergence guard
)
SEED_KEY = "seed"               # part of a run's identity; left out only to group seeds into a row

# Settings read only when their method is on: (condition on the flat config, keys it governs).
# A run with FDS off trains the same whatever its method.fds.bucket_num says.
_INACTIVE = (
    (lambda c: not c.get("method.lds.enabled"), ("method.lds.",)),
    (lambda c: not c.get("method.fds.enabled"), ("method.fds.",)),
    (lambda c: not c.get("method.ranksim.enabled"), ("method.ranksim.",)),
    (lambda c: not c.get("method.rrt.enabled"), ("method.rrt.",)),
    (lambda c: not c.get("method.conr.enabled"), ("method.conr.",)),
    (lambda c: c.get("method.loss") != "bmse", ("method.bmse.",)),
    (lambda c: not str(c.get("method.loss", "")).startswith("focal"),
     ("method.focal_activate", "method.focal_beta", "method.focal_gamma")),
    (lambda c: c.get("method.loss") != "huber", ("method.huber_beta",)),
    (lambda c: c.get("data.dataset") != "synthetic", ("data.synthetic.",)),
    (lambda c: c.get("data.dataset") != "sts_b",
     ("data.glove_dir", "data.max_seq_len", "data.max_vocab", "data.tokenizer")),
    (lambda c: c.get("model.name") != "resnet_small", ("model.width",)),
    (lambda c: c.get("model.name") != "bilstm",
     ("model.hidden_size", "model.num_layers", "model.dropout", "model.freeze_embeddings")),
)
_SWITCHES = {"method.lds.enabled", "method.fds.enabled", "method.ranksim.enabled", "method.rrt.enabled",
             "method.conr.enabled"}


def is_operational(key: str) -> bool:
    return any(key == op or key.startswith(op + ".") for op in OPERATIONAL_KEYS)


def _merge(defaults: Any, data: Any) -> Any:
    """``data`` over ``defaults``: mappings merge deeply, ints become floats where a float is expected."""
    if isinstance(defaults, dict) and isinstance(data, dict):
        merged = dict(defaults)
        for key, value in data.items():
            merged[key] = _merge(defaults[key], value) if key in defaults else value
        return merged
    if isinstance(defaults, float) and isinstance(data, int) and not isinstance(data, bool):
        return float(data)
    return data


def flatten(data: dict, prefix: str = "") -> dict:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    flat = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _inactive(flat: dict, key: str) -> bool:
    if key in _SWITCHES:
        return False
    return any(off(flat) and any(key == p or (p.endswith(".") and key.startswith(p)) for p in prefixes)
               for off, prefixes in _INACTIVE)


def comparable(cfg: dict | Config, run_dir: Path | None = None, _depth: int = 0) -> dict:
    """The flat config that decides what a run trains, seed included.

    Defaults are filled in; operational keys and the settings of methods that are off are left
    out. ``method.rrt.stage1`` names a folder whose path holds the seed
    (``runs/agedb/vanilla/seed1``); it is replaced by the stage-1 run's own config without its
    seed, as a short hash, when its ``config.yaml`` is found (relative paths are tried from
    ``run_dir``'s parents, then from the working folder), so that the seeds of an RRT row count
    as one config once the seed is left out.
    """
    data = to_dict(cfg) if isinstance(cfg, Config) else cfg
    merged = flatten(_merge(to_dict(Config()), data))
    flat = {k: v for k, v in merged.items() if not is_operational(k) and not _inactive(merged, k)}
    if flat.get("data.tokenizer") == "auto":
        # A run stores the tokenizer that "auto" chose (ranksim.data.build): compare with what it
        # would choose here and now, since another tokenizer gives another vocabulary.
        from ranksim.data.sts_b.text import punkt_installed
        flat["data.tokenizer"] = "punkt" if punkt_installed() else "no_punkt"
    if flat.get("method.rrt.enabled") and flat.get("method.rrt.stage1") and _depth < 4:
        flat["method.rrt.stage1"] = _stage1_identity(flat["method.rrt.stage1"], run_dir, _depth)
    return flat


def without_seed(flat: dict) -> dict:
    """A :func:`comparable` config as the collector groups it: the seeds of one config are one row."""
    return {k: v for k, v in flat.items() if k != SEED_KEY}


def _stage1_identity(stage1: str, run_dir: Path | None, depth: int) -> str:
    path = Path(stage1)
    bases = [] if path.is_absolute() else [*(Path(run_dir).resolve().parents if run_dir else ()), Path.cwd()]
    for candidate in ([path] if path.is_absolute() else [base / path for base in bases]):
        folder = candidate
        if candidate.suffix == ".pt":
            folder = candidate.parent.parent if candidate.parent.name == "checkpoints" else candidate.parent
        config_path = folder / "config.yaml"
        if config_path.is_file():
            stage1_cfg = yaml.safe_load(config_path.read_text()) or {}
            flat = without_seed(comparable(stage1_cfg, folder, depth + 1))
            digest = hashlib.sha1(config_key(flat).encode()).hexdigest()[:8]
            return f"{stage1_cfg.get('title') or stage1_cfg.get('name', 'stage 1')} [{digest}]"
    return stage1


def config_key(flat: dict) -> str:
    """A hashable, order-independent text of a :func:`comparable` config."""
    return json.dumps(flat, sort_keys=True, default=str)


def format_value(value: Any) -> str:
    """A config value as a label shows it: ``10.0`` -> ``10``, ``2.5e-4`` -> ``0.00025``."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return format(value, "g")
    if isinstance(value, list):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    return str(value)


def differences(old: dict, new: dict) -> list[str]:
    """``key: old -> new`` for every key of two flat configs whose values differ."""
    missing = "(absent)"
    return [f"{k}: {format_value(old.get(k, missing))} -> {format_value(new.get(k, missing))}"
            for k in sorted(set(old) | set(new)) if old.get(k, missing) != new.get(k, missing)]


# ---------------------------------------------------------------------------------------------
# Provenance, results version and data: identity.json


TRAINED = {"kind": "trained"}


def converted(source: str, record: dict) -> dict:
    """The provenance of weights converted from ``source`` (``"authors"``), with the file's record."""
    return {"kind": "converted", "source": source, "file": Path(record["path"]).name,
            "sha256": record["sha256"]}


def provenance_key(provenance: dict | None) -> str:
    """What the collector keeps apart: ``trained``, or ``converted:<source>``."""
    provenance = provenance or TRAINED
    return "trained" if provenance.get("kind") == "trained" else f"converted:{provenance.get('source', '?')}"


def provenance_label(provenance: dict | None) -> str:
    """The suffix of a row of converted weights; empty for runs trained here."""
    key = provenance_key(provenance)
    if key == "trained":
        return ""
    source = key.split(":", 1)[1]
    return f"[{'the authors' if source == 'authors' else source}' weights, evaluated here]"


@dataclass
class RunIdentity:
    """The record of ``identity.json``; ``results_version`` is None for a run made before it existed."""

    results_version: int | None
    provenance: dict
    data: str | None          # data_fingerprint of the splits, None when unknown


def write_identity(run_dir: Path, provenance: dict, data: str | None) -> None:
    record = {"results_version": RESULTS_VERSION, "provenance": provenance, "data": data}
    (Path(run_dir) / IDENTITY_FILE).write_text(json.dumps(record, indent=2))


def read_identity(run_dir: Path) -> RunIdentity:
    """The identity of the run in ``run_dir``. A run without ``identity.json`` is of results version
    None; one converted before the file existed is still known by its ``env.json``."""
    path = Path(run_dir) / IDENTITY_FILE
    if path.is_file():
        try:
            record = json.loads(path.read_text())
            return RunIdentity(int(record["results_version"]), dict(record.get("provenance") or TRAINED),
                               record.get("data"))
        except (ValueError, KeyError, TypeError):
            raise UserError(f"{path} is damaged; move the run away, or delete that file to mark the run as "
                            "made by older code") from None
    provenance = TRAINED
    try:
        env = json.loads((Path(run_dir) / "env.json").read_text())
        if isinstance(env, dict) and "converted_from" in env:
            provenance = converted("authors", env["converted_from"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return RunIdentity(None, provenance, None)


SET_ASIDE_FILE = "set_aside.json"


def record_set_aside(run_dir: Path, reason: str) -> None:
    """Record in ``run_dir`` that the runner moved this run aside (``--rerun-stale``) and why, so
    that the collector leaves it out by this record rather than by the folder's name."""
    (Path(run_dir) / SET_ASIDE_FILE).write_text(json.dumps({"reason": reason}, indent=2))


def is_set_aside(run_dir: Path) -> bool:
    return (Path(run_dir) / SET_ASIDE_FILE).is_file()


def version_mismatch(identity: RunIdentity) -> str | None:
    """How the run's results version differs from the current one (``"made by results version 1"``);
    None when it is current."""
    if identity.results_version is None:
        return f"made before results versions were recorded (no {IDENTITY_FILE})"
    if identity.results_version != RESULTS_VERSION:
        return f"made by results version {identity.results_version}"
    return None


def stale_reason(run_dir: Path, config: dict | None = None, identity: RunIdentity | None = None) -> str | None:
    """Why the numbers of the run in ``run_dir`` are not those of the current code; None when they are.

    ``config`` is the run's :func:`comparable` config and ``identity`` its :func:`read_identity`
    (each read from the folder when not given).
    Stale: another results version (or none recorded); an RRT stage 2 without ``stage1.json``
    (made before the stage-1 checkpoint was recorded); an RRT stage 2 whose stage 1 was trained
    again or is gone.
    """
    run_dir = Path(run_dir)
    identity = identity or read_identity(run_dir)
    mismatch = version_mismatch(identity)
    if mismatch:
        return f"it was {mismatch}; the current version is {RESULTS_VERSION}"
    if identity.provenance.get("kind") != "trained":
        return None  # converted weights: no training, no stage 1 of ours
    if config is None:
        config = comparable(yaml.safe_load((run_dir / "config.yaml").read_text()) or {}, run_dir)
    if config.get("method.rrt.enabled"):
        return stage1_changed(run_dir)
    return None


def stage1_changed(run_dir: Path) -> str | None:
    """Why an RRT run's stage 1 is not the one it loaded (``stage1.json``); None when it is.

    Catches a stage 1 trained again by an earlier invocation, which the config alone cannot show.
    A run without ``stage1.json`` cannot be checked, so it is stale too.
    """
    from ranksim.data.files import sha256_of

    record_path = Path(run_dir) / STAGE1_FILE
    if not record_path.is_file():
        return f"it is an RRT stage 2 without {STAGE1_FILE}, so the stage 1 it loaded is unknown"
    try:
        record = json.loads(record_path.read_text())
        checkpoint, loaded = Path(record["checkpoint"]), record["sha256"]
    except (ValueError, KeyError, TypeError):
        return f"{record_path} is damaged, so its stage 1 cannot be checked"
    if not checkpoint.is_file():
        return f"the stage-1 checkpoint it loaded, {checkpoint}, is gone"
    if sha256_of(checkpoint) != loaded:
        return f"its stage 1 ({checkpoint}) was trained again after this run loaded it"
    return None


# ---------------------------------------------------------------------------------------------
# Data fingerprint


def _digest(rows) -> str:
    digest = hashlib.sha256()
    for row in rows:
        digest.update(("\t".join(map(str, row)) + "\n").encode())
    return digest.hexdigest()[:16]


def age_split_fingerprint(table) -> str:
    """Fingerprint of an age split table (columns ``split``, ``path``, ``age``), in file order."""
    return _digest(zip(table["split"], table["path"], table["age"]))


_FINGERPRINTS: dict[tuple, str] = {}


def data_fingerprint(cfg: Config) -> str | None:
    """Fingerprint of the splits ``cfg`` reads: every row's split, sample id and label.

    Age: the split CSV's ``split, path, age`` rows. STS-B: each split file's sentence pairs and
    scores. None when the split files are not there (yet): the synthetic set before its first
    generation, or data not prepared on this machine. Cached per file version in one process.
    """
    d = cfg.data
    try:
        if d.dataset == "sts_b":
            from ranksim.data.sts_b.split_files import read_sts_tsv, split_paths
            paths = split_paths(d.root)
        else:
            from ranksim.data.build import split_file_path
            paths = {"all": split_file_path(cfg)}
    except UserError:
        return None
    if not all(Path(p).is_file() for p in paths.values()):
        return None
    key = (d.dataset, *((str(Path(p).resolve()), Path(p).stat().st_mtime_ns, Path(p).stat().st_size)
                        for p in paths.values()))
    if key not in _FINGERPRINTS:
        if d.dataset == "sts_b":
            rows = []
            for split, path in sorted(paths.items()):
                text = read_sts_tsv(path)
                rows += [(split, s1, s2, f"{score:.4f}")
                         for s1, s2, score in zip(text.sentence1, text.sentence2, text.scores.tolist())]
            _FINGERPRINTS[key] = _digest(rows)
        else:
            from ranksim.data.age.split_file import read_age_split
            _FINGERPRINTS[key] = age_split_fingerprint(read_age_split(paths["all"]))
    return _FINGERPRINTS[key]
