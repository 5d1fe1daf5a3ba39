"""Sparse training of bag_of_ngrams: the embedding's gradient holds only the rows a batch read, SGD and
Adagrad update only those rows (and the dense head), sparse and dense models compute the same thing,
the optimizer settings validate, and a whole run trains with sparse SGD."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from texttune.config import TrainConfig

from texttune.tasks.classify import load_config
from texttune.errors import ConfigError
from texttune.models.bag_of_ngrams import bag_ids
from texttune.models.classifier import ENCODERS, TexttuneConfig, TexttuneForSequenceClassification
from texttune.training.optim import build_optimizer

VOCAB, PAD, BUCKETS = 30, 0, 50
IDS = torch.tensor([[5, 7, 9, PAD], [3, 4, 3, PAD]])  # (B, T); 3 twice: a row read twice in one batch
MASK = (IDS != PAD).long()
LABELS = torch.tensor([0, 2])



def classifier(sparse: bool = True) -> TexttuneForSequenceClassification:
    torch.manual_seed(0)
    encoder = {"vocab_size": VOCAB, "pad_id": PAD, "embedding_dim": 8, "num_buckets": BUCKETS,
               "sparse": sparse}
    config = TexttuneConfig(encoder_type="bag_of_ngrams", encoder=encoder, pooling="mean",
                            head={"dropout": 0.0}, num_labels=3)
    return TexttuneForSequenceClassification(config)


def used_rows() -> set[int]:
    """The embedding rows the batch reads: its words and the buckets of its bigrams."""
    flat, _ = bag_ids(IDS, MASK, VOCAB, BUCKETS, ngrams=2)
    return set(flat.tolist())


def backward(model: nn.Module) -> None:
    nn.functional.cross_entropy(model(IDS, MASK).logits, LABELS).backward()


def sparse_config(optimizer: str, **extra) -> TrainConfig:
    return TrainConfig(optimizer=optimizer, lr=0.5, max_grad_norm=None, **extra)


def test_the_sparse_embedding_gets_a_sparse_gradient_of_the_rows_read():
    model = classifier(sparse=True)
    backward(model)
    grad = model.encoder.embedding.weight.grad
    assert grad.is_sparse
    assert set(grad.coalesce().indices()[0].tolist()) == used_rows()
    assert all(not p.grad.is_sparse for p in model.head.parameters())


def test_sparse_and_dense_models_give_identical_logits_and_gradients():
    sparse, dense = classifier(sparse=True), classifier(sparse=False)
    dense.load_state_dict(sparse.state_dict())
    assert not dense.encoder.embedding.sparse
    with torch.no_grad():
        assert torch.equal(sparse(IDS, MASK).logits, dense(IDS, MASK).logits)
    backward(sparse)
    backward(dense)
    torch.testing.assert_close(sparse.encoder.embedding.weight.grad.to_dense(),
                               dense.encoder.embedding.weight.grad, atol=1e-7, rtol=0)


@pytest.mark.parametrize("optimizer", ["sgd", "adagrad"])
def test_one_step_changes_only_the_rows_read_and_the_head(optimizer):
    model = classifier(sparse=True)
    opt = build_optimizer(model, sparse_config(optimizer, weight_decay=0.01))
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    backward(model)
    opt.step()
    weight = model.encoder.embedding.weight.detach()
    changed = set((weight != before["encoder.embedding.weight"]).any(dim=1).nonzero()[:, 0].tolist())
    assert changed == used_rows()
    for name, param in model.head.named_parameters():
        assert not torch.equal(param.detach(), before[f"head.{name}"]), name


def test_sparse_parameters_get_their_own_group_without_weight_decay():
    model = classifier(sparse=True)
    opt = build_optimizer(model, sparse_config("sgd", weight_decay=0.01))
    decay = {g["name"]: g["weight_decay"] for g in opt.param_groups}
    assert decay == {"body-sparse": 0.0, "head": 0.01, "head-no-decay": 0.0}
    (sparse_group,) = [g for g in opt.param_groups if g["name"] == "body-sparse"]
    assert sparse_group["params"] == [model.encoder.embedding.weight]


def test_adamw_trains_the_sparse_model_with_dense_gradients():
    model = classifier(sparse=True)
    opt = build_optimizer(model, TrainConfig(lr=1e-2))  # the defaults: adamw, clipping on
    assert not model.encoder.embedding.sparse
    backward(model)
    assert not model.encoder.embedding.weight.grad.is_sparse
    opt.step()


def test_clipping_sparse_gradients_is_a_config_error():
    with pytest.raises(ConfigError, match=r"^train\.max_grad_norm: .*train\.max_grad_norm=null"):
        build_optimizer(classifier(sparse=True), TrainConfig(optimizer="sgd", max_grad_norm=1.0))
    # A dense model clips as before.
    build_optimizer(classifier(sparse=False), TrainConfig(optimizer="sgd", max_grad_norm=1.0))


def test_an_unknown_optimizer_names_the_key():
    with pytest.raises(ConfigError, match=r"train\.optimizer: .*'adam'"):
        load_config(None, ["train.optimizer=adam"])
    assert load_config(None, ["train.optimizer=adagrad"]).train.optimizer == "adagrad"
    assert TrainConfig().optimizer == "adamw"


def test_sparse_is_a_model_option_that_defaults_to_true():
    config = load_config(None, ["model.name=bag_of_ngrams"])
    assert config.model.sparse is True
    assert config.model.encoder_dict(VOCAB, PAD)["sparse"] is True
    # An encoder config saved before the option existed still loads, with sparse gradients.
    encoder = ENCODERS.get("bag_of_ngrams")({"vocab_size": VOCAB, "pad_id": PAD, "num_buckets": BUCKETS})
    assert encoder.embedding.sparse and encoder.encoder_config["sparse"] is True


def test_a_run_trains_bag_of_ngrams_with_sparse_sgd(toy_csv, tmp_path):
    from texttune.tasks.classify import run_experiment

    config = load_config(None, [
        "model.name=bag_of_ngrams", "model.embedding_dim=16", "model.num_buckets=1000",
        "model.head.dropout=0", f"output_dir={tmp_path}",
        f"data.train_file={toy_csv}", f"data.validation_file={toy_csv}", f"data.test_file={toy_csv}",
        "train.optimizer=sgd", "train.lr=5", "train.max_grad_norm=null", "train.warmup_ratio=0",
        "train.per_device_batch_size=8", "train.epochs=40", "train.num_threads=1", "train.calibrate=false",
    ])
    result = run_experiment(config, callbacks=[])
    metrics = json.loads((result.run_dir / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["steps"] == 40
    assert metrics["test"]["accuracy"] == 1.0  # the eight toy sentences, learnt
    saved = json.loads((result.run_dir / "model" / "config.json").read_text(encoding="utf-8"))
    assert saved["encoder"]["sparse"] is True
