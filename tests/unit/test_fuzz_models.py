"""Damaged model folders and checkpoints, fuzzed: whatever bytes a file holds (random, truncated, one
bit flipped), loading gives a working model or one TexttuneError whose message starts with the folder
or file at fault -- never another exception.

One tiny model and one checkpoint are built per module; each example copies them, damages one file
and loads the copy. The example budgets are fixed and the examples derandomized, so a run is
reproducible and takes a few seconds.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import texttune
from texttune.errors import TexttuneError

TRAIN = ["the movie was great", "a great film", "the plot was awful", "awful acting"]
MODEL_FILES = ["model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json"]
CHECKPOINT_FILES = ["last/model.safetensors", "last/optimizer.safetensors", "last/optimizer.json",
                    "last/rng.safetensors", "last/rng.json", "last/trainer_state.json", "last/complete.json",
                    "best/model.safetensors"]


def budget(examples: int):
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def damaged(original: bytes) -> st.SearchStrategy[bytes]:
    """Random bytes, the file cut short, or one bit flipped (most often in the first KiB: the headers)."""
    def flip(position: int, bit: int) -> bytes:
        data = bytearray(original)
        data[position % len(data)] ^= 1 << bit
        return bytes(data)

    return st.one_of(
        st.binary(max_size=256),
        st.integers(0, max(len(original) - 1, 0)).map(lambda n: original[:n]),
        st.builds(flip, st.integers(0, 1023) | st.integers(0, len(original) - 1), st.integers(0, 7)),
    )


def assert_names(err: TexttuneError, where: Path) -> None:
    message = str(err)
    assert message.startswith(str(where)), message
    assert "\n" not in message, message


# --------------------------------------------------------------------------- model folders


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory, tiny_model_dir) -> dict[str, Path]:
    """A whole from-scratch CNN, and a linear probe on the tiny BERT (trained tensors + base reference)."""
    import torch

    from texttune.tasks.classify import load_config
    from texttune.models.registry import build_model
    from texttune.models.saving import TRAINED_WEIGHTS, save_classifier
    from texttune.strategies import apply_strategy

    root = tmp_path_factory.mktemp("fuzz-models")
    torch.manual_seed(0)
    cnn = load_config(None, ["model.name=cnn", "model.embedding_dim=8", "model.num_filters=4"]).model
    model, tokenizer = build_model(cnn, ["neg", "pos"], train_texts=TRAIN)
    save_classifier(model, tokenizer, root / "whole")
    probe = load_config(None, [f"model.path={tiny_model_dir}", "strategy.name=linear_probe"])
    model, tokenizer = build_model(probe.model, ["neg", "pos"])
    save_classifier(apply_strategy(model, probe.strategy), tokenizer, root / "trained-only")
    assert (root / "trained-only" / TRAINED_WEIGHTS).is_file()
    return {"whole": root / "whole", "trained-only": root / "trained-only"}


def load_damaged(source: Path, name: str, data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "model"
        shutil.copytree(source, folder)
        (folder / name).write_bytes(data)
        try:
            predictor = texttune.load(folder)
            predictions = predictor.predict(["a great film", "awful"])
        except TexttuneError as err:
            assert_names(err, folder)
        else:  # a flipped bit in a label's name or a weight is still a model
            assert all(p["label"] in predictor.label_names for p in predictions)


@budget(200)
@given(st.data())
def test_a_damaged_model_folder_loads_or_names_the_file(saved_models, data):
    name = data.draw(st.sampled_from(MODEL_FILES), label="file")
    source = saved_models["whole"]
    load_damaged(source, name, data.draw(damaged((source / name).read_bytes()), label="bytes"))


@budget(40)
@given(st.data())
def test_damaged_trained_weights_load_or_name_the_file(saved_models, data):
    source = saved_models["trained-only"]
    original = (source / "trained_weights.safetensors").read_bytes()
    load_damaged(source, "trained_weights.safetensors", data.draw(damaged(original), label="bytes"))


# --------------------------------------------------------------------------- checkpoints


def tiny_trainer(run_dir: Path):
    """A 1-layer BERT (hidden 16) on random token sequences, 2 steps, a checkpoint after step 2."""
    import torch
    from transformers import BertConfig

    from texttune.config import TrainConfig
    from texttune.data.tokenize import Encoded
    from texttune.models.classifier import TexttuneConfig, TexttuneForSequenceClassification
    from texttune.runs import CHECKPOINTS, METRICS_LOG
    from texttune.tasks.classify import ClassificationObjective
    from texttune.training.loop import Trainer

    encoder = BertConfig(vocab_size=32, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=16).to_dict()
    for key in ("transformers_version", "architectures", "_name_or_path", "dtype", "torch_dtype"):
        encoder.pop(key, None)
    torch.manual_seed(0)
    config = TexttuneConfig(encoder_type="hf", encoder=encoder, pooling="mean", num_labels=2)
    model = TexttuneForSequenceClassification(config)
    rng = np.random.default_rng(0)
    offsets = np.arange(0, 8 * 5 + 1, 5, dtype=np.int64)  # 8 sequences of 5 tokens
    data = Encoded(rng.integers(1, 32, 40).astype(np.int32), None, offsets, rng.integers(0, 2, 8),
                   np.arange(8, dtype=np.int64))
    cfg = TrainConfig(max_steps=2, eval_every_steps=2, per_device_batch_size=4, num_threads=1, lr=1e-3)
    return Trainer(model, data, data, cfg, pad_id=0, seed=0,
                   objective=ClassificationObjective(["a", "b"]), checkpoint_dir=run_dir / CHECKPOINTS,
                   metrics_path=run_dir / METRICS_LOG)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The trainer after its run, and the checkpoints it left (``last`` and ``best``)."""
    trainer = tiny_trainer(tmp_path_factory.mktemp("fuzz-run"))
    trainer.fit()
    assert (trainer.checkpoint_dir / "last" / "complete.json").is_file()
    trainer.source_checkpoints = trainer.checkpoint_dir
    return trainer


@budget(200)
@given(st.data())
def test_a_damaged_checkpoint_resumes_or_names_the_file(trained, data):
    """Resume (state, then the best-model reload) from a copy with one file damaged; unsealed (no
    complete.json, as checkpoints written before the seal), so every parser sees the damage too."""
    sealed = data.draw(st.booleans(), label="sealed")
    names = CHECKPOINT_FILES if sealed else [n for n in CHECKPOINT_FILES if n != "last/complete.json"]
    name = data.draw(st.sampled_from(names), label="file")
    source = trained.source_checkpoints  # the fixture's own (each example points the trainer at a copy)
    damage = data.draw(damaged((source / name).read_bytes()), label="bytes")
    with tempfile.TemporaryDirectory() as tmp:
        checkpoints = Path(tmp) / "checkpoints"
        shutil.copytree(source, checkpoints)
        (checkpoints / name).write_bytes(damage)
        if not sealed:
            (checkpoints / "last" / "complete.json").unlink()
        trained.checkpoint_dir, trained.metrics_path = checkpoints, Path(tmp) / "metrics.jsonl"
        try:
            state = trained.fit(resume=True)
        except TexttuneError as err:
            assert_names(err, checkpoints)
        else:
            assert state.global_step >= 1
