"""The training loop's parts: optimizer groups, step counts, schedules, class weights, batching,
checkpoint serialisation, and the loop itself on a tiny synthetic model."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import torch
from torch import nn

from texttune.config import TrainConfig
from texttune.errors import TexttuneError
from texttune.data.tokenize import Encoded, collate, epoch_batches
from texttune.models.classifier import TexttuneConfig, TexttuneForSequenceClassification
from texttune.training.callbacks import Callback
from texttune.training.checkpoint import (
    load_state,
    load_training_state,
    rng_state,
    save_state,
    save_training_state,
    set_rng_state,
)
from texttune.runs import CHECKPOINTS, METRICS_LOG
from texttune.tasks.classify import ClassificationObjective, class_weight_tensor
from texttune.training.loop import Trainer
from texttune.training.optim import build_optimizer, build_scheduler, total_steps

VOCAB = 64



def tiny_model(seed: int = 0, num_labels: int = 2) -> TexttuneForSequenceClassification:
    """A 1-layer BERT (hidden 16) with a linear head; built from a config, no files."""
    from transformers import BertConfig

    encoder = BertConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=32).to_dict()
    for key in ("transformers_version", "architectures", "_name_or_path", "dtype", "torch_dtype"):
        encoder.pop(key, None)
    torch.manual_seed(seed)
    config = TexttuneConfig(encoder_type="hf", encoder=encoder, pooling="mean", head={"dropout": 0.0},
                            num_labels=num_labels)
    return TexttuneForSequenceClassification(config)


def synthetic(n: int = 24, seed: int = 0, num_labels: int = 2) -> Encoded:
    """Random token sequences of 3..11 tokens whose first token gives the label away (learnable)."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, 12, n)
    labels = rng.integers(0, num_labels, n).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    ids = rng.integers(10, VOCAB, int(offsets[-1])).astype(np.int32)
    ids[offsets[:-1]] = 1 + labels  # label-bearing first token
    return Encoded(ids, None, offsets, labels, np.arange(n, dtype=np.int64))


# --------------------------------------------------------------------------- optimizer


def names_by_group(optimizer, model) -> dict[str, list[str]]:
    name_of = {id(p): n for n, p in model.named_parameters()}
    return {g["name"]: [name_of[id(p)] for p in g["params"]] for g in optimizer.param_groups}


def test_no_weight_decay_on_biases_and_layernorm():
    model = tiny_model()
    cfg = TrainConfig(lr=1e-3, weight_decay=0.05)
    optimizer = build_optimizer(model, cfg)
    seen = []
    name_of = {id(p): n for n, p in model.named_parameters()}
    for group in optimizer.param_groups:
        for param in group["params"]:
            name = name_of[id(param)]
            seen.append(name)
            exempt = name.endswith(".bias") or "LayerNorm" in name
            assert group["weight_decay"] == (0.0 if exempt else 0.05), name
            assert group["lr"] == 1e-3
    assert sorted(seen) == sorted(n for n, _ in model.named_parameters())  # each parameter once
    groups = names_by_group(optimizer, model)
    decayed = [n for g in optimizer.param_groups if g["weight_decay"] > 0 for n in groups[g["name"]]]
    assert "encoder.model.embeddings.word_embeddings.weight" in decayed
    assert "head.1.weight" in decayed


def test_adamw_takes_the_fused_kernel_on_cpu_and_steps_like_the_foreach_one():
    from texttune.training.optim import fused_adamw_supported

    model = tiny_model()
    optimizer = build_optimizer(model, TrainConfig(lr=1e-2, weight_decay=0.01))
    assert optimizer.defaults["fused"] is True  # the CPU has a fused AdamW kernel since torch 2.4
    reference = tiny_model()
    by_name = dict(reference.named_parameters())
    plain = torch.optim.AdamW(
        [{"params": [by_name[n] for n in names], "weight_decay": g["weight_decay"]}
         for g, names in zip(optimizer.param_groups, names_by_group(optimizer, model).values())],
        lr=1e-2, foreach=True)
    assert not plain.defaults["fused"]
    for m, opt in ((model, optimizer), (reference, plain)):
        m.eval()  # no dropout: both models see the same computation
        for _ in range(3):
            loss = m(input_ids=torch.tensor([[1, 2, 3]]), labels=torch.tensor([1])).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
    for (name, a), b in zip(model.named_parameters(), reference.parameters()):
        if name.endswith("key.bias"):  # its true gradient is 0 (softmax shift): Adam scales rounding noise up
            continue
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
        assert not torch.equal(a, dict(tiny_model().named_parameters())[name]), name  # it did train
    # Mixed devices or integer tensors have no fused kernel: the foreach one is used.
    assert not fused_adamw_supported([{"params": [torch.zeros(2), torch.zeros(2, device="meta")]}])
    assert not fused_adamw_supported([{"params": [torch.zeros(2, dtype=torch.long)]}])


