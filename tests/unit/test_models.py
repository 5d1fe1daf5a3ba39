"""The classifier: pooling that ignores padding, heads of the documented shape, Hugging Face
save → load round trips, and pretrained encoder weights that actually arrive."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from texttune.models.classifier import TexttuneForSequenceClassification
from texttune.models.heads import HeadConfig, build_head
from texttune.models.pooling import pool
from texttune.models.pretrained import PretrainedModelConfig, build_pretrained

LABELS = ["neg", "neu", "pos"]
SHORT = "a short one"
LONG = "a much longer sentence that has many more tokens than the short one does"



def build(model_dir, pooling: str = "cls", **head) -> tuple[TexttuneForSequenceClassification, object]:
    torch.manual_seed(0)
    cfg = PretrainedModelConfig(path=str(model_dir), pooling=pooling, head=HeadConfig(dropout=0.0, **head))
    model, tokenizer = build_pretrained(cfg, LABELS)
    return model.eval(), tokenizer


def logits_of(model, tokenizer, texts: list[str]) -> torch.Tensor:
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**batch).logits


# --------------------------------------------------------------------------- pooling


@pytest.mark.parametrize("pooling", ["mean", "max"])
def test_masked_pooling_ignores_padding(tiny_model_dir, pooling):
    model, tokenizer = build(tiny_model_dir, pooling)
    alone = logits_of(model, tokenizer, [SHORT])  # no padding
    batch = tokenizer([SHORT, LONG], padding=True, return_tensors="pt")
    assert batch["attention_mask"][0].sum() < batch["attention_mask"].shape[1]  # SHORT is padded
    with torch.no_grad():
        padded = model(**batch).logits
    torch.testing.assert_close(padded[0], alone[0], atol=1e-5, rtol=0)

    # The test can tell: averaging/maxing over the padding too (the old notebook bug) changes the vector.
    with torch.no_grad():
        hidden = model.encoder(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
    masked = pool(hidden, batch["attention_mask"], pooling)[0]
    unmasked = pool(hidden, torch.ones_like(batch["attention_mask"]), pooling)[0]
    assert not torch.allclose(masked, unmasked, atol=1e-4)


def test_mean_and_max_pool_over_real_tokens_only():
    torch.manual_seed(0)
    hidden = torch.randn(2, 5, 4)  # (B, T, H)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    hidden[0, 3:] = 1e4  # padding positions hold garbage that must not leak in
    mean = pool(hidden, mask, "mean")
    maxed = pool(hidden, mask, "max")
    assert mean.shape == maxed.shape == (2, 4)
    torch.testing.assert_close(mean[0], hidden[0, :3].mean(dim=0))
    torch.testing.assert_close(mean[1], hidden[1].mean(dim=0))
    torch.testing.assert_close(maxed[0], hidden[0, :3].max(dim=0).values)
    torch.testing.assert_close(maxed[1], hidden[1].max(dim=0).values)


def test_max_pool_of_all_negative_states_is_not_zero():
    # Filling padding with 0 instead of -inf would make max pooling return 0 here.
    hidden = -torch.rand(1, 4, 3) - 1.0
    mask = torch.tensor([[1, 1, 0, 0]])
    torch.testing.assert_close(pool(hidden, mask, "max")[0], hidden[0, :2].max(dim=0).values)


def test_cls_pooling_takes_position_zero(tiny_model_dir):
    hidden = torch.randn(3, 6, 8)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0]])
    assert torch.equal(pool(hidden, mask, "cls"), hidden[:, 0])

    model, tokenizer = build(tiny_model_dir, "cls")
    batch = tokenizer([SHORT, LONG], padding=True, return_tensors="pt")
    with torch.no_grad():
        states = model.encoder(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
        expected = model.head(states[:, 0])
        got = model(**batch).logits
    torch.testing.assert_close(got, expected, atol=0, rtol=0)


def test_unknown_pooling_is_an_error():
    with pytest.raises(ValueError, match="unknown pooling 'sum'"):
        pool(torch.zeros(1, 2, 3), torch.ones(1, 2), "sum")


# --------------------------------------------------------------------------- heads


def test_linear_head_shape():
    head = build_head(HeadConfig(dropout=0.2), 32, 3)
    assert [type(m) for m in head] == [nn.Dropout, nn.Linear]
    assert head[0].p == 0.2
    assert (head[1].in_features, head[1].out_features) == (32, 3)
    assert head(torch.randn(5, 32)).shape == (5, 3)


def test_mlp_head_has_the_documented_shape():
    head = build_head(HeadConfig(type="mlp", hidden_size=16, activation="gelu", dropout=0.1), 32, 3)
    assert [type(m) for m in head] == [nn.Dropout, nn.Linear, nn.GELU, nn.Dropout, nn.Linear]
    assert (head[1].in_features, head[1].out_features) == (32, 16)
    assert (head[4].in_features, head[4].out_features) == (16, 3)
    assert head[0].p == head[3].p == 0.1
    assert head(torch.randn(5, 32)).shape == (5, 3)


def test_mlp_head_hidden_size_defaults_to_the_encoder_width():
    head = build_head(HeadConfig(type="mlp"), 32, 2)
    assert isinstance(head[2], nn.Tanh)  # the documented default activation
    assert (head[1].in_features, head[1].out_features, head[4].out_features) == (32, 32, 2)


def test_classifier_with_mlp_head(tiny_model_dir):
    model, tokenizer = build(tiny_model_dir, "mean", type="mlp", hidden_size=8)
    assert (model.head[1].in_features, model.head[1].out_features) == (32, 8)
    assert logits_of(model, tokenizer, [SHORT, LONG]).shape == (2, len(LABELS))


# --------------------------------------------------------------------------- Hugging Face format


@pytest.mark.parametrize("pooling,head_type", [("cls", "linear"), ("mean", "mlp")])
def test_save_then_auto_load_gives_identical_logits(tiny_model_dir, tmp_path, pooling, head_type):
    from transformers import AutoModelForSequenceClassification

    model, tokenizer = build(tiny_model_dir, pooling, type=head_type)
    model.save_pretrained(tmp_path)
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert type(loaded) is TexttuneForSequenceClassification
    assert loaded.config.pooling == pooling and loaded.config.head["type"] == head_type
    assert [loaded.config.id2label[i] for i in range(len(LABELS))] == LABELS
    assert loaded.config.label2id == {name: i for i, name in enumerate(LABELS)}
    texts = [SHORT, LONG, "x"]
    torch.testing.assert_close(logits_of(loaded, tokenizer, texts), logits_of(model, tokenizer, texts),
                               atol=1e-6, rtol=0)


def test_build_pretrained_loads_the_encoder_weights(tiny_model_dir):
    model, _ = build(tiny_model_dir)
    saved = load_file(str(tiny_model_dir / "model.safetensors"))
    encoder = model.encoder.model.state_dict()
    assert set(encoder) <= set(saved)  # the BERT pooler is dropped, nothing else
    assert set(saved) - set(encoder) <= {"pooler.dense.weight", "pooler.dense.bias"}
    for name, tensor in encoder.items():
        assert torch.equal(tensor, saved[name]), name
    # ... and the head is fresh, sized for the labels
    assert model.head[-1].out_features == len(LABELS)
    assert model.config.num_labels == len(LABELS)


def test_head_initialisation_depends_on_the_seed_only(tiny_model_dir):
    first, _ = build(tiny_model_dir)
    second, _ = build(tiny_model_dir)
    assert torch.equal(first.head[-1].weight, second.head[-1].weight)
    assert first.head[-1].weight.std() < 0.1  # normal(0, 0.02) as in BERT
    assert torch.count_nonzero(first.head[-1].bias) == 0


def test_missing_model_folder_is_a_clear_error(tmp_path):
    from texttune.errors import TexttuneError

    with pytest.raises(TexttuneError, match="model folder not found"):
        build_pretrained(PretrainedModelConfig(path=str(tmp_path / "nope")), LABELS)


def test_encoder_dropout_overrides_reach_the_encoder_and_its_saved_config(tiny_model_dir, tmp_path):
    from transformers import AutoModelForSequenceClassification

    cfg = PretrainedModelConfig(path=str(tiny_model_dir), attention_dropout=0.0, hidden_dropout=0.2)
    model, _ = build_pretrained(cfg, ["a", "b"])
    encoder = model.encoder.model
    assert encoder.config.attention_probs_dropout_prob == 0.0 and encoder.config.hidden_dropout_prob == 0.2
    assert encoder.encoder.layer[0].attention.self.dropout.p == 0.0  # the module, not just the config
    assert encoder.embeddings.dropout.p == 0.2
    model.save_pretrained(tmp_path / "saved")
    again = AutoModelForSequenceClassification.from_pretrained(tmp_path / "saved")
    assert again.encoder.model.config.attention_probs_dropout_prob == 0.0
    # Unset: the checkpoint's own values.
    plain, _ = build_pretrained(PretrainedModelConfig(path=str(tiny_model_dir)), ["a", "b"])
    assert plain.encoder.model.config.attention_probs_dropout_prob == 0.1


def test_encoder_dropout_names_follow_the_architecture(tmp_path):
    from transformers import DistilBertConfig, DistilBertModel, GPT2Config, GPT2Model

    from texttune.errors import TexttuneError
    from texttune.models.pretrained import load_encoder

    DistilBertModel(DistilBertConfig(dim=32, hidden_dim=64, n_layers=1, n_heads=2, vocab_size=50)).save_pretrained(
        tmp_path / "distil")
    encoder = load_encoder(tmp_path / "distil", dropout={"attention_dropout": 0.0, "hidden_dropout": 0.3})
    assert encoder.config.attention_dropout == 0.0 and encoder.config.dropout == 0.3
    GPT2Model(GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=50)).save_pretrained(tmp_path / "gpt2")
    with pytest.raises(TexttuneError, match="model.attention_dropout: the gpt2 encoder's config has none of"):
        load_encoder(tmp_path / "gpt2", dropout={"attention_dropout": 0.0})
