"""The config schema: every shipped YAML validates, bases merge, errors name key, file and fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from ranksim.config import Config, all_keys, load_config
from ranksim.errors import UserError

REPO = Path(__file__).resolve().parent.parent
CONFIGS = sorted(p for p in (REPO / "configs").rglob("*.yaml"))


def test_there_are_configs():
    assert len(CONFIGS) >= 5


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(REPO / "configs")))
def test_every_config_loads_and_validates(path):
    cfg = load_config(path)
    assert isinstance(cfg, Config)
    assert cfg.name == str(path.relative_to(REPO / "configs").with_suffix(""))


def test_base_chain_merges_deeply(tmp_path):
    (tmp_path / "a.yaml").write_text("optim:\n  lr: 0.5\n  batch_size: 8\nmethod:\n  fds:\n    ks: 3\n")
    (tmp_path / "b.yaml").write_text("_base_: a.yaml\noptim:\n  lr: 0.25\nmethod:\n  fds:\n    enabled: true\n")
    cfg = load_config(tmp_path / "b.yaml", ["optim.batch_size=16", "schedule.milestones=[3,4]"])
    assert (cfg.optim.lr, cfg.optim.batch_size) == (0.25, 16)
    assert (cfg.method.fds.ks, cfg.method.fds.enabled) == (3, True)
    assert cfg.schedule.milestones == [3, 4]
    assert cfg.method.fds.sigma == 2.0  # untouched defaults survive the merge


def test_int_is_accepted_for_float_and_yaml_exponent_strings():
    cfg = load_config(REPO / "configs/quickstart/vanilla.yaml", ["optim.lr=1", "optim.weight_decay=1e-4"])
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)
    assert cfg.optim.weight_decay == 1e-4


@pytest.mark.parametrize("override,fragments", [
    ("method.ranksim.gama=1", ["unknown key 'method.ranksim.gama'", "method.ranksim.gamma", "command line"]),
    ("optim.batchsize=2", ["optim.batch_size"]),
    ("optim.batch_size=2.5", ["'optim.batch_size' must be of type int"]),
    ("method.fds.enabled=maybe", ["'method.fds.enabled' must be of type bool"]),
    ("method.lds.ks=4", ["positive odd"]),
    ("method.fds.kernel=box", ["gaussian, triang, laplace"]),
    ("optim", ["key.sub=value"]),
    ("method=3", ["'method' is a section"]),
])
def test_bad_overrides_are_user_errors(override, fragments):
    with pytest.raises(UserError) as err:
        load_config(REPO / "configs/quickstart/vanilla.yaml", [override])
    for fragment in fragments:
        assert fragment in str(err.value)


def test_circular_base_is_reported(tmp_path):
    (tmp_path / "a.yaml").write_text("_base_: b.yaml\n")
    (tmp_path / "b.yaml").write_text("_base_: a.yaml\n")
    with pytest.raises(UserError, match="circular"):
        load_config(tmp_path / "a.yaml")


def test_every_schema_key_carries_a_comment():
    """STYLE rule 2: every default explains itself in ranksim/config.py."""
    source = (REPO / "ranksim" / "config.py").read_text().splitlines()
    leaves = {k.rsplit(".", 1)[-1] for k in all_keys()}
    for line in source:
        stripped = line.strip()
        name = stripped.split(":", 1)[0]
        if name in leaves and "=" in stripped and "field(default_factory=" not in stripped and stripped.split(":")[1].strip():
            assert "#" in line, f"config key without a comment: {stripped}"


def test_a_config_that_is_not_text_names_the_file(tmp_path):
    binary = tmp_path / "some.bin"
    binary.write_bytes(bytes(range(128, 256)) * 4)
    with pytest.raises(UserError, match="some.bin is not a text file"):
        load_config(binary)


def test_a_missing_base_names_the_file_that_includes_it(tmp_path):
    (tmp_path / "child.yaml").write_text("_base_: ../nowhere/base.yaml\nseed: 1\n")
    with pytest.raises(UserError) as err:
        load_config(tmp_path / "child.yaml")
    assert f"{tmp_path / 'child.yaml'}: its _base_ file" in str(err.value)
    assert str((tmp_path / "../nowhere/base.yaml").resolve()) in str(err.value)


@pytest.mark.parametrize("text,key,line,first", [
    ("method:\n  loss: l1\noptim:\n  lr: 0.5\nmethod:\n  loss: mse\n", "method", 5, 1),
    ("optim:\n  lr: 0.5\n  batch_size: 8\n  lr: 0.1\n", "lr", 4, 2),
])
def test_a_key_given_twice_in_a_file_is_an_error_naming_key_and_lines(tmp_path, text, key, line, first):
    """PyYAML would keep the last value silently: with the first case, method.loss=mse and no word."""
    path = tmp_path / "dup.yaml"
    path.write_text(text)
    with pytest.raises(UserError) as err:
        load_config(path)
    assert f"dup.yaml, line {line}: key '{key}' appears twice" in str(err.value)
    assert f"first at line {first}" in str(err.value)


def test_a_yaml_merge_key_may_still_be_overridden(tmp_path):
    """'<<: *anchor' then the same key is YAML's way to override a merged value, not a duplicate."""
    path = tmp_path / "merge.yaml"
    path.write_text("optim: &opt\n  lr: 0.5\n  batch_size: 8\nmethod:\n  huber_beta: 2\n")
    assert load_config(path).optim.lr == 0.5
    from ranksim.config import _read_yaml
    path.write_text("a: &x {b: 1, c: 2}\nd:\n  <<: *x\n  b: 3\n")
    assert _read_yaml(path) == {"a": {"b": 1, "c": 2}, "d": {"b": 3, "c": 2}}


