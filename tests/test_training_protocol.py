"""The training protocol's rules, checked piece by piece: stop rules, the faithful FDS pass order,
per-sample augmentation seeds, one-pass loaders, the FDS stale-epoch guard, the paper configs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from ranksim.config import load_config
from ranksim.data.seeding import KeyedSampler, SeededItems, ShuffledShard
from ranksim.engine.build import make_loader, sharded_loader
from ranksim.engine.loop import Trainer, worst_of_window
from ranksim.methods.fds import FDS

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
from tiny import TINY  # noqa: E402


# ---------------------------------------------------------------------------------------------
# Stop rules


def authors_rule_reference(history: list, patience: int) -> bool:
    """SPEC 8 written out: the latest value is >= every value of the last patience + 1."""
    if len(history) <= patience + 1:
        return False
    window = history[len(history) - patience - 1:]
    return all(value <= history[-1] for value in window)


def no_new_best_reference(history: list, patience: int) -> bool:
    """'patience validations without a new best', a new best being strictly below all earlier."""
    best, since = float("inf"), 0
    for value in history:
        since = 0 if value < best else since + 1
        best = min(best, value)
    return since >= patience


@pytest.mark.parametrize("history,patience,authors,no_new_best", [
    # Best long ago, then a slow drift down that never beats it: "no new best" stops after 3,
    # the authors' check does not (the latest value is never the worst of the window).
    ([1.0, 5.0, 4.0, 3.0, 2.9, 2.8], 3, False, True),
    # A new best every other step, each followed by a spike: "no new best" never reaches 3,
    # the authors' check stops once the latest spike is the worst of the last 4.
    ([9.0, 8.0, 9.5, 7.0, 9.5, 6.0, 9.6], 3, True, False),
    # Too short for the authors' window (len must exceed patience + 1).
    ([1.0, 2.0, 3.0, 4.0], 3, False, True),
    # Ties count as the worst (<=): a flat history stops both.
    ([2.0, 2.0, 2.0, 2.0, 2.0], 3, True, True),
])
def test_the_two_stop_rules_on_hand_made_histories(history, patience, authors, no_new_best):
    assert authors_rule_reference(history, patience) == authors
    assert no_new_best_reference(history, patience) == no_new_best
    assert worst_of_window(history, patience) == authors


def test_worst_of_window_matches_the_reference_on_random_histories():
    g = torch.Generator().manual_seed(0)
    for _ in range(300):
        n = int(torch.randint(0, 40, (1,), generator=g))
        history = torch.randint(0, 6, (n,), generator=g).double().tolist()  # small range: many ties
        patience = int(torch.randint(1, 8, (1,), generator=g))
        assert worst_of_window(history, patience) == authors_rule_reference(history, patience)


def tiny_trainer(data_root: Path, *overrides: str) -> Trainer:
    cfg = load_config(REPO / "configs/quickstart/fds.yaml", [*TINY, f"data.root={data_root}", *overrides])
    return Trainer(cfg, None, torch.device("cpu"))


def test_trainer_stops_by_the_configured_rule(data_root):
    trainer = tiny_trainer(data_root, "schedule.patience=3", "schedule.stop_rule=worst_of_window")
    trainer.state.val_history = [9.0, 8.0, 9.5, 7.0, 9.5, 6.0, 9.6]
    trainer.state.bad_validations = 1
    assert trainer.should_stop()
    trainer = tiny_trainer(data_root, "schedule.patience=3", "schedule.stop_rule=no_new_best")
    trainer.state.val_history = [9.0, 8.0, 9.5, 7.0, 9.5, 6.0, 9.6]
    trainer.state.bad_validations = 1
    assert not trainer.should_stop()


# ---------------------------------------------------------------------------------------------
# The faithful FDS pass order


def fds_pass_labels(trainer: Trainer, epoch: int) -> list[float]:
    """The labels in the order the end-of-epoch FDS pass of ``epoch`` encodes them."""
    seen = []
    original = trainer.fds.bucket_statistics

    def record(features, labels):
        seen.extend(labels.reshape(-1).tolist())
        return original(features, labels)

    trainer.fds.bucket_statistics = record
    trainer.update_fds(epoch)
    del trainer.fds.bucket_statistics
    return seen


def test_faithful_fds_pass_visits_the_training_set_in_a_fresh_seeded_order(data_root):
    trainer = tiny_trainer(data_root, "method.faithful=true")
    in_file_order = trainer.data.train_labels.tolist()
    epoch0, epoch1 = fds_pass_labels(trainer, 0), fds_pass_labels(trainer, 1)
    for order in (epoch0, epoch1):
        assert sorted(order) == sorted(in_file_order), "every training sample once"
        assert order != in_file_order, "the faithful pass iterates the split file in order"
    assert epoch0 != epoch1, "the same order every epoch"
    # A resumed run (a fresh trainer) visits epoch 1 in the same order.
    assert fds_pass_labels(tiny_trainer(data_root, "method.faithful=true"), 1) == epoch1


def test_shuffled_shards_cover_each_sample_once_and_depend_on_seed_and_epoch():
    shards = [ShuffledShard(11, seed=3, rank=r, world=3) for r in range(3)]
    for shard in shards:
        shard.set_epoch(4)
    merged = [i for shard in shards for i in shard]
    assert sorted(merged) == list(range(11)) and [len(s) for s in shards] == [4, 4, 3]
    full = ShuffledShard(11, seed=3)
    full.set_epoch(4)
    assert list(full) == [int(i) for i in full.permutation()]
    assert list(shards[1]) == list(full)[1::3]
    other = ShuffledShard(11, seed=3)
    other.set_epoch(5)
    assert list(other) != list(full)


# ---------------------------------------------------------------------------------------------
# Per-sample augmentation seeds and loaders


class RandomItems(torch.utils.data.Dataset):
    """Item i is (i, a draw from torch's global generator)."""

    def __len__(self):
        return 16

    def __getitem__(self, index):
        return index, torch.rand(()).item()


def test_seeded_items_depend_on_key_and_index_only_and_leave_the_global_rng_alone():
    items = SeededItems(RandomItems())
    torch.manual_seed(1)
    first = items[(123, 5)]
    torch.manual_seed(999)
    state_999 = torch.get_rng_state()
    again = items[(123, 5)]
    assert torch.equal(torch.get_rng_state(), state_999), "the global generator's state was changed"
    assert first == again
    assert items[(124, 5)] != first and items[(123, 6)][1] != first[1]


def test_keyed_sampler_gives_the_same_draws_with_and_without_workers():
    """With two workers (as the resume test's run) or none, item draws follow (epoch, index)."""
    from torch.utils.data import DataLoader, SequentialSampler

    dataset = SeededItems(RandomItems())
    draws = {}
    for workers in (0, 2):
        sampler = KeyedSampler(SequentialSampler(range(16)), seed=7)
        loader = DataLoader(dataset, batch_size=4, sampler=sampler, num_workers=workers,
                            persistent_workers=workers > 0)
        for epoch in (0, 1):
            sampler.set_epoch(epoch)
            draws[workers, epoch] = torch.cat([values for _, values in loader]).tolist()
    assert draws[0, 0] == draws[2, 0] and draws[0, 1] == draws[2, 1]
    assert draws[0, 0] != draws[0, 1], "a fresh draw each epoch"


def test_one_pass_loaders_start_no_persistent_worker_pool(data_root):
    trainer = tiny_trainer(data_root, "data.num_workers=2", "data.persistent_workers=true")
    assert trainer.train_loader.persistent_workers, "the training loader keeps its pool"
    assert not sharded_loader(trainer.cfg, trainer.data.val, trainer.data).persistent_workers
    assert not make_loader(trainer.cfg, trainer.data.train, trainer.data).persistent_workers


# ---------------------------------------------------------------------------------------------
# FDS: the stale-epoch guard on all-reduced totals, and the model's handle on FDS


def test_update_from_totals_ignores_epochs_older_than_the_stored_one():
    """As stage 2 of RRT sees it: FDS loaded at stored epoch 3 ignores epochs 0..2."""
    g = torch.Generator().manual_seed(0)
    fds = FDS(4, bucket_num=10, bucket_start=0)
    fds.stored_epoch.fill_(3)
    fds.running_mean.normal_(generator=g)
    before = {k: v.clone() for k, v in fds.state_dict().items()}
    features, labels = torch.randn(30, 4, generator=g), torch.randint(0, 10, (30,), generator=g).float()
    totals = fds.bucket_statistics(features, labels)
    for epoch in range(3):
        assert fds.update_from_totals(*totals, epoch) is False
        for key, value in fds.state_dict().items():
            assert torch.equal(value, before[key]), f"{key} changed at stale epoch {epoch}"
    assert fds.update_from_totals(*totals, 3) is True
    assert not torch.equal(fds.running_mean, before["running_mean"])
    # The update of SPEC 4 written out per bucket: momentum 0.9 (epoch 3 is not start_update),
    # unbiased variance, and buckets without a sample keep their running values.
    for bucket in range(10):
        members = features[labels == bucket]
        mean, var = before["running_mean"][bucket], before["running_var"][bucket]
        if len(members):
            mean = 0.1 * members.mean(0) + 0.9 * mean
            var = 0.1 * (members.var(0) if len(members) > 1 else torch.zeros(4)) + 0.9 * var
        torch.testing.assert_close(fds.running_mean[bucket], mean, msg=f"mean of bucket {bucket}")
        torch.testing.assert_close(fds.running_var[bucket], var, msg=f"variance of bucket {bucket}")


def test_every_model_exposes_its_fds_module():
    from ranksim.models import build_model

    for name, overrides in (("resnet_small", []), ("bilstm", ["data.dataset=sts_b", "model.hidden_size=4"])):
        for enabled in (True, False):
            cfg = load_config(REPO / "configs/quickstart/vanilla.yaml",
                              [f"model.name={name}", f"method.fds.enabled={enabled}", *overrides])
            model = build_model(cfg, "sts_b" if name == "bilstm" else "age", vocab_size=10)
            assert model.fds is model.head.fds
            assert (model.fds is not None) == enabled


# ---------------------------------------------------------------------------------------------
# The paper configs


@pytest.mark.parametrize("benchmark", ["agedb", "imdb_wiki", "sts_b"])
def test_paper_configs_gather_ranksim_over_processes(benchmark):
    for path in (REPO / "configs" / benchmark).glob("*.yaml"):
        assert load_config(path).method.ranksim.gather, f"{path.name}: RankSim on per-process sub-batches"


def test_sts_b_paper_configs_follow_the_authors_recipe():
    for path in sorted((REPO / "configs/sts_b").glob("*.yaml")):
        cfg = load_config(path)
        assert (cfg.method.focal_beta, cfg.method.focal_gamma) == (20.0, 1.0), path.name
        assert cfg.optim.weight_decay == 1e-5, path.name
        assert cfg.schedule.plateau_lr_factor == 1.0, path.name
        if not path.name.startswith("cpu_"):
            assert cfg.schedule.stop_rule == "worst_of_window" and cfg.schedule.patience == 30, path.name
    assert load_config(REPO / "configs/sts_b/focal_ranksim.yaml").method.reweight == "inverse"
    assert load_config(REPO / "configs/sts_b/focal.yaml").method.reweight == "none"


def test_plateau_scheduler_halves_on_no_new_best_and_resumes_its_state(data_root):
    trainer = tiny_trainer(data_root, "schedule.plateau_lr_factor=0.5", "optim.lr=0.1")
    lrs = []
    for value in (3.0, 2.0, 2.0, 2.5, 1.0):  # new best, new best, tie, worse, new best
        trainer.plateau.step(value)
        lrs.append(trainer.optimizer.param_groups[0]["lr"])
    assert lrs == pytest.approx([0.1, 0.1, 0.05, 0.025, 0.025])
    resumed = tiny_trainer(data_root, "schedule.plateau_lr_factor=0.5", "optim.lr=0.1")
    resumed.restore(trainer.checkpoint(), Path("memory"))
    for t in (trainer, resumed):
        t.plateau.step(1.5)  # worse than the best so far (1.0), though better than the last value
    assert resumed.optimizer.param_groups[0]["lr"] == trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.0125)
    assert tiny_trainer(data_root).plateau is None, "plateau_lr_factor 1 is no scheduler"
