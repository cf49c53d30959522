"""``python -m ranksim.convert authors``: the authors' checkpoint layouts, round trips and refusals.

No download: checkpoints in each of the authors' layouts are made here from one of our models
(keys renamed with the layout table, the ``module.`` prefix added, the FDS buffers under their
names, wrapped in their dict), converted, and evaluated with ``evaluate.py``; the predictions must
equal those of our model evaluated directly. The layout table itself is checked against key names
written out independently from the authors' code (torchvision's ResNet-50 names with their
``linear`` regressor; the AllenNLP module names of their STS-B model).
"""

from __future__ import annotations

import argparse
import builtins
import hashlib
import json
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

from ranksim.engine.identity import RESULTS_VERSION, read_identity
import torch

from ranksim.config import load_config
from ranksim.tools.convert import FDS_BUFFERS, FDS_OURS, LAYOUTS, map_keys
from ranksim.models import build_model

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import evaluate as evaluate_cli  # noqa: E402
from ranksim.tools import convert  # noqa: E402
from tiny import TINY  # noqa: E402

AUTHORS_FDS = ("epoch", "running_mean", "running_var", "running_mean_last_epoch", "running_var_last_epoch",
               "smoothed_mean_last_epoch", "smoothed_var_last_epoch", "num_samples_tracked")

AGE_CONFIG = REPO / "configs" / "quickstart" / "fds.yaml"
STS_CONFIG = REPO / "configs" / "sts_b" / "cpu_fds.yaml"


# ---------------------------------------------------------------------------------------------
# Making the authors' layouts from our models (the inverse of the table under test)


def to_authors(state: dict, name: str, epoch: int = 42) -> dict:
    """Our state dict in the authors' layout ``name``: renamed keys, prefix, FDS names, their wrapper."""
    layout = LAYOUTS[name]
    fds_names = {ours: theirs for theirs, ours in FDS_BUFFERS}
    out = OrderedDict()
    for key, value in state.items():
        theirs, ours = next((t, o) for t, o in layout.prefixes if key.startswith(o))
        rest = key[len(ours):]
        if ours == FDS_OURS:
            rest = fds_names[rest]
            if rest == "epoch":  # theirs: torch.zeros(1).fill_(start_update), a float of shape (1,)
                value = value.reshape(1).float()
        out[layout.strip + theirs + rest] = value.clone()
    if layout.container is None:
        return out
    return {"epoch": epoch, "model": "resnet50", "best_loss": 7.25, layout.container: out,
            "optimizer": {"state": {}, "param_groups": [{"lr": 2.5e-4, "params": [0, 1]}]}}