FDS_ON = ["method.fds.enabled=true", "method.fds.bucket_num=60", "method.fds.bucket_start=0"]


@pytest.mark.parametrize("overrides,fragment", [
    (["method.fds.bucket_num=0"], "leave no bucket"),
    (["method.fds.bucket_start=60"], "leave no bucket"),
    (["method.fds.bucket_start=-1"], "leave no bucket"),
    (["method.fds.ks=121"], "use ks <= 119"),
    (["method.fds.bucket_start=58", "method.fds.ks=5"], "use ks <= 3"),
    (["method.fds.sigma=0"], "'method.fds.sigma' must be positive"),
    (["method.fds.momentum=1.5"], "'method.fds.momentum' must be in [0, 1]"),
    (["method.fds.clip_min=0"], "0 < method.fds.clip_min <= method.fds.clip_max"),
    (["method.fds.clip_min=3", "method.fds.clip_max=2"], "0 < method.fds.clip_min <= method.fds.clip_max"),
])
def test_fds_values_that_cannot_work_are_refused_at_config_time(overrides, fragment):
    """Each refused config is one the FDS module itself rejects at model build (a ValueError
    traceback before), so the check is neither looser nor stricter than the module."""
    from ranksim.models import build_fds

    with pytest.raises(UserError) as err:
        load_config(REPO / "configs/quickstart/vanilla.yaml", FDS_ON + overrides)
    assert fragment in str(err.value)
    cfg = load_config(REPO / "configs/quickstart/vanilla.yaml", FDS_ON)
    for text in overrides:  # the same values set behind the config check's back
        name, value = text.split("=")[0].rsplit(".", 1)[1], text.split("=")[1]
        setattr(cfg.method.fds, name, type(getattr(cfg.method.fds, name))(value))
    with pytest.raises(ValueError):
        build_fds(cfg, "age")


@pytest.mark.parametrize("overrides", [
    ["method.fds.ks=119"],                                        # (ks - 1) / 2 = 59 < 60 buckets
    ["method.fds.bucket_start=59", "method.fds.ks=1"],           # one bucket, no padding
    ["method.fds.enabled=false", "method.fds.bucket_num=0"],     # FDS off: its settings change nothing
])
def test_fds_values_at_the_edge_are_accepted_and_build(overrides):
    from ranksim.models import build_fds

    cfg = load_config(REPO / "configs/quickstart/vanilla.yaml", FDS_ON + overrides)
    fds = build_fds(cfg, "age")
    assert (fds is None) == (not cfg.method.fds.enabled)


def test_lds_sigma_must_be_positive_when_lds_is_on():
    lds = ["method.reweight=sqrt_inv", "method.lds.enabled=true"]
    with pytest.raises(UserError, match="'method.lds.sigma' must be positive"):
        load_config(REPO / "configs/quickstart/vanilla.yaml", lds + ["method.lds.sigma=0"])
    assert load_config(REPO / "configs/quickstart/vanilla.yaml", ["method.lds.sigma=0"]).method.lds.sigma == 0
