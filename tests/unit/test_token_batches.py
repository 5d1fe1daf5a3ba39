"""Batches by token budget (``train.batch_tokens``, ``train.eval_batch_tokens``; issue 21): every batch
within its budget in padded tokens, every example once an epoch, the order a pure function of (seed,
epoch), resume, data-parallel shares, loss weighting with batches of varying size, the schedule's
length, and a run that records its effective batch."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from test_loop import synthetic, tiny_model  # the loop tests' tiny BERT and synthetic task

from texttune.config import TrainConfig
from texttune.data.tokenize import Encoded, epoch_token_batches, eval_batches, padded_tokens
from texttune.runs import CHECKPOINTS, METRICS_LOG
from texttune.tasks.classify import ClassificationObjective
from texttune.training.callbacks import Callback
from texttune.training.loop import Trainer, _share, _step_weight, _Window
from texttune.training.optim import total_steps


def mixed_lengths(n: int = 600, seed: int = 0) -> np.ndarray:
    """Short and long texts together (3..200 tokens, skewed short), as real corpora are."""
    rng = np.random.default_rng(seed)
    return np.minimum(3 + rng.exponential(25, n).astype(np.int64), 200)


def rank_tokens(lengths: np.ndarray, batch: np.ndarray, ranks: int) -> list[int]:
    """Padded tokens of each rank's share of a global batch, as the loop shards it."""
    return [padded_tokens(lengths, _share(batch, rank, ranks)[0]) for rank in range(ranks)]


BUDGETS = [64, 500, 4096]


@pytest.mark.parametrize("group_by_length", [True, False])
@pytest.mark.parametrize("ranks", [1, 2, 3])
@pytest.mark.parametrize("budget", BUDGETS)
def test_every_share_fits_the_budget_and_every_example_comes_once(budget, ranks, group_by_length):
    lengths = mixed_lengths()
    batches = epoch_token_batches(lengths, budget, seed=3, epoch=1, group_by_length=group_by_length,
                                  ranks=ranks)
    together = np.concatenate(batches)
    assert sorted(together.tolist()) == list(range(len(lengths)))  # each example exactly once
    for batch in batches:
        if len(batch) <= ranks:
            continue  # one example per rank: allowed whatever its length (an over-long example)
        assert max(rank_tokens(lengths, batch, ranks)) <= budget
        assert math.ceil(len(batch) / ranks) * lengths[batch].max() <= budget


def test_an_example_longer_than_the_budget_trains_alone():
    lengths = np.array([5, 120, 7, 6, 300, 5, 8, 9, 5, 6] * 3)
    batches = epoch_token_batches(lengths, 100, seed=0, epoch=0, group_by_length=True)
    for batch in batches:
        if lengths[batch].max() > 100:
            assert len(batch) == 1
        else:
            assert padded_tokens(lengths, batch) <= 100
    assert sum(len(b) == 1 and lengths[b[0]] > 100 for b in batches) == 6
    assert lengths[batches[0]].max() == 300  # the longest goes first: out-of-memory shows at once


def test_short_texts_get_many_rows_and_long_ones_few():
    short = epoch_token_batches(np.full(400, 8), 1024, seed=0, epoch=0, group_by_length=True)
    long = epoch_token_batches(np.full(400, 256), 1024, seed=0, epoch=0, group_by_length=True)
    assert {len(b) for b in short} == {128, 400 - 3 * 128}
    assert {len(b) for b in long} == {4}


@pytest.mark.parametrize("group_by_length", [True, False])
def test_the_order_is_a_pure_function_of_seed_and_epoch(group_by_length):
    lengths = mixed_lengths()
    run = lambda seed, epoch: epoch_token_batches(lengths, 500, seed, epoch, group_by_length)
    first, again = run(7, 2), run(7, 2)
    assert len(first) == len(again) and all(np.array_equal(a, b) for a, b in zip(first, again))
    other_epoch, other_seed = run(7, 3), run(8, 2)
    for other in (other_epoch, other_seed):
        assert np.concatenate(other).tolist() != np.concatenate(first).tolist()


def test_grouping_by_length_pads_less():
    lengths = mixed_lengths(2000)
    real = int(lengths.sum())
    cost = {group: sum(padded_tokens(lengths, b) for b in epoch_token_batches(lengths, 1024, 0, 0, group))
            for group in (True, False)}
    assert real <= cost[True] < cost[False]
    assert cost[True] < 1.15 * real


def test_two_ranks_cover_each_global_batch_within_the_budget_each():
    lengths = mixed_lengths()
    for batch in epoch_token_batches(lengths, 512, seed=1, epoch=0, group_by_length=True, ranks=2):
        mine = [_share(batch, rank, 2) for rank in range(2)]
        shares = [m for m, weight in mine if weight > 0]
        together = np.concatenate(shares)
        assert sorted(together.tolist()) == sorted(batch.tolist())  # the global batch, each example once
        assert sum(weight for _, weight in mine) == pytest.approx(1.0)
        if len(batch) > 2:
            assert max(rank_tokens(lengths, batch, 2)) <= 512
            assert abs(len(shares[0]) - len(shares[-1])) <= 1  # ranks stay balanced


