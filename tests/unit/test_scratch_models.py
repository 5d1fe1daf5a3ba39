"""From-scratch model configs end to end: vocabulary from train only, GloVe rows, freezing, save/load."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

import texttune
from texttune.tasks.classify import load_config
from texttune.errors import TexttuneError
from texttune.tasks.classify import run_experiment
from texttune.models.registry import build_model

TRAIN = ["the movie was great", "a great film", "the plot was awful", "awful acting"]
SMALL = {
    "bag_of_ngrams": ["model.embedding_dim=8", "model.num_buckets=64"],
    "cnn": ["model.embedding_dim=8", "model.num_filters=4"],
    "rnn": ["model.embedding_dim=8", "model.hidden_size=6"],
    "transformer": ["model.d_model=8", "model.nhead=2", "model.num_layers=1", "model.dim_feedforward=16"],
}


def model_cfg(name: str, *extra: str):
    return load_config(None, [f"model.name={name}", *SMALL[name], *extra]).model


@pytest.mark.parametrize("name", sorted(SMALL))
def test_vocabulary_comes_from_train_texts_only(name):
    model, tokenizer = build_model(model_cfg(name), ["neg", "pos"], train_texts=TRAIN)
    vocab = tokenizer.get_vocab()
    assert {"great", "awful", "movie"} <= set(vocab) and "brilliant" not in vocab
    ids = tokenizer(["brilliant movie"])["input_ids"][0]
    assert tokenizer.unk_token_id in ids
    assert model.encoder.embedding.weight.shape[0] >= len(vocab)
    assert model.config.encoder_type == name and model.config.num_labels == 2


@pytest.mark.parametrize("name", sorted(SMALL))
def test_saved_model_and_tokenizer_reload_identically(name, tmp_path):
    model, tokenizer = build_model(model_cfg(name), ["neg", "pos"], train_texts=TRAIN)
    model.eval()
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    reloaded_tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    batch = tokenizer(TRAIN, padding=True, return_tensors="pt")
    batch2 = reloaded_tokenizer(TRAIN, padding=True, return_tensors="pt")
    assert torch.equal(batch["input_ids"], batch2["input_ids"])
    with torch.no_grad():
        assert torch.allclose(model(**batch).logits, loaded(**batch2).logits, atol=1e-6)


def test_glove_initialises_known_words_and_records_coverage():
    from texttune.models.glove import load_glove

    cfg = model_cfg("cnn", "model.glove=true", "model.embedding_dim=50", "model.freeze_embedding=true")
    model, tokenizer = build_model(cfg, ["neg", "pos"], train_texts=TRAIN)
    vectors, index = load_glove()
    row = tokenizer.get_vocab()["great"]
    assert torch.allclose(model.encoder.embedding.weight[row], torch.from_numpy(vectors[index["great"]].copy()))
    assert not model.encoder.embedding.weight.requires_grad
    assert model.config.glove["found"] == len(set(" ".join(TRAIN).split()))  # every toy word is in GloVe
    assert model.config.glove["coverage"] == 1.0


def test_glove_needs_50_dimensions():
    with pytest.raises(texttune.errors.TexttuneError, match="model.embedding_dim: GloVe 6B vectors offline are 50"):
        build_model(model_cfg("cnn", "model.glove=true", "model.embedding_dim=8"), ["a", "b"], train_texts=TRAIN)


def test_pretrained_wordpiece_tokenizer_option(tiny_model_dir):
    model, tokenizer = build_model(model_cfg("cnn", f"model.tokenizer={tiny_model_dir}"), ["neg", "pos"],
                                   train_texts=TRAIN)
    assert len(tokenizer) == 30522 and model.encoder.embedding.weight.shape[0] == 30522


def test_transformer_cls_pooling_puts_cls_first():
    model, tokenizer = build_model(model_cfg("transformer", "model.pooling=cls"), ["neg", "pos"], train_texts=TRAIN)
    assert tokenizer(["great film"])["input_ids"][0][0] == tokenizer.convert_tokens_to_ids("<cls>")
    assert model.config.pooling == "cls"


def test_scratch_run_end_to_end_and_predict(toy_csv, tmp_path):
    config = load_config(None, [
        "model.name=cnn", "model.embedding_dim=16", "model.num_filters=8", "model.dropout=0",
        f"data.train_file={toy_csv}", f"data.validation_file={toy_csv}", f"data.test_file={toy_csv}",
        "train.epochs=30", "train.lr=1e-2", "train.per_device_batch_size=8", "train.warmup_ratio=0",
        "train.num_threads=1", f"output_dir={tmp_path}", "name=cnn-toy",
    ])
    result = run_experiment(config, callbacks=[])
    assert result.metrics["validation"]["accuracy"] == 1.0
    saved = json.loads((result.run_dir / "model" / "config.json").read_text())
    assert saved["encoder_type"] == "cnn" and saved["encoder"]["num_filters"] == 8
    predictions = texttune.load(result.run_dir).predict(["i loved it , a wonderful film", "awful , boring"])
    assert [p["label"] for p in predictions] == ["pos", "neg"]


def test_glove_words_extend_the_vocabulary_after_the_training_words():
    from texttune.models.glove import load_glove

    cfg = model_cfg("cnn", "model.glove=true", "model.embedding_dim=50", "model.vocab.glove_words=500")
    model, tokenizer = build_model(cfg, ["a", "b"], train_texts=TRAIN)
    vocab = tokenizer.get_vocab()
    train_words = set(" ".join(TRAIN).split())
    assert max(vocab[w] for w in train_words) < min(i for w, i in vocab.items() if w not in train_words and i > 3)
    vectors, index = load_glove()
    added = next(w for w in ("president", "government", "year") if w not in train_words)
    assert torch.equal(model.encoder.embedding.weight[vocab[added]], torch.from_numpy(vectors[index[added]].copy()))
    assert len(vocab) == len(set(train_words) | {w for w, i in zip(index, range(500))}) + 4


def test_glove_words_need_glove():
    with pytest.raises(TexttuneError, match="model.vocab.glove_words: .* set model.glove=true"):
        build_model(model_cfg("cnn", "model.vocab.glove_words=10"), ["a", "b"], train_texts=TRAIN)


def test_transformer_glove_vectors_are_scaled_to_unit_rms_not_sqrt_d_model(tmp_path):
    """GloVe rows through the projection x sqrt(d_model) were ~5x the sinusoidal positions (word order
    drowned); auto scales the projected vectors to RMS 1, and the measured factor loads back with the model."""
    import math

    cfg = model_cfg("transformer", "model.glove=true", "model.embedding_dim=50", "model.d_model=128",
                    "model.nhead=4")
    model, tokenizer = build_model(cfg, ["neg", "pos"], train_texts=TRAIN)
    encoder = model.encoder
    scale = model.config.encoder["embedding_scale"]
    assert isinstance(scale, float) and encoder.scale == scale and scale < math.sqrt(128) / 2
    with torch.no_grad():
        rms = encoder.token_vectors(torch.arange(len(tokenizer))).pow(2).mean().sqrt().item()
    assert rms == pytest.approx(1.0, rel=1e-3)
    model.eval().save_pretrained(tmp_path)
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert loaded.encoder.scale == scale


def test_transformer_scale_is_sqrt_d_model_without_glove_and_for_models_saved_before_the_key():
    from texttune.models.transformer import TransformerEncoder

    model, _ = build_model(model_cfg("transformer"), ["neg", "pos"], train_texts=TRAIN)
    assert model.config.encoder["embedding_scale"] is None and model.encoder.scale == pytest.approx(8 ** 0.5)
    old = {k: v for k, v in model.config.encoder.items() if k != "embedding_scale"}  # a config.json of before
    assert TransformerEncoder(old).scale == pytest.approx(8 ** 0.5)
    fixed, _ = build_model(model_cfg("transformer", "model.glove=true", "model.embedding_dim=50",
                                     "model.embedding_scale=2.5"), ["neg", "pos"], train_texts=TRAIN)
    assert fixed.encoder.scale == 2.5
