"""DDP on CPU (gloo, 2 processes launched by torchrun), and mixed precision.

* FDS statistics all-reduced from two shards equal the single-process statistics.
* After a faithful (train-mode) FDS pass, BatchNorm buffers are equal on every process.
* Gathered RankSim equals the single-process regularizer of the concatenated batch, in value
  and in the gradient of each process's own features.
* Gathered BMC and ConR equal their single-process values and gradients on the whole batch.
* A 2-process ``train.py`` run writes its files once (rank 0) and its test metrics equal a
  single-process evaluation of the same checkpoint.
* bf16 autocast on CPU trains to metrics close to fp32.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ranksim.methods.fds import FDS
from ranksim.methods.regularizer import batchwise_ranking_regularizer

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
from ddp_checks import bmc_conr_batch, data  # noqa: E402
from tiny import TINY  # noqa: E402

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


def torchrun(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([*TORCHRUN, *args], cwd=cwd, capture_output=True, text=True, timeout=300, env=env)


def test_fds_statistics_all_reduced_equal_single_process(tmp_path):
    proc = torchrun("tests/ddp_checks.py", "fds", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), f"FDS buffer {key} differs between ranks"
    single = FDS(16, bucket_num=40, bucket_start=0, start_update=0)
    features, labels = data()
    for epoch in range(3):
        single.update_last_epoch_stats(epoch)
        single.update_running_stats(features * (epoch + 1), labels, epoch)
    for key, value in single.state_dict().items():
        torch.testing.assert_close(rank0[key], value, rtol=1e-6, atol=1e-7, msg=f"FDS buffer {key}")


def test_faithful_fds_pass_leaves_equal_batchnorm_buffers_on_every_process(tmp_path, data_root):
    """The train-mode FDS pass updates each process's BatchNorm on its own shard; afterwards
    every process must hold process 0's buffers, which validation and best.pt then use."""
    proc = torchrun("tests/ddp_checks.py", "faithful_fds_buffers", str(tmp_path), str(data_root))
    assert proc.returncode == 0, proc.stderr[-3000:]
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    running = [key for key in rank0 if key.endswith("running_mean") and ".fds." not in key]
    assert running, "no BatchNorm buffers found"
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), f"buffer {key} differs between processes"


def test_gathered_ranksim_equals_single_process_on_the_concatenated_batch(tmp_path):
    proc = torchrun("tests/ddp_checks.py", "ranksim", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    g = torch.Generator().manual_seed(1)
    features = torch.randn(64, 8, generator=g, dtype=torch.float64).requires_grad_(True)
    targets = torch.randint(0, 30, (64, 1), generator=g).double()
    loss = batchwise_ranking_regularizer(features, targets, 2.0, generator=torch.Generator().manual_seed(7))
    loss.backward()
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        start, stop = got["slice"]
        torch.testing.assert_close(got["loss"], loss.detach(), rtol=1e-12, atol=0)
        torch.testing.assert_close(got["grad"], features.grad[start:stop], rtol=1e-9, atol=1e-12)


def test_gathered_bmc_and_conr_equal_single_process_on_the_whole_batch(tmp_path):
    """Under DDP, BMC and ConR see the whole batch as on the authors' one GPU: value, the model's
    and sigma's gradients (after DDP's averaging) and ConR's feature gradient equal one process's."""
    from ranksim.methods.balanced_mse import BalancedMSELoss
    from ranksim.methods.conr import conr_loss

    proc = torchrun("tests/ddp_checks.py", "bmc_conr", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    b = bmc_conr_batch()
    model = torch.nn.Linear(8, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(b["weight"])
    bmc = BalancedMSELoss("bmc", 3.0).double()
    loss = bmc(model(b["x"]), b["y"], b["w"])
    loss.backward()
    features = torch.cat([b["views"][0], b["views"][1]]).clone().requires_grad_(True)  # view 1, then view 2
    conr = conr_loss(features, b["y"].repeat(2, 1), torch.cat([b["view_preds"][0], b["view_preds"][1]]),
                     b["w"].repeat(2, 1), threshold=1.0, temperature=0.5, push=0.01, faithful=True)
    conr.backward()
    assert conr.item() > 0
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        start, stop = got["slice"]
        torch.testing.assert_close(got["bmc"], loss.detach(), rtol=1e-12, atol=0)
        torch.testing.assert_close(got["weight_grad"], model.weight.grad, rtol=1e-10, atol=1e-14)
        torch.testing.assert_close(got["sigma_grad"], bmc.noise_sigma.grad, rtol=1e-10, atol=1e-14)
        torch.testing.assert_close(got["conr"], conr.detach(), rtol=1e-10, atol=0)
        mine = torch.cat([features.grad[start:stop], features.grad[24 + start:24 + stop]])
        torch.testing.assert_close(got["features_grad"], mine, rtol=1e-9, atol=1e-14)


def test_torchrun_training_writes_once_and_evaluates_like_one_process(tmp_path, data_root):
    out = tmp_path / "ddp"
    proc = torchrun("train.py", "-c", "configs/quickstart/fds.yaml", *TINY, f"data.root={data_root}",
                    f"output_dir={out}", "method.ranksim.enabled=true", "method.ranksim.gather=true")
    assert proc.returncode == 0, proc.stderr[-4000:]
    names = sorted(p.name for p in out.iterdir())
    assert names.count("train.log") == 1
    writers = {p.name.split(".")[-2] for p in out.glob("events.out.tfevents.*")}  # ...<host>.<pid>.<n>
    assert len(writers) == 1, f"TensorBoard files from several processes: {names}"
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2, "metrics written by more than one rank"
    env = json.loads((out / "env.json").read_text())
    assert env["device"] == "cpu"
    results = json.loads((out / "results.json").read_text())["metrics"]
    evaluated = subprocess.run([sys.executable, "evaluate.py", str(out), "--split", "test", "--device", "cpu"],
                               cwd=REPO, capture_output=True, text=True, timeout=300)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    single = json.loads((out / "eval_test.json").read_text())["metrics"]
    for region, values in results.items():
        assert values["count"] == single[region]["count"]
        for name in ("mse", "mae", "gm"):
            if values[name] is None:  # an empty shot region
                assert single[region][name] is None
            else:
                assert values[name] == pytest.approx(single[region][name], rel=1e-5), (region, name)


def test_bf16_autocast_on_cpu_is_close_to_fp32(tmp_path, data_root):
    sys.path.insert(0, str(REPO))
    import train as train_cli

    common = [*TINY, f"data.root={data_root}", "schedule.epochs=3", "model.width=8"]
    results = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / precision
        assert train_cli.main(["-c", str(REPO / "configs/quickstart/ranksim.yaml"), *common,
                               f"precision={precision}", f"output_dir={out}"]) == 0
        results[precision] = json.loads((out / "results.json").read_text())["metrics"]["all"]
    # Stated tolerance: bf16 keeps 8 bits of mantissa, and three epochs of training amplify the
    # rounding; the overall MAE stays within 15% of fp32's on this task.
    assert results["bf16"]["mae"] == pytest.approx(results["fp32"]["mae"], rel=0.15)