def test_head_lr_puts_the_head_in_its_own_groups():
    model = tiny_model()
    cfg = TrainConfig(lr=1e-4, weight_decay=0.01)
    optimizer = build_optimizer(model, cfg, head_lr=3e-3)
    groups = names_by_group(optimizer, model)
    assert set(groups) == {"body", "body-no-decay", "head", "head-no-decay"}
    assert groups["head"] == ["head.1.weight"] and groups["head-no-decay"] == ["head.1.bias"]
    lrs = {g["name"]: g["lr"] for g in optimizer.param_groups}
    assert lrs == {"body": 1e-4, "body-no-decay": 1e-4, "head": 3e-3, "head-no-decay": 3e-3}
    assert all(not n.startswith("head.") for n in groups["body"] + groups["body-no-decay"])
    # The schedule scales every group from its own peak.
    scheduler = build_scheduler(optimizer, cfg.model_copy(update={"warmup_ratio": 0.0}), 10)
    assert scheduler.get_last_lr() == [lrs[g["name"]] for g in optimizer.param_groups]


def test_frozen_parameters_are_left_out_and_all_frozen_is_an_error():
    model = tiny_model()
    for param in model.encoder.parameters():
        param.requires_grad_(False)
    optimizer = build_optimizer(model, TrainConfig())
    assert set(names_by_group(optimizer, model)) == {"head", "head-no-decay"}
    for param in model.parameters():
        param.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        build_optimizer(model, TrainConfig())


@pytest.mark.parametrize(
    "settings,batches_per_epoch,expected",
    [
        ({"epochs": 3}, 10, 30),
        ({"epochs": 3, "gradient_accumulation_steps": 4}, 10, 9),  # ceil(10 / 4) = 3 steps an epoch
        ({"epochs": 1.5, "gradient_accumulation_steps": 4}, 10, 5),  # ceil(1.5 * 3)
        ({"epochs": 0.5}, 10, 5),
        ({"epochs": 0.01}, 10, 1),  # never zero steps
        ({"epochs": 3, "max_steps": 7}, 10, 7),  # max_steps wins
        ({"max_steps": 7, "gradient_accumulation_steps": 4}, 10, 7),
    ],
)
def test_total_steps(settings, batches_per_epoch, expected):
    assert total_steps(TrainConfig(**settings), batches_per_epoch) == expected


def lr_curve(cfg: TrainConfig, steps: int) -> list[float]:
    param = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=cfg.lr)
    scheduler = build_scheduler(optimizer, cfg, steps)
    lrs = [scheduler.get_last_lr()[0]]
    for _ in range(steps):
        optimizer.step()
        scheduler.step()
        lrs.append(scheduler.get_last_lr()[0])
    return lrs


def test_linear_schedule_warms_up_then_decays_to_zero():
    lrs = lr_curve(TrainConfig(lr=1.0, warmup_ratio=0.2, scheduler="linear"), 10)  # 2 warmup steps
    expected = [0.0, 0.5, 1.0] + [(10 - s) / 8 for s in range(3, 11)]
    assert lrs == pytest.approx(expected, abs=1e-12)
    assert lrs[-1] == 0.0


def test_warmup_steps_override_the_ratio():
    lrs = lr_curve(TrainConfig(lr=1.0, warmup_ratio=0.5, warmup_steps=1), 10)
    assert lrs[:2] == [0.0, 1.0]
    assert lrs[-1] == 0.0


def test_cosine_ends_at_zero_and_constant_stays():
    cosine = lr_curve(TrainConfig(lr=1.0, warmup_steps=2, scheduler="cosine"), 10)
    assert cosine[2] == pytest.approx(1.0) and cosine[-1] == pytest.approx(0.0, abs=1e-12)
    assert all(a >= b for a, b in zip(cosine[2:], cosine[3:]))
    constant = lr_curve(TrainConfig(lr=1.0, warmup_steps=2, scheduler="constant"), 10)
    assert constant[2:] == [1.0] * 9


# --------------------------------------------------------------------------- class weights


