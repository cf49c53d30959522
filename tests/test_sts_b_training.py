"""train.py on the real STS-B-DIR split (tiny BiLSTM, one epoch): the text path of the pipeline."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from conftest import needs_real_split, real_split_dir

REPO = Path(__file__).resolve().parent.parent
STS_B = real_split_dir("sts-b-dir")
sys.path.insert(0, str(REPO))


@needs_real_split("sts-b-dir")
def test_sts_b_training_with_fds_and_ranksim(tmp_path):
    import train as train_cli

    out = tmp_path / "run"
    rc = train_cli.main(["-c", str(REPO / "configs/sts_b/cpu_vanilla_ranksim.yaml"), f"data.root={STS_B}",
                         f"output_dir={out}", "model.hidden_size=8", "schedule.epochs=1", "method.fds.enabled=true",
                         "optim.batch_size=64", "logging.progress=false", "device=cpu"])
    assert rc == 0
    results = json.loads((out / "results.json").read_text())["metrics"]
    # SPEC 5's fixed bins on this test split: 775 many, 175 medium, 50 few (tests/test_sts_b.py)
    assert [results[r]["count"] for r in ("all", "many", "medium", "few")] == [1000, 775, 175, 50]
    assert results["all"]["mse"] < 6.25  # better than predicting a constant 0 or 5 for every pair
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert record["train"]["ranksim_loss"] > 0
    # The run records the tokenizer that built its vocabulary, resolved from data.tokenizer: auto.
    from ranksim.data.sts_b.text import punkt_installed
    stored = yaml.safe_load((out / "config.yaml").read_text())["data"]["tokenizer"]
    assert stored == ("punkt" if punkt_installed() else "no_punkt")