@pytest.mark.parametrize("budget", [40, 1000])
def test_evaluation_batches_by_tokens(budget):
    lengths = mixed_lengths(300)
    batches = eval_batches(lengths, 64, batch_tokens=budget)
    assert sorted(np.concatenate(batches).tolist()) == list(range(300))
    assert np.all(np.diff(lengths[np.concatenate(batches)]) <= 0)  # longest first, sorted
    for batch in batches:
        assert len(batch) == 1 or padded_tokens(lengths, batch) <= budget
    by_examples = [b.tolist() for b in eval_batches(lengths, 64)]
    assert by_examples == [b.tolist() for b in eval_batches(lengths, 64, None)]


# --------------------------------------------------------------------------- the loop


def test_weights_make_an_accumulated_step_the_mean_over_its_examples():
    """Micro-batches of 1, 7 and 2 examples: the weighted sum of their mean-loss gradients is the
    gradient of the mean loss over all 10 examples (a plain mean of the three would not be)."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    x, y = torch.randn(10, 4), torch.randn(10, 1)
    batches = [np.arange(0, 1), np.arange(1, 8), np.arange(8, 10)]

    def grad(loss):
        model.zero_grad()
        loss.backward()
        return model.weight.grad.clone()

    loss_of = lambda idx: torch.nn.functional.mse_loss(model(x[idx]), y[idx])
    whole = grad(loss_of(np.arange(10)))
    weighted = sum(grad(loss_of(b) * _step_weight(batches, i, 3)) for i, b in enumerate(batches))
    plain = sum(grad(loss_of(b) / 3) for b in batches)
    assert torch.allclose(weighted, whole, atol=1e-6)
    assert not torch.allclose(plain, whole, atol=1e-3)
    # An epoch's last step with fewer micro-batches than accumulation_steps weighs 1 in all, too.
    tail = [np.arange(4), np.arange(4), np.arange(3)]
    assert _step_weight(tail, 2, 2) == 1.0 and _step_weight(tail, 0, 2) == 0.5


def test_window_loss_is_a_mean_over_examples():
    window = _Window()
    window.add(torch.tensor(1.0), 1, 10)
    window.add(torch.tensor(4.0), 3, 30)
    window.steps = 2
    assert window.mean_loss() == pytest.approx((1 * 1 + 4 * 3) / 4)
    assert (window.per_step(window.samples), window.per_step(window.tokens)) == (2.0, 20.0)


def test_total_steps_counted_from_each_epochs_own_batches():
    cfg = lambda **kw: TrainConfig(**kw)
    assert total_steps(cfg(epochs=2), [5, 6]) == 11
    assert total_steps(cfg(epochs=2, gradient_accumulation_steps=2), [5, 6]) == 3 + 3
    assert total_steps(cfg(epochs=1.5), [5, 6]) == 5 + 3
    assert total_steps(cfg(epochs=3), [4] * 3) == total_steps(cfg(epochs=3), 4) == 12
    assert total_steps(cfg(epochs=2, max_steps=7), [5, 6]) == 7


def long_and_short(n: int = 40, seed: int = 0) -> Encoded:
    """The synthetic task with lengths 3..30 (the tiny BERT takes 32 positions)."""
    data = synthetic(n, seed)
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, 31, n)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    ids = rng.integers(10, 64, int(offsets[-1])).astype(np.int32)
    ids[offsets[:-1]] = 1 + data.labels
    return Encoded(ids, None, offsets, data.labels, np.arange(n, dtype=np.int64))


class Batches(Callback):
    """The global batches the loop fetched, in order."""

    def __init__(self, stop_at: int | None = None) -> None:
        self.seen: list[list[int]] = []
        self.stop_at = stop_at

    def on_batch_begin(self, trainer, indices):
        self.seen.append(sorted(indices.tolist()))

    def on_step_end(self, trainer):
        if trainer.state.global_step == self.stop_at:
            raise KeyboardInterrupt


def token_trainer(tmp_path, callbacks=(), **settings) -> Trainer:
    cfg = TrainConfig(**{"lr": 1e-2, "warmup_ratio": 0.0, "num_threads": 1, "batch_tokens": 60,
                         "eval_batch_tokens": 50, **settings})
    return Trainer(tiny_model(), long_and_short(), long_and_short(9, seed=1), cfg, pad_id=0, seed=0,
                   objective=ClassificationObjective(["a", "b"], eval_batch_tokens=cfg.eval_batch_tokens),
                   checkpoint_dir=tmp_path / CHECKPOINTS, metrics_path=tmp_path / METRICS_LOG,
                   callbacks=list(callbacks))


def test_fit_by_tokens_trains_whole_epochs_and_records_its_batch(tmp_path):
    seen = Batches()
    trainer = token_trainer(tmp_path, [seen], epochs=2, gradient_accumulation_steps=2, log_every_steps=1)
    lengths = trainer.train_data.lengths
    per_epoch = [epoch_token_batches(lengths, 60, 0, epoch, True) for epoch in (0, 1)]
    assert trainer.total_steps == sum(math.ceil(len(b) / 2) for b in per_epoch)
    state = trainer.fit()
    assert state.epoch == 2 and state.batch_in_epoch == 0 and state.global_step == trainer.total_steps
    assert seen.seen == [sorted(b.tolist()) for b in per_epoch[0] + per_epoch[1]]
    assert state.samples_seen == 80
    assert state.real_tokens_seen == 2 * int(lengths.sum())
    effective = trainer.effective_batch()
    assert effective["examples_per_step"] == round(80 / state.global_step, 2)
    assert effective["batch_tokens"] == 60 and effective["per_device_batch_size"] is None
    assert effective["real_tokens_per_step"] <= effective["padded_tokens_per_step"] <= 2 * 60
    logged = [json.loads(line) for line in (tmp_path / METRICS_LOG).read_text().splitlines()]
    train = [r for r in logged if r["type"] == "train"]
    assert all(0 < r["tokens_per_step"] <= 2 * 60 and r["examples_per_step"] >= 1 for r in train)
    assert sum(r["examples_per_step"] for r in train) == pytest.approx(80)  # one step a line here


def test_resume_mid_epoch_by_tokens_fetches_the_same_remaining_batches(tmp_path):
    settings = {"max_steps": 14, "eval_every_steps": 4, "log_every_steps": 3}
    straight = Batches()
    token_trainer(tmp_path / "a", [straight], **settings).fit()
    with pytest.raises(KeyboardInterrupt):
        token_trainer(tmp_path / "b", [Batches(stop_at=7)], **settings).fit()
    resumed = Batches()
    trainer = token_trainer(tmp_path / "b", [resumed], **settings)
    trainer.fit(resume=True)
    assert resumed.seen == straight.seen[4:]  # from the checkpoint of step 4 on: the identical batches
    a, b = ([json.loads(line) for line in (d / METRICS_LOG).read_text().splitlines()]
            for d in (tmp_path / "a", tmp_path / "b"))
    assert [(r["type"], r["step"]) for r in a] == [(r["type"], r["step"]) for r in b]
    for x, y in zip(a, b):
        for key in ("loss", "lr", "accuracy", "examples_per_step", "tokens_per_step"):
            if key in x:
                assert y[key] == pytest.approx(x[key], abs=1e-6), (x["step"], key)


# --------------------------------------------------------------------------- config and a run


def test_budgets_must_be_positive():
    with pytest.raises(ValidationError, match="batch_tokens"):
        TrainConfig(batch_tokens=0)
    with pytest.raises(ValidationError, match="eval_batch_tokens"):
        TrainConfig(eval_batch_tokens=-5)


@pytest.mark.parametrize("kind", ["mlm", "sft"])
def test_language_model_runs_refuse_eval_batch_tokens_by_name(kind):
    import texttune.tasks  # noqa: F401  (registers the kinds)
    from texttune.config import ConfigError
    from texttune.runs import TASKS

    said = r"train: .* in batches of train\.eval_batch_size examples: unset train\.eval_batch_tokens"
    with pytest.raises((ConfigError, ValidationError), match=said):
        TASKS.get(kind).load_config(None, ["train.eval_batch_tokens=512"])
    assert TASKS.get(kind).load_config(None, ["train.batch_tokens=512"]).train.batch_tokens == 512


def test_a_run_by_tokens_records_its_effective_batch(tiny_model_dir, toy, tmp_path, monkeypatch):
    from texttune.tasks.classify import load_config, run_experiment

    monkeypatch.setenv("TEXTTUNE_CACHE_DIR", str(tmp_path / "cache"))
    items = {"model.path": tiny_model_dir, "model.pooling": "mean", "model.head.dropout": 0,
             "output_dir": tmp_path / "runs", "data.train_file": toy, "data.validation_file": toy,
             "data.test_file": toy, "train.batch_tokens": 40, "train.eval_batch_tokens": 30, "train.lr": 1e-2,
             "train.warmup_ratio": 0, "train.num_threads": 1, "train.log_every_steps": 1, "train.epochs": 4}
    result = run_experiment(load_config(None, [f"{k}={v}" for k, v in items.items()]), callbacks=[])
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    effective = metrics["effective_batch"]
    assert metrics["global_batch_size"] is None and effective["batch_tokens"] == 40
    assert 1 < effective["examples_per_step"] < 8  # the toy's 8 sentences (7-12 tokens) in several batches
    assert effective["padded_tokens_per_step"] <= 40
    assert metrics["epochs"] == 4.0
    assert effective["real_tokens_per_step"] <= effective["padded_tokens_per_step"]
    assert metrics["test"]["accuracy"] >= 0.5 and "calibrated" in metrics["test"]