def test_auto_class_weights_are_inverse_frequency():
    labels = np.array([0, 0, 0, 0, 0, 0, 1, 1, 2])
    weights = class_weight_tensor(TrainConfig(class_weights="auto"), labels, 3)
    assert weights.dtype == torch.float32
    torch.testing.assert_close(weights, torch.tensor([9 / (3 * 6), 9 / (3 * 2), 9 / (3 * 1)]))
    # Every example carries weight 1 on average: the loss keeps its scale.
    counts = np.bincount(labels, minlength=3)
    assert float((weights.double() * torch.from_numpy(counts)).sum()) == pytest.approx(len(labels))


def test_class_weights_list_and_none():
    assert class_weight_tensor(TrainConfig(), np.array([0, 1]), 2) is None
    listed = class_weight_tensor(TrainConfig(class_weights=[1.0, 3.0]), np.array([0, 1]), 2)
    assert listed.tolist() == [1.0, 3.0]
    with pytest.raises(TexttuneError, match="2 values for 3 labels"):
        class_weight_tensor(TrainConfig(class_weights=[1.0, 3.0]), np.array([0, 1]), 3)


def test_auto_class_weights_with_a_class_absent_from_train():
    weights = class_weight_tensor(TrainConfig(class_weights="auto"), np.array([0, 0, 1, 1]), 3)
    assert torch.isfinite(weights).all()


# --------------------------------------------------------------------------- batching


def padding(lengths: np.ndarray, batches: list[np.ndarray]) -> int:
    return int(sum(lengths[b].max() * len(b) - lengths[b].sum() for b in batches))


@pytest.mark.parametrize("group_by_length", [False, True])
def test_epoch_batches_are_a_pure_function_of_seed_and_epoch(group_by_length):
    lengths = np.random.default_rng(0).integers(1, 200, 1000)
    first = epoch_batches(lengths, 16, seed=7, epoch=2, group_by_length=group_by_length)
    again = epoch_batches(lengths.copy(), 16, seed=7, epoch=2, group_by_length=group_by_length)
    assert len(first) == len(again) and all(np.array_equal(a, b) for a, b in zip(first, again))
    for other in (dict(seed=7, epoch=3), dict(seed=8, epoch=2)):
        different = epoch_batches(lengths, 16, group_by_length=group_by_length, **other)
        assert not np.array_equal(np.concatenate(first), np.concatenate(different))


@pytest.mark.parametrize("group_by_length", [False, True])
@pytest.mark.parametrize("n,batch_size", [(1000, 16), (37, 8), (5, 16), (1, 4)])
def test_epoch_batches_cover_every_index_once(group_by_length, n, batch_size):
    lengths = np.random.default_rng(n).integers(1, 50, n)
    for epoch in range(3):
        batches = epoch_batches(lengths, batch_size, seed=0, epoch=epoch, group_by_length=group_by_length)
        assert np.array_equal(np.sort(np.concatenate(batches)), np.arange(n))
        assert all(1 <= len(b) <= batch_size for b in batches)
        assert len(batches) == math.ceil(n / batch_size)


def test_length_grouping_pads_less_and_puts_the_longest_batch_first():
    lengths = np.random.default_rng(0).integers(1, 200, 2000)
    grouped = epoch_batches(lengths, 16, seed=0, epoch=0, group_by_length=True)
    shuffled = epoch_batches(lengths, 16, seed=0, epoch=0, group_by_length=False)
    assert padding(lengths, grouped) < 0.25 * padding(lengths, shuffled)
    assert lengths[grouped[0]].max() == lengths.max()
    # The batch order is still random: not sorted by length.
    maxima = [lengths[b].max() for b in grouped[1:]]
    assert maxima != sorted(maxima) and maxima != sorted(maxima, reverse=True)


