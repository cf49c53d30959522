"""The one config schema: a tree of dataclasses, YAML files with a base chain, and overrides.

Every default lives here, with a comment on why it is set and when to change it. An experiment
YAML holds only deltas on its base (``_base_: ../base.yaml``; mappings merge deeply, lists and
scalars replace). ``key.sub=value`` overrides come last on the command line and are parsed as
YAML scalars (``method.ranksim.gamma=100``, ``schedule.milestones=[60,80]``).

An unknown key or a value of the wrong type is a :class:`~ranksim.errors.UserError` that names
the key, the file it came from and the closest valid key, because the authors' scripts let typos
pass silently (``parse_known_args``) and a typo in an ablation is a wasted GPU day.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ranksim.errors import UserError

BASE_KEY = "_base_"


@dataclass
class SyntheticConfig:
    """The generated quick-start dataset (``data.dataset: synthetic``)."""

    num_samples: int = 4000      # images in the pool before the val/test split; ~25 s of training per quick-start method on 2 CPU cores
    image_size: int = 32         # stored JPEG size; the bar that encodes the label needs no more
    max_per_label: int = 6       # val/test cap per label, as AgeDB-DIR caps at 30 (scaled to the pool)
    seed: int = 0                # fixes labels, images and split; change it for an independent dataset


@dataclass
class DataConfig:
    dataset: str = "synthetic"   # synthetic | agedb | imdb_wiki | sts_b: picks the reader, binning and shot rule
    root: str = "data/synthetic"  # data root; the split file's paths are relative to it
    split_file: str = ""         # age split CSV; empty means <root>/<dataset>.csv (agedb.csv, imdb_wiki.csv, synthetic.csv)
    image_size: int = 224        # SPEC 6 resizes every face to 224x224; the quick start uses 32
    crop_padding: int = 16       # RandomCrop padding of SPEC 6 (16 at 224 px); scale it with image_size
    use_cache: bool = True       # read the uint8 image cache when `prepare cache` built one (lossless, several times faster)
    skip_bad_images: bool = False  # false: a corrupt/missing image stops the run naming the file; true: skip and count it
    num_workers: int = 2         # DataLoader worker processes per training process; 0 loads in the main process (easiest to debug)
    persistent_workers: bool = True  # keep workers alive across epochs (saves their start-up each epoch); needs num_workers > 0
    pin_memory: bool = True      # page-locked host batches for faster copies to CUDA; ignored on CPU
    prefetch_factor: int = 2     # batches each worker loads ahead; raise it if the GPU waits on data
    max_train_samples: int = 0   # keep only the first N training rows (0 = all); for smoke tests and debugging
    glove_dir: str = ""          # STS-B: folder with the cached GloVe matrix; empty means random trainable embeddings
    max_seq_len: int = 40        # STS-B: tokens kept per sentence (SPEC 6)
    max_vocab: int = 30000       # STS-B: vocabulary size over all splits (SPEC 6)
    tokenizer: str = "auto"      # STS-B: punkt (the authors' word_tokenize; needs nltk punkt_tab) | no_punkt | auto (punkt if installed); runs store the one used
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)


@dataclass
class ModelConfig:
    name: str = "resnet50"       # resnet50 (SPEC 7) | resnet_small (quick start) | bilstm (STS-B, SPEC 7)
    width: int = 16              # resnet_small: channels of the first stage (doubles per stage)
    hidden_size: int = 1500      # bilstm: LSTM hidden size per direction (paper 1500; CPU configs use less)
    num_layers: int = 2          # bilstm: stacked LSTM layers (paper 2)
    dropout: float = 0.2         # bilstm: dropout after the embeddings and after the LSTM (paper 0.2)
    freeze_embeddings: bool = True  # bilstm: keep GloVe frozen as in the paper; ignored without GloVe
    channels_last: bool = False  # resnet: NHWC memory format, faster with cuDNN on recent GPUs
    compile: bool = False        # torch.compile the model: faster steps on GPU after a minute of compilation


@dataclass
class LDSConfig:
    enabled: bool = False        # Label Distribution Smoothing of the re-weighting density (SPEC 3)
    kernel: str = "gaussian"     # gaussian | triang | laplace; the paper uses gaussian
    ks: int = 5                  # kernel size, odd; paper 5
    sigma: float = 2.0           # kernel width; paper 2


@dataclass
class FDSConfig:
    enabled: bool = False        # Feature Distribution Smoothing between encoder and regressor (SPEC 4)
    kernel: str = "gaussian"     # gaussian | triang | laplace; paper gaussian
    ks: int = 5                  # kernel size, odd; paper 5
    sigma: float = 2.0           # kernel width; paper 2
    start_update: int = 0        # first epoch whose end updates the running statistics; paper 0
    start_smooth: int = 1        # first epoch that calibrates features; paper 1
    momentum: float = 0.9        # running-statistics momentum; paper 0.9
    bucket_num: int = 100        # age: 100 buckets; STS-B: 50 bins
    bucket_start: int = 3        # AgeDB-DIR 3, IMDB-WIKI-DIR 0, STS-B 0 (SPEC 4)
    clip_min: float = 0.1        # variance-ratio clip; age (0.1, 10), STS-B (0.5, 2)
    clip_max: float = 10.0       # upper end of the clip range (see clip_min)


@dataclass
class RankSimConfig:
    enabled: bool = False        # add the batch-wise ranking-similarity regularizer (SPEC 2)
    gamma: float = 100.0         # balancing weight of the regularizer: 100 for age, 3e-4 for STS-B
    interpolation_lambda: float = 2.0  # blackbox-ranking interpolation strength; paper 2
    # Under DDP: false (default) applies RankSim to each process's own batch (batch_size / N
    # samples); true gathers the features of all processes first, so that RankSim sees the global
    # batch, as the paper's single-GPU batch does.
    gather: bool = False         # see above
    # Not in the paper (off by default): subtract the batch mean of the features before the cosine
    # similarity, so that a component common to all samples (pooled ReLU features) cannot
    # dominate every similarity. See docs/ranksim_features.md.
    center_features: bool = False  # see above


@dataclass
class RRTConfig:
    enabled: bool = False        # Regressor re-training: stage 2 re-trains only the regressor (SPEC 8)
    stage1: str = ""             # run folder or checkpoint of the finished stage-1 run whose encoder is loaded


@dataclass
class BalancedMSEConfig:
    # Balanced MSE (SPEC 9.1), used when method.loss is bmse. The authors' protocol re-trains the
    # regressor of a vanilla stage 1 (method.rrt) for 10 epochs at lr 1e-4.
    variant: str = "bmc"         # bmc (batch Monte-Carlo) | gai (Gaussian mixture) | bni (label histogram)
    init_noise_sigma: float = 10.0  # initial noise scale sigma, in target units; the authors use 10 on age
    sigma_lr: float = 1e-2       # Adam lr of sigma's own parameter group (authors 1e-2); 0 keeps sigma fixed
    gmm_components: int = 8      # GAI: components of the 1-D GMM fitted to the training labels (authors 8)


@dataclass
class ConRConfig:
    # ConR (SPEC 9.2): a contrastive regularizer on two extra augmented views of each batch
    # (one extra forward pass of 2B images); image datasets only.
    enabled: bool = False        # add ConR: loss = task + weight * ConR (+ gamma * RankSim)
    weight: float = 4.0          # beta, the loss weight; authors' AgeDB/IMDB-WIKI README 4
    threshold: float = 1.0       # w, label distance (target units) under which two samples are positives; authors 1
    temperature: float = 0.07    # t, similarity temperature; the authors' code uses 0.07 (their README's 0.2 is overridden)
    push: float = 0.01           # e, pushing-power scale of the negative weights exp(e * |y_i - y_j|); authors 0.01


@dataclass
class MethodConfig:
    loss: str = "l1"             # l1 | mse | huber | focal_l1 | focal_mse | bmse (Balanced MSE); age uses l1, STS-B mse
    focal_activate: str = "sigmoid"  # Focal-R factor: sigmoid (paper) or tanh
    focal_beta: float = 0.2      # Focal-R beta (paper 0.2)
    focal_gamma: float = 1.0     # Focal-R gamma (paper 1)
    huber_beta: float = 1.0      # Huber transition point, in target units
    reweight: str = "none"       # none | inverse | sqrt_inv (SPEC 3)
    # true reproduces the authors' quirks: LDS integer truncation (SPEC 3), the three FDS quirks
    # (SPEC 4) and ConR's denominator (SPEC 9.2); the paper-table configs set it. false fixes them and makes a resumed run exact.
    faithful: bool = False       # see above; the paper-table configs set true
    lds: LDSConfig = field(default_factory=LDSConfig)
    fds: FDSConfig = field(default_factory=FDSConfig)
    ranksim: RankSimConfig = field(default_factory=RankSimConfig)
    rrt: RRTConfig = field(default_factory=RRTConfig)
    bmse: BalancedMSEConfig = field(default_factory=BalancedMSEConfig)
    conr: ConRConfig = field(default_factory=ConRConfig)


@dataclass
class OptimConfig:
    optimizer: str = "adam"      # adam | sgd; the paper uses Adam
    lr: float = 1e-3             # DIR baselines 1e-3 at batch 256; RankSim AgeDB 2.5e-4 at batch 64
    weight_decay: float = 0.0    # the authors pass 1e-4 only to SGD
    momentum: float = 0.9        # sgd only
    batch_size: int = 256        # global batch size; divided across processes under DDP
    grad_clip: float = 0.0       # clip the gradient norm to this (0 = off); STS-B uses 5


@dataclass
class ScheduleConfig:
    epochs: int = 90             # IMDB-WIKI-DIR 90, AgeDB-DIR 120
    milestones: list[int] = field(default_factory=lambda: [60, 80])  # epochs at which the LR is multiplied by lr_gamma
    lr_gamma: float = 0.1        # the paper divides by 10
    val_every_iters: int = 0     # validate every N iterations (STS-B 400); 0 means once per epoch
    patience: int = 0            # stop after this many validations without improvement (STS-B 30); 0 = never
    # How `patience` is applied. no_new_best: stop after `patience` validations in a row without a
    # new best. worst_of_window: the authors' STS-B check (SPEC 8), stop when the latest
    # validation value is the worst of the last patience + 1 (len(h) > patience + 1 and
    # max(h[-(patience + 1):]) <= h[-1]); the STS-B paper configs use it.
    stop_rule: str = "no_new_best"  # see above: no_new_best | worst_of_window
    max_validations: int = 0     # stop after this many validations (STS-B 300); 0 = no limit
    plateau_lr_factor: float = 1.0  # multiply the LR by this on each validation without a new best; 1 = off (the authors' STS-B trainer stores 0.99 but never applies it)
    select_by: str = "auto"      # validation metric that picks best.pt: mae | mse | bmae | bmse (balanced, SPEC 9.1) | auto (mse when the loss is mse or bmse)


@dataclass
class LoggingConfig:
    tensorboard: bool = True     # write TensorBoard scalars and figures into the run folder
    log_every_iters: int = 50    # TensorBoard training scalars every N iterations
    progress: bool = True        # tqdm bars; off in CI logs
    max_loss: float = 1e6        # a loss above this (or NaN/inf) stops the run: the model has diverged
    # Feature diagnostics at every validation and in results.json (ranksim.evaluation.diagnostics.FeatureDiagnostics):
    # pairwise cosine mean/5th percentile, the RankSim regularizer on fixed batches, rank correlation.
    diagnostics: bool = True     # cheap (one n x n similarity matrix); shows a collapse of the features
    diagnostic_samples: int = 2000  # fixed random subset of the split they are measured on; larger costs O(n^2)
    # Config keys (dotted) added to TensorBoard's hparams, so that its HParams tab compares the
    # points of an ablation; scripts/sweep.py sets it to the swept keys.
    hparams: list[str] = field(default_factory=list)  # see above


@dataclass
class Config:
    name: str = ""               # run name; empty means the config file's path under configs/
    title: str = ""              # the row's name in the paper's table (e.g. "SQINV + LDS + RankSim"); the collector prints it
    seed: int = 0                # seeds torch, numpy, the sampler and RankSim's de-duplication
    device: str = "auto"         # auto (cuda if present, else cpu) | cpu | cuda | cuda:N
    precision: str = "fp32"      # fp32 | bf16 | fp16 autocast (fp16 adds a grad scaler); RankSim ranks and FDS statistics stay float32
    output_dir: str = ""         # run folder; empty means runs/<name>/<timestamp>
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)


# ---------------------------------------------------------------------------------------------
# Loading


def all_keys(cls: type = Config, prefix: str = "") -> list[str]:
    """Every dotted key of the schema, for 'did you mean' suggestions."""
    keys = []
    for name, typ in typing.get_type_hints(cls).items():
        keys.append(prefix + name)
        if dataclasses.is_dataclass(typ):
            keys += all_keys(typ, prefix + name + ".")
    return keys


def _suggest(key: str) -> str:
    close = difflib.get_close_matches(key, all_keys(), n=1, cutoff=0.5)
    if not close:  # a typo in the last part only: compare leaf names
        leaf = key.rsplit(".", 1)[-1]
        leaves = {k.rsplit(".", 1)[-1]: k for k in all_keys()}
        close = [leaves[m] for m in difflib.get_close_matches(leaf, list(leaves), n=1, cutoff=0.6)]
    return f"; did you mean '{close[0]}'?" if close else ""


def _coerce(value: Any, typ: Any, key: str, source: str) -> Any:
    """Check ``value`` against the annotation ``typ``; ints are accepted where floats are expected."""
    origin = typing.get_origin(typ)
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if typ is float and isinstance(value, str):  # YAML reads 1e-3 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if origin is list:
        (item_type,) = typing.get_args(typ)
        if not isinstance(value, list):
            raise UserError(f"{source}: '{key}' must be a list of {item_type.__name__}, got {value!r}")
        return [_coerce(v, item_type, key, source) for v in value]
    if typ is dict or origin is dict:
        if not isinstance(value, dict):
            raise UserError(f"{source}: '{key}' must be a mapping, got {value!r}")
        return value
    if isinstance(typ, type) and isinstance(value, typ) and not (typ is int and isinstance(value, bool)):
        return value
    name = getattr(typ, "__name__", str(typ))
    raise UserError(f"{source}: '{key}' must be of type {name}, got {value!r} ({type(value).__name__})")


def _apply(obj: Any, mapping: dict, source: str, prefix: str = "") -> None:
    hints = typing.get_type_hints(type(obj))
    for name, value in mapping.items():
        key = prefix + str(name)
        if name not in hints:
            raise UserError(f"{source}: unknown key '{key}'{_suggest(key)}")
        typ = hints[name]
        if dataclasses.is_dataclass(typ):
            if not isinstance(value, dict):
                raise UserError(f"{source}: '{key}' is a section; give it as a mapping, not {value!r}")
            _apply(getattr(obj, name), value, source, key + ".")
        else:
            setattr(obj, name, _coerce(value, typ, key, source))


class _DuplicateKey(Exception):
    def __init__(self, key, line: int, first_line: int):
        super().__init__(key, line, first_line)
        self.key, self.line, self.first_line = key, line, first_line


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping: PyYAML keeps the last
    one silently, so a second ``method:`` block would drop the first without a word."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            first_lines: dict = {}
            for key_node, _ in node.value:
                # Only plain keys; '<<: *anchor' merges may be overridden by design.
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node)
                line = key_node.start_mark.line + 1
                if key in first_lines:
                    raise _DuplicateKey(key, line, first_lines[key])
                first_lines[key] = line
        return super().construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _StrictLoader.construct_mapping)


def _read_yaml(path: Path, included_by: Path | None = None) -> dict:
    if not path.is_file():
        if included_by is not None:
            raise UserError(f"{included_by}: its {BASE_KEY} file {path} does not exist; fix the {BASE_KEY} line "
                            "(it is relative to the including file's folder)")
        raise UserError(f"config file not found: {path}; configs live under configs/ (e.g. configs/quickstart/vanilla.yaml)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{path} is not a text file (not UTF-8); a config is a YAML file such as "
                        "configs/quickstart/vanilla.yaml") from None
    except OSError as err:
        raise UserError(f"cannot read config file {path}: {err.strerror}") from None
    try:
        data = yaml.load(text, Loader=_StrictLoader) or {}
    except _DuplicateKey as dup:
        raise UserError(f"{path}, line {dup.line}: key '{dup.key}' appears twice in one mapping (first at line "
                        f"{dup.first_line}); keep one, since YAML would silently use the last") from None
    except yaml.YAMLError as err:
        raise UserError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: a config file must be a mapping of keys, got {type(data).__name__}")
    return data


def _layers(path: Path, seen: tuple[Path, ...] = (), included_by: Path | None = None) -> list[tuple[Path, dict]]:
    """The chain of (file, mapping) from the root base to ``path``."""
    path = path.resolve()
    if path in seen:
        raise UserError(f"{path}: circular {BASE_KEY} chain: {' -> '.join(str(p) for p in seen + (path,))}")
    data = _read_yaml(path, included_by)
    base = data.pop(BASE_KEY, None)
    chain = _layers((path.parent / base), seen + (path,), path) if base else []
    return chain + [(path, data)]


def parse_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise UserError(f"override '{text}' must look like key.sub=value (e.g. optim.lr=1e-4)")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def _nest(key: str, value: Any) -> dict:
    for part in reversed(key.split(".")):
        value = {part: value}
    return value


def default_name(config_path: Path) -> str:
    """``configs/agedb/ranksim.yaml`` -> ``agedb/ranksim``; outside configs/ the file stem."""
    parts = config_path.resolve().with_suffix("").parts
    if "configs" in parts:
        return "/".join(parts[len(parts) - parts[::-1].index("configs"):])
    return config_path.stem


def load_config(path: str | Path, overrides: list[str] = ()) -> Config:
    """Build a validated :class:`Config` from a YAML file (with its bases) and overrides."""
    path = Path(path)
    cfg = Config()
    for layer_path, data in _layers(path):
        _apply(cfg, data, str(layer_path))
    for text in overrides:
        key, value = parse_override(text)
        _apply(cfg, _nest(key, value), "command line")
    if not cfg.name:
        cfg.name = default_name(path)
    validate(cfg)
    return cfg


def config_from_dict(data: dict, source: str = "config") -> Config:
    cfg = Config()
    _apply(cfg, data, source)
    validate(cfg)
    return cfg


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def dump(cfg: Config, path: Path) -> None:
    path.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


CHOICES = {
    "data.dataset": ("synthetic", "agedb", "imdb_wiki", "sts_b"),
    "data.tokenizer": ("auto", "punkt", "no_punkt"),
    "model.name": ("resnet50", "resnet_small", "bilstm"),
    "method.loss": ("l1", "mse", "huber", "focal_l1", "focal_mse", "bmse"),
    "method.bmse.variant": ("bmc", "gai", "bni"),
    "method.focal_activate": ("sigmoid", "tanh"),
    "method.reweight": ("none", "inverse", "sqrt_inv"),
    "method.lds.kernel": ("gaussian", "triang", "laplace"),
    "method.fds.kernel": ("gaussian", "triang", "laplace"),
    "optim.optimizer": ("adam", "sgd"),
    "schedule.select_by": ("auto", "mae", "mse", "bmae", "bmse"),
    "schedule.stop_rule": ("no_new_best", "worst_of_window"),
    "precision": ("fp32", "bf16", "fp16"),
}


def get_key(cfg: Config, key: str) -> Any:
    obj = cfg
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


def validate(cfg: Config) -> None:
    """Cross-field checks that types alone cannot express; each error says how to fix it."""
    for key, choices in CHOICES.items():
        value = get_key(cfg, key)
        if value not in choices:
            raise UserError(f"'{key}' is {value!r}; valid values: {', '.join(choices)}")
    m = cfg.method
    if m.lds.enabled and m.reweight == "none":
        raise UserError("method.lds.enabled needs a re-weighting scheme: set method.reweight=sqrt_inv or inverse")
    for key in ("method.lds.ks", "method.fds.ks"):
        ks = get_key(cfg, key)
        if ks <= 0 or ks % 2 == 0:
            raise UserError(f"'{key}' is {ks}; the kernel size must be a positive odd number (the paper uses 5)")
    if not m.ranksim.interpolation_lambda > 0:  # the blackbox backward divides by it (SPEC 2.2)
        raise UserError(f"'method.ranksim.interpolation_lambda' must be positive, got {m.ranksim.interpolation_lambda} "
                        "(the paper uses 2)")
    if cfg.method.rrt.enabled and not cfg.method.rrt.stage1:
        raise UserError("method.rrt.enabled needs method.rrt.stage1=RUN_DIR, the finished stage-1 run to re-train the regressor of")
    for key in cfg.logging.hparams:
        if key not in all_keys() or dataclasses.is_dataclass(get_key(cfg, key)):
            raise UserError(f"logging.hparams names '{key}', which is not a config value{_suggest(key)}")
    if not (cfg.device == "auto" or cfg.device == "cpu" or cfg.device.startswith("cuda")):
        raise UserError(f"'device' is {cfg.device!r}; valid values: auto, cpu, cuda, cuda:N")
    if not 0 < cfg.schedule.plateau_lr_factor <= 1:
        raise UserError(f"'schedule.plateau_lr_factor' must be in (0, 1] (1 = no plateau decay), "
                        f"got {cfg.schedule.plateau_lr_factor}")
    positive = ("optim.lr", "optim.batch_size", "schedule.epochs", "data.image_size")
    for key in positive:
        if get_key(cfg, key) <= 0:
            raise UserError(f"'{key}' must be positive, got {get_key(cfg, key)}")
    _validate_bmse_conr(cfg)
    _validate_lds_fds(cfg)
    if (cfg.model.name == "bilstm") != (cfg.data.dataset == "sts_b"):
        raise UserError(f"model.name={cfg.model.name} does not fit data.dataset={cfg.data.dataset}: "
                        "use bilstm for sts_b and a resnet for the image datasets")


def _validate_lds_fds(cfg: Config) -> None:
    """LDS and FDS settings that ranksim.methods.lds and ranksim.methods.fds would refuse only once the data and
    model are built (SPEC 3, 4); checked here so that a bad value is one line within a second.
    Settings of a method that is off are not checked: they change nothing."""
    lds, f = cfg.method.lds, cfg.method.fds
    for key, kernel in (("method.lds", lds), ("method.fds", f)):
        if kernel.enabled and not kernel.sigma > 0:
            raise UserError(f"'{key}.sigma' must be positive, got {kernel.sigma} (the paper uses 2)")
    if not f.enabled:
        return
    paper = "AgeDB-DIR 100 and 3, IMDB-WIKI-DIR 100 and 0, STS-B-DIR 50 and 0"
    if f.bucket_num < 1 or not 0 <= f.bucket_start < f.bucket_num:
        raise UserError(f"'method.fds.bucket_num' {f.bucket_num} and 'method.fds.bucket_start' {f.bucket_start} "
                        f"leave no bucket: need 0 <= bucket_start < bucket_num ({paper})")
    buckets, half = f.bucket_num - f.bucket_start, (f.ks - 1) // 2
    # The smoothing pads the bucket axis by reflection, which needs more buckets than the padding.
    if half >= buckets:
        raise UserError(f"'method.fds.ks' {f.ks} is too large for the {buckets} FDS buckets "
                        f"(bucket_num {f.bucket_num} - bucket_start {f.bucket_start}): use ks <= {2 * buckets - 1}")
    if cfg.data.dataset == "sts_b" and buckets < 2:
        raise UserError(f"FDS on sts_b fills an empty bucket from its neighbours and needs at least 2 buckets, "
                        f"got {buckets}; set method.fds.bucket_num=50 method.fds.bucket_start=0")
    if not 0.0 <= f.momentum <= 1.0:
        raise UserError(f"'method.fds.momentum' must be in [0, 1], got {f.momentum} (the paper uses 0.9)")
    if not 0.0 < f.clip_min <= f.clip_max:
        raise UserError(f"need 0 < method.fds.clip_min <= method.fds.clip_max, got {f.clip_min} and {f.clip_max} "
                        "(age 0.1 and 10, STS-B 0.5 and 2)")
    if f.start_update < 0 or f.start_smooth < 0:
        raise UserError(f"'method.fds.start_update' and 'method.fds.start_smooth' are epochs and must be >= 0, "
                        f"got {f.start_update} and {f.start_smooth}")


def _validate_bmse_conr(cfg: Config) -> None:
    """Balanced MSE and ConR settings (SPEC 9)."""
    b, c = cfg.method.bmse, cfg.method.conr
    if b.init_noise_sigma <= 0:
        raise UserError(f"'method.bmse.init_noise_sigma' must be positive, got {b.init_noise_sigma}")
    if b.sigma_lr < 0:
        raise UserError(f"'method.bmse.sigma_lr' must be >= 0 (0 keeps sigma fixed), got {b.sigma_lr}")
    if b.gmm_components < 1:
        raise UserError(f"'method.bmse.gmm_components' must be at least 1, got {b.gmm_components}")
    if c.temperature <= 0:
        raise UserError(f"'method.conr.temperature' must be positive, got {c.temperature} (the authors use 0.07)")
    for key in ("weight", "threshold", "push"):
        if getattr(c, key) < 0:
            raise UserError(f"'method.conr.{key}' must be >= 0, got {getattr(c, key)}")
    if c.enabled and cfg.data.dataset == "sts_b":
        raise UserError("method.conr.enabled is not available for sts_b: ConR's two views are image augmentations "
                        "(SPEC 9.2) and STS-B has none; see docs/balanced_mse_conr.md")
