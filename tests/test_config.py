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