def test_collate_pads_to_the_longest_example_of_the_batch_only():
    lengths = [3, 7, 2, 10]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    ids = np.arange(1, offsets[-1] + 1, dtype=np.int32)
    encoded = Encoded(ids, None, offsets, np.array([0, 1, 0, 1]), np.arange(4))
    batch = collate(encoded, np.array([0, 2]), pad_id=99)
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    assert batch["input_ids"].tolist() == [[1, 2, 3], [11, 12, 99]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["labels"].tolist() == [0, 0]
    assert batch["input_ids"].dtype == torch.int64
    wide = collate(encoded, [3, 1], pad_id=0)
    assert wide["input_ids"].shape == (2, 10)
    assert wide["attention_mask"].sum(dim=1).tolist() == [10, 7]
    assert wide["labels"].tolist() == [1, 1]


def test_collate_pads_token_type_ids_of_pairs():
    offsets = np.array([0, 4, 6])
    types = np.array([0, 0, 1, 1, 0, 1], dtype=np.int8)
    encoded = Encoded(np.arange(6, dtype=np.int32), types, offsets, np.array([1, 0]), np.arange(2))
    batch = collate(encoded, [1, 0], pad_id=0)
    assert batch["token_type_ids"].tolist() == [[0, 1, 0, 0], [0, 0, 1, 1]]


# --------------------------------------------------------------------------- checkpoint serialisation


def assert_identical(a, b, where="state"):
    """Same structure, same container types, same key types, bit-identical tensors."""
    assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), where
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and np.array_equal(a, b), where
    elif isinstance(a, dict):
        assert list(a) == list(b), where
        for key in a:
            assert_identical(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_identical(x, y, f"{where}.{i}")
    else:
        assert a == b, where


def trained_optimizer(model):
    optimizer = build_optimizer(model, TrainConfig(lr=1e-2, adam_betas=(0.8, 0.95)))
    data = synthetic(8)
    for _ in range(3):
        batch = collate(data, np.arange(8), 0)
        labels = batch.pop("labels")
        nn.functional.cross_entropy(model(**batch).logits, labels).backward()
        optimizer.step()
        optimizer.zero_grad()
    return optimizer


def test_optimizer_state_round_trips_exactly(tmp_path):
    model = tiny_model()
    optimizer = trained_optimizer(model)
    state = optimizer.state_dict()
    save_state(tmp_path, "optimizer", state)
    back = load_state(tmp_path, "optimizer")
    assert_identical(back, state)
    assert all(isinstance(k, int) for k in back["state"])

    # A twin optimizer loaded from the file takes the very same next step.
    twin = tiny_model()
    twin.load_state_dict(model.state_dict())
    twin_optimizer = build_optimizer(twin, TrainConfig(lr=1e-2, adam_betas=(0.8, 0.95)))
    twin_optimizer.load_state_dict(back)
    for m, opt in ((model, optimizer), (twin, twin_optimizer)):
        m.eval()  # no dropout: both take the same step from the same state
        batch = collate(synthetic(8, seed=1), np.arange(8), 0)
        labels = batch.pop("labels")
        nn.functional.cross_entropy(m(**batch).logits, labels).backward()
        opt.step()
    for (name, p), q in zip(model.named_parameters(), twin.parameters()):
        assert torch.equal(p, q), name


def test_rng_state_round_trips_exactly(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    random.gauss(0, 1)  # leaves a cached second Gaussian in the Python state
    np.random.randn()  # ... and in numpy's

    def draw():
        return (random.random(), random.gauss(0, 1), np.random.randn(3).tolist(), np.random.randint(1 << 30),
                torch.randn(3).tolist(), torch.randint(100, (2,)).tolist())

    save_state(tmp_path, "rng", rng_state())
    expected = draw()
    set_rng_state(load_state(tmp_path, "rng"))
    assert draw() == expected


def test_training_state_round_trips(tmp_path):
    model = tiny_model()
    optimizer = trained_optimizer(model)
    cfg = TrainConfig(warmup_steps=2)
    scheduler = build_scheduler(optimizer, cfg, 10)
    for _ in range(3):
        optimizer.step()  # (no gradients: a no-op that keeps the scheduler's order check quiet)
        scheduler.step()
    save_training_state(tmp_path / "last", model, optimizer, scheduler, {"loop": {"global_step": 3}})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]  # no temporary folder left

    twin = tiny_model(seed=1)
    twin_optimizer = build_optimizer(twin, TrainConfig(lr=1e-2, adam_betas=(0.8, 0.95)))
    twin_scheduler = build_scheduler(twin_optimizer, cfg, 10)
    trainer = load_training_state(tmp_path / "last", twin, twin_optimizer, twin_scheduler)
    assert trainer == {"loop": {"global_step": 3}}
    assert_identical(twin.state_dict(), model.state_dict())
    assert_identical(twin_optimizer.state_dict(), optimizer.state_dict())
    assert twin_scheduler.state_dict() == scheduler.state_dict()
    assert twin_scheduler.get_last_lr() == scheduler.get_last_lr()


# --------------------------------------------------------------------------- the loop


class Recorder(Callback):
    def __init__(self, stop_at: int | None = None) -> None:
        self.events: list[tuple[str, int]] = []
        self.stop_at = stop_at

    def on_train_begin(self, trainer):
        self.events.append(("begin", trainer.state.global_step))

    def on_step_end(self, trainer):
        self.events.append(("step", trainer.state.global_step))
        if trainer.state.global_step == self.stop_at:
            raise KeyboardInterrupt

    def on_evaluate(self, trainer, record):
        self.events.append(("evaluate", record["step"]))

    def on_train_end(self, trainer):
        self.events.append(("end", trainer.state.global_step))


def make_trainer(tmp_path, callbacks=(), data=None, **settings) -> Trainer:
    cfg = TrainConfig(**{"lr": 1e-2, "warmup_ratio": 0.0, "num_threads": 1, **settings})
    data = data if data is not None else synthetic(20)
    return Trainer(tiny_model(), data, synthetic(8, seed=1), cfg, pad_id=0, seed=0,
                   objective=ClassificationObjective(["a", "b"]), checkpoint_dir=tmp_path / CHECKPOINTS,
                   metrics_path=tmp_path / METRICS_LOG, callbacks=list(callbacks))


def records(path):
    return [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]


def test_fit_with_accumulation_takes_total_steps_and_evaluates_each_epoch(tmp_path):
    # 20 examples / batch 4 = 5 batches an epoch; accumulating 2 gives 3 optimizer steps an epoch.
    recorder = Recorder()
    trainer = make_trainer(tmp_path, [recorder], per_device_batch_size=4, gradient_accumulation_steps=2,
                           epochs=2, log_every_steps=1)
    assert trainer.total_steps == 6
    state = trainer.fit()
    assert state.global_step == 6 and state.epoch == 2 and state.samples_seen == 40
    assert recorder.events == [("begin", 0), *[("step", s) for s in (1, 2, 3)], ("evaluate", 3),
                               *[("step", s) for s in (4, 5, 6)], ("evaluate", 6), ("end", 6)]
    logged = records(tmp_path)
    assert [r["step"] for r in logged if r["type"] == "train"] == [1, 2, 3, 4, 5, 6]
    assert [r["step"] for r in logged if r["type"] == "eval"] == [3, 6]
    assert [r["lr"] for r in logged if r["type"] == "train"][-1] == 0.0  # the schedule ends at 0
    assert (tmp_path / "checkpoints" / "last" / "trainer_state.json").is_file()


def test_fit_learns_the_synthetic_task(tmp_path):
    trainer = make_trainer(tmp_path, per_device_batch_size=8, epochs=15, log_every_steps=5)
    state = trainer.fit()
    evals = [r for r in records(tmp_path) if r["type"] == "eval"]
    assert evals[-1]["loss"] < evals[0]["loss"]
    assert state.best_value == max(r["accuracy"] for r in evals)


def fit_interrupted_then_resumed(tmp_path, stop_at: int, **settings):
    with pytest.raises(KeyboardInterrupt):
        make_trainer(tmp_path, [Recorder(stop_at)], **settings).fit()
    recorder = Recorder()
    state = make_trainer(tmp_path, [recorder], **settings).fit(resume=True)
    return state, recorder


@pytest.mark.parametrize(
    "log_every_steps",
    [
        1,
        3,
    ],
)
def test_resumed_fit_matches_an_uninterrupted_one(tmp_path, log_every_steps):
    settings = dict(per_device_batch_size=4, max_steps=12, eval_every_steps=4,
                    log_every_steps=log_every_steps)
    straight = make_trainer(tmp_path / "a", **settings)
    straight.fit()
    state, recorder = fit_interrupted_then_resumed(tmp_path / "b", stop_at=7, **settings)
    assert recorder.events[0] == ("begin", 4)  # continued from the checkpoint of step 4
    assert state.global_step == 12

    a, b = records(tmp_path / "a"), records(tmp_path / "b")
    steps = [(r["type"], r["step"]) for r in b]
    assert len(steps) == len(set(steps))  # nothing written twice
    assert [(r["type"], r["step"]) for r in a] == steps
    for x, y in zip(a, b):
        for key in ("loss", "lr", "grad_norm", "accuracy", "log_loss"):
            if key in x:
                assert y[key] == pytest.approx(x[key], abs=1e-6), (x["type"], x["step"], key)


@pytest.mark.parametrize("kind", ["FSDP", "DEEPSPEED", "MEGATRON_LM"])
def test_sharded_launches_are_refused_by_name_before_training(kind):
    from accelerate.utils import DistributedType

    from texttune.errors import TexttuneError
    from texttune.training.loop import refuse_sharding

    with pytest.raises(TexttuneError, match=f"configured for {kind}: texttune trains data-parallel only"):
        refuse_sharding(DistributedType[kind])


@pytest.mark.parametrize("kind", ["NO", "MULTI_CPU", "MULTI_GPU"])
def test_data_parallel_launches_go_ahead(kind):
    from accelerate.utils import DistributedType

    from texttune.training.loop import refuse_sharding

    refuse_sharding(DistributedType[kind])