def randomised(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random values in every buffer too (BatchNorm statistics, FDS), so that none is left to chance."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                tensor.copy_(torch.rand(tensor.shape, generator=gen) * 0.5 + (0.75 if "var" in name else -0.25))
            elif name.endswith("stored_epoch"):
                tensor.fill_(5)
    return model.eval()


# ---------------------------------------------------------------------------------------------
# The table against the authors' key names


def test_age_table_maps_the_authors_resnet50_keys_onto_ours():
    """Their ResNet-50 is torchvision's layer naming with ``linear`` for ``fc`` (their resnet.py)."""
    from torchvision.models import resnet50

    with torch.device("meta"):  # names and shapes only
        torchvision_keys = resnet50(weights=None).state_dict()
    authors = {"module." + ("linear." + k[3:] if k.startswith("fc.") else k): v for k, v in torchvision_keys.items()}
    authors.update({f"module.FDS.{b}": torch.zeros(1) for b in AUTHORS_FDS})
    mapped, unknown, refused = map_keys(authors, "age")
    assert not unknown and not refused
    cfg = load_config(REPO / "configs" / "agedb" / "sqinv_fds_ranksim.yaml")
    with torch.device("meta"):
        ours = build_model(cfg, "age").state_dict()
    assert set(mapped) == set(ours)
    for key in ("encoder.layer4.2.bn3.running_var", "encoder.layer1.0.downsample.0.weight"):
        assert mapped[key].shape == ours[key].shape


def test_sts_b_table_maps_the_authors_allennlp_keys_onto_ours():
    """Names from their models.py / trainer.py and AllenNLP's modules (2-layer BiLSTM, FDS)."""
    lstm = [f"{kind}_l{layer}{direction}" for layer in (0, 1) for direction in ("", "_reverse")
            for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
    authors = ["pair_encoder._text_field_embedder.token_embedder_words.weight",
               *(f"pair_encoder._phrase_layer._module.{k}" for k in lstm),
               "sts-b_pred_layer.weight", "sts-b_pred_layer.bias", *(f"FDS.{b}" for b in AUTHORS_FDS)]
    mapped, unknown, refused = map_keys({k: torch.zeros(1) for k in authors}, "sts_b")
    assert not unknown and not refused
    cfg = load_config(REPO / "configs" / "sts_b" / "fds_ranksim.yaml", ["model.hidden_size=4"])
    assert set(mapped) == set(build_model(cfg, "sts_b", vocab_size=10).state_dict())
    _, _, refused = map_keys({"pair_encoder._highway_layer._module._layers.0.weight": torch.zeros(1)}, "sts_b")
    assert refused and "highway" in refused[0][1]


# ---------------------------------------------------------------------------------------------
# Round trips


def convert_main(source: Path, config: Path, out: Path, *overrides: str) -> int:
    return convert.main(["authors", str(source), "-c", str(config), "--out", str(out), *overrides])


def direct_predictions(model, cfg) -> np.ndarray:
    from ranksim.data.build import build_data
    from ranksim.engine.inference import predict

    data = build_data(cfg)
    preds, _ = predict(model, data.test, data, cfg, torch.device("cpu"))
    return preds


def evaluated_predictions(run: Path) -> np.ndarray:
    assert evaluate_cli.main([str(run), "--split", "test", "--save-features"]) == 0
    with np.load(run / "features_test.npz") as f:
        return f["preds"]


def check_run_folder(run: Path, source: Path, model: torch.nn.Module) -> dict:
    assert (run / "config.yaml").is_file()
    env = json.loads((run / "env.json").read_text())
    assert env["converted_from"]["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert env["converted_from"]["path"] == str(source.resolve()) and "torch" in env
    # the provenance that keeps the authors' weights out of our seeds' rows (ranksim.engine.identity)
    identity = read_identity(run)
    assert identity.provenance == {"kind": "converted", "source": "authors", "file": source.name,
                                   "sha256": env["converted_from"]["sha256"]}
    assert identity.results_version == RESULTS_VERSION and identity.data is not None
    best = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    ours = model.state_dict()
    assert best["model"].keys() == ours.keys()
    for key, value in ours.items():  # every tensor, FDS buffers included, in our dtype
        assert best["model"][key].dtype == value.dtype and torch.equal(best["model"][key], value), key
    return best


@pytest.fixture(scope="module")
def age(tmp_path_factory, data_root):
    """A ResNet-50 with FDS on the tiny synthetic data, in the authors' age layout."""
    tmp = tmp_path_factory.mktemp("age")
    overrides = [*TINY, f"data.root={data_root}", "model.name=resnet50"]
    cfg = load_config(AGE_CONFIG, overrides)
    model = randomised(build_model(cfg, "age"))
    source = tmp / "ckpt.best.pth.tar"
    torch.save(to_authors(model.state_dict(), "age"), source)
    return tmp, overrides, cfg, model, source


def test_age_round_trip_equals_our_model(age, capsys):
    tmp, overrides, cfg, model, source = age
    run = tmp / "runs" / "fds"
    assert convert_main(source, AGE_CONFIG, run, *overrides) == 0
    best = check_run_folder(run, source, model)
    assert best["epoch"] == 42 and best["config"]["name"].endswith("/authors")
    np.testing.assert_allclose(evaluated_predictions(run), direct_predictions(model, cfg), rtol=0, atol=1e-6)
    results = json.loads((run / "results.json").read_text())  # a converted run's test metrics are its results
    assert results["metrics"]["all"]["count"] > 0 and results["best_epoch"] == 42
    import collect_results

    capsys.readouterr()
    assert collect_results.main([str(tmp / "runs")]) == 0
    table = capsys.readouterr().out
    assert "| FDS [the authors' weights, evaluated here] | 1 |" in table and "Runs without results" not in table, table


@pytest.fixture(scope="module")
def sts(tmp_path_factory):
    """Tiny STS-B-DIR split files and a small BiLSTM with FDS in the authors' STS-B layout."""
    tmp = tmp_path_factory.mktemp("sts")
    root = tmp / "sts-b-dir"
    root.mkdir()
    rng = np.random.default_rng(0)
    words = "a man woman dog cat is are plays runs eats the ball food in park house".split()
    header = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"
    for name, rows in (("train_new.tsv", 60), ("dev_new.tsv", 20), ("test_new.tsv", 30)):
        lines = [header]
        for i in range(rows):
            s1, s2 = (" ".join(rng.choice(words, size=rng.integers(2, 7))) for _ in range(2))
            lines.append(f"{i}\tmain\tx\t2012\t{i:04d}\tnone\tnone\t{s1}\t{s2}\t{rng.uniform(0, 5):.1f}")
        (root / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    overrides = [f"data.root={root}", "model.hidden_size=8", "logging.progress=false", "device=cpu"]
    cfg = load_config(STS_CONFIG, overrides)
    from ranksim.data.build import build_data

    model = randomised(build_model(cfg, "sts_b", build_data(cfg).vocab_size))
    source = tmp / "model_state_best.th"
    torch.save(to_authors(model.state_dict(), "sts_b"), source)
    return tmp, overrides, cfg, model, source


def test_sts_b_round_trip_equals_our_model(sts):
    tmp, overrides, cfg, model, source = sts
    run = tmp / "run"
    assert convert_main(source, STS_CONFIG, run, *overrides) == 0
    best = check_run_folder(run, source, model)
    assert best["epoch"] is None  # their model_state file holds no epoch
    np.testing.assert_allclose(evaluated_predictions(run), direct_predictions(model, cfg), rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Refusals: one line, exit 2, nothing written


def refused(capsys, source: Path, config: Path, out: Path, *args: str) -> str:
    assert convert_main(source, config, out, *args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not (out / "checkpoints").exists()
    return err


def test_wrong_layout_is_refused(age, sts, capsys):
    tmp, age_overrides, _, _, age_source = age
    _, sts_overrides, _, _, sts_source = sts
    err = refused(capsys, sts_source, AGE_CONFIG, tmp / "x", *age_overrides)
    assert "does not have the authors' age layout" in err and "looks like the sts_b layout" in err
    err = refused(capsys, age_source, STS_CONFIG, tmp / "x", *sts_overrides)
    assert "does not have the authors' sts_b layout" in err and "looks like the age layout" in err
    err = refused(capsys, age_source, REPO / "configs" / "quickstart" / "vanilla.yaml", tmp / "x", *age_overrides[:-1])
    assert "ResNet-50" in err and "model.name=resnet_small" in err


def test_fds_config_mismatch_is_refused(age, sts, capsys):
    tmp, overrides, _, _, source = age
    err = refused(capsys, source, AGE_CONFIG, tmp / "x", *overrides, "method.fds.enabled=false")
    assert "checkpoint has FDS buffers" in err and "config has FDS disabled" in err
    _, sts_overrides, _, model, _ = sts
    no_fds = tmp / "no_fds.th"
    torch.save(to_authors({k: v for k, v in model.state_dict().items() if not k.startswith(FDS_OURS)}, "sts_b"), no_fds)
    err = refused(capsys, no_fds, STS_CONFIG, tmp / "x", *sts_overrides)
    assert "config enables FDS" in err and "no FDS buffers" in err


def test_sts_b_vocabulary_size_mismatch_is_refused(sts, capsys):
    tmp, overrides, _, model, _ = sts
    state = to_authors(model.state_dict(), "sts_b")
    key = "pair_encoder._text_field_embedder.token_embedder_words.weight"
    rows = state[key].shape[0]
    state[key] = torch.cat([state[key], torch.zeros(3, state[key].shape[1])])
    bigger = tmp / "bigger.th"
    torch.save(state, bigger)
    err = refused(capsys, bigger, STS_CONFIG, tmp / "x", *overrides)
    assert f"{rows + 3} rows but our vocabulary has {rows} words" in err


def test_missing_unexpected_and_misshapen_keys_are_refused(sts, capsys):
    tmp, overrides, _, model, _ = sts
    state = to_authors(model.state_dict(), "sts_b")
    missing = OrderedDict((k, v) for k, v in state.items() if k != "sts-b_pred_layer.bias")
    torch.save(missing, tmp / "missing.th")
    err = refused(capsys, tmp / "missing.th", STS_CONFIG, tmp / "x", *overrides)
    assert "lacks keys our model has (head.linear.bias)" in err
    extra = OrderedDict(state, **{"pair_encoder._phrase_layer._module.weight_ih_l1": torch.zeros(32, 16)})
    torch.save(extra, tmp / "extra.th")
    err = refused(capsys, tmp / "extra.th", STS_CONFIG, tmp / "x", *overrides)
    assert "keys our model lacks (lstm.weight_ih_l1)" in err and "model.num_layers" in err
    unknown = OrderedDict(state, **{"pair_encoder.something_new": torch.zeros(1)})
    torch.save(unknown, tmp / "unknown.th")
    err = refused(capsys, tmp / "unknown.th", STS_CONFIG, tmp / "x", *overrides)
    assert "does not map (pair_encoder.something_new)" in err
    err = refused(capsys, tmp / "model_state_best.th", STS_CONFIG, tmp / "x", *overrides, "model.hidden_size=16")
    assert "lstm.weight_ih_l0 (32, 300) vs (64, 300)" in err and "model.hidden_size" in err


def test_unsafe_pickles_are_refused_unless_trusted(age, sts, capsys):
    tmp, overrides, _, model, source = age
    checkpoint = torch.load(source, weights_only=True)
    checkpoint["args"] = argparse.Namespace(lr=2.5e-4)  # what a training script might also save
    with_args = tmp / "with_args.pth.tar"
    torch.save(checkpoint, with_args)
    err = refused(capsys, with_args, AGE_CONFIG, tmp / "trusted", *overrides)
    assert "argparse.Namespace" in err and "--trust-checkpoint" in err
    assert convert_main(with_args, AGE_CONFIG, tmp / "trusted", *overrides, "--trust-checkpoint") == 0
    check_run_folder(tmp / "trusted", with_args, model)

    capsys.readouterr()
    sts_tmp, sts_overrides, _, _, _ = sts
    marker = sts_tmp / "marker"

    class Payload:
        def __reduce__(self):
            return builtins.open, (str(marker), "w")

    evil = sts_tmp / "evil.th"
    torch.save(OrderedDict(x=Payload()), evil)
    err = refused(capsys, evil, STS_CONFIG, sts_tmp / "x", *sts_overrides)
    assert "--trust-checkpoint" in err and not marker.exists()


def test_existing_run_folder_is_not_overwritten(sts, capsys):
    tmp, overrides, _, _, source = sts
    out = tmp / "taken"
    (out / "checkpoints").mkdir(parents=True)
    assert convert_main(source, STS_CONFIG, out, *overrides) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_help_explains_the_layouts(capsys):
    with pytest.raises(SystemExit):
        convert.main(["authors", "--help"])
    text = capsys.readouterr().out
    for fragment in ("module.", "state_dict", "linear", "FDS.", "sts-b_pred_layer", "weights_only=True",
                     "--trust-checkpoint", "python evaluate.py"):
        assert fragment in text, fragment


# ---------------------------------------------------------------------------------------------
# STS-B: the vocabulary order, proved by the frozen GloVe rows


def glove_cache_of(model, cfg, folder: Path) -> list[str]:
    """A GloVe cache for the config's vocabulary in which every other word is 'in GloVe' with
    the model's own embedding row (the authors' embeddings are frozen GloVe rows)."""
    from ranksim.data.sts_b.dataset import load_sts_b
    from ranksim.data.sts_b.glove import write_embedding_cache

    vocab = load_sts_b(cfg.data.root, tokenizer=cfg.data.tokenizer).vocab
    matrix = model.state_dict()["embedding.weight"].numpy().copy()
    found = np.arange(len(vocab)) % 2 == 0
    found[:2] = False  # padding and <unk> are never GloVe's
    write_embedding_cache(folder, vocab, matrix, found)
    return vocab


def test_sts_b_vocabulary_order_is_checked_against_glove(sts, capsys):
    tmp, overrides, cfg, model, source = sts
    vocab = glove_cache_of(model, cfg, tmp / "glove")
    run = tmp / "checked"
    assert convert_main(source, STS_CONFIG, run, *overrides, f"data.glove_dir={tmp / 'glove'}") == 0
    record = json.loads((run / "env.json").read_text())["converted_from"]
    assert record["vocabulary_order"] == f"checked: {(len(vocab) - 1) // 2} rows equal GloVe"
    # Rows in another order (the vocabulary counted another way): refused, naming the words.
    state = to_authors(model.state_dict(), "sts_b")
    key = "pair_encoder._text_field_embedder.token_embedder_words.weight"
    order = torch.arange(len(vocab))
    order[2:] = 2 + torch.randperm(len(vocab) - 2, generator=torch.Generator().manual_seed(0))
    state[key] = state[key][order]
    shuffled = tmp / "shuffled.th"
    torch.save(state, shuffled)
    capsys.readouterr()
    err = refused(capsys, shuffled, STS_CONFIG, tmp / "x", *overrides, f"data.glove_dir={tmp / 'glove'}")
    first = next(i for i in range(2, len(vocab), 2) if order[i] != i)
    assert "differ from their GloVe vectors" in err and repr(vocab[first]) in err
    # Without GloVe the order cannot be checked, and the converter says so.
    run = tmp / "unchecked"
    assert convert_main(source, STS_CONFIG, run, *overrides) == 0
    assert "WARNING the order of the vocabulary was NOT checked" in capsys.readouterr().err
    assert json.loads((run / "env.json").read_text())["converted_from"]["vocabulary_order"].startswith("not checked")
