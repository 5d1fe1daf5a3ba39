"""The from-scratch encoders: output shapes, padding that changes nothing, examples that do not
interact, gradients that reach the embedding, fastText's bigram ids, and configs that rebuild them."""

from __future__ import annotations

import json

import pytest
import torch

import texttune.models.bag_of_ngrams  # noqa: F401  (registers the encoders)
import texttune.models.cnn  # noqa: F401
import texttune.models.rnn  # noqa: F401
import texttune.models.transformer  # noqa: F401
from texttune.errors import TexttuneError
from texttune.models.bag_of_ngrams import BIGRAM_PRIME, bag_ids
from texttune.models.classifier import ENCODERS
from texttune.models.pooling import pool

VOCAB, PAD = 60, 0
TINY = {
    "bag_of_ngrams": {"embedding_dim": 16, "num_buckets": 97},
    "cnn": {"embedding_dim": 16, "num_filters": 8},
    "rnn": {"embedding_dim": 16, "hidden_size": 12},
    "transformer": {"d_model": 16, "nhead": 2, "dim_feedforward": 32, "max_length": 64},
}
VARIANTS = (
    [("cnn", {}), ("cnn", {"kernel_sizes": [2, 5]})]
    + [("bag_of_ngrams", {"ngrams": n}) for n in (1, 2)]
    + [("rnn", {"cell": cell, "bidirectional": bi, "pooling": how})
       for cell in ("rnn", "lstm", "gru") for bi in (True, False) for how in ("last", "mean", "max")]
    + [("rnn", {"num_layers": 2, "dropout": 0.3})]
    + [("transformer", {"positions": pos, "norm_first": pre}) for pos in ("sinusoidal", "learned")
       for pre in (True, False)]
    + [("transformer", {"embedding_dim": 10})]  # GloVe-sized embeddings projected to d_model
)
VARIANTS += [(name, {}) for name in TINY if (name, {}) not in VARIANTS]  # every registered encoder as is
IDS = [name + "".join(f"-{k}={v}" for k, v in extra.items()) for name, extra in VARIANTS]



@pytest.fixture(params=VARIANTS, ids=IDS)
def variant(request) -> tuple[str, dict]:
    name, extra = request.param
    return name, {"vocab_size": VOCAB, "pad_id": PAD, **TINY[name], **extra}


def build(name: str, config: dict) -> torch.nn.Module:
    """The encoder in eval mode, every weight nudged off its initial value: like a trained model,
    nothing is zero by luck (conv biases, the pad row that copying GloVe vectors in can overwrite)."""
    torch.manual_seed(0)
    encoder = ENCODERS.get(name)(config).eval()
    with torch.no_grad():
        for param in encoder.parameters():
            param.add_(0.1 * torch.randn_like(param))
    return encoder


def encode(encoder, rows: list[list[int]], side: str = "right", how: str = "mean") -> torch.Tensor:
    """Pad ``rows`` with PAD on ``side`` into one batch and return (B, H) vectors: the encoder's own
    when it pools itself, else pooled over real tokens the way the classifier pools."""
    width = max(len(row) for row in rows)
    padded = [row + [PAD] * (width - len(row)) if side == "right" else [PAD] * (width - len(row)) + row
              for row in rows]
    ids = torch.tensor(padded)  # (B, T)
    mask = (torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows]) if side == "right"
            else torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows]))  # (B, T)
    out = encoder(ids, mask)
    return out if getattr(encoder, "pools_itself", False) else pool(out, mask, how)


SHORT = [5, 9, 14, 3, 27]
LONG = [7, 7, 31, 2, 40, 11, 8, 19, 23, 4, 56]


SCRATCH = [name for name in ENCODERS.names() if name != "hf"]  # hf wraps a Hugging Face encoder (contract tests)


def test_every_registered_encoder_has_a_tiny_config_here():
    """The tests below are discovered from the registry: a new encoder without a TINY entry fails here."""
    assert {"bag_of_ngrams", "cnn", "rnn", "transformer"} <= set(SCRATCH)
    assert set(SCRATCH) == set(TINY), f"add a TINY config for {sorted(set(SCRATCH) - set(TINY))}"


def test_output_shape_and_hidden_size(variant):
    name, config = variant
    encoder = build(name, config)
    ids = torch.randint(1, VOCAB, (3, 7))  # (B, T)
    out = encoder(ids, torch.ones_like(ids))
    pooled = getattr(encoder, "pools_itself", False)
    assert out.shape == ((3, encoder.hidden_size) if pooled else (3, 7, encoder.hidden_size))


@pytest.mark.parametrize("how", ["cls", "mean", "max"])
def test_appended_padding_changes_nothing(variant, how):
    encoder = build(*variant)
    with torch.no_grad():
        alone = encode(encoder, [SHORT], how=how)[0]
        batched = encode(encoder, [SHORT, LONG], how=how)[0]  # SHORT right-padded by 6
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=0)


def test_padding_side_changes_nothing(variant):
    encoder = build(*variant)
    with torch.no_grad():
        right = encode(encoder, [SHORT, LONG], side="right")[0]
        left = encode(encoder, [SHORT, LONG], side="left")[0]
    torch.testing.assert_close(left, right, atol=1e-5, rtol=0)


def test_examples_do_not_interact(variant):
    encoder = build(*variant)
    rows = [SHORT, LONG, [12, 13]]
    changed = [SHORT, [v + 1 for v in LONG], [12, 13]]
    with torch.no_grad():
        before, after = encode(encoder, rows), encode(encoder, changed)
    torch.testing.assert_close(after[[0, 2]], before[[0, 2]], atol=1e-5, rtol=0)
    assert not torch.allclose(after[1], before[1])  # the test can see a change where there is one


def test_all_padding_row_gives_finite_output(variant):
    encoder = build(*variant)
    ids = torch.tensor([SHORT, [PAD] * len(SHORT)])
    mask = torch.tensor([[1] * len(SHORT), [0] * len(SHORT)])
    with torch.no_grad():
        out = encoder(ids, mask)
    assert torch.isfinite(out).all()


def test_gradients_reach_the_embedding(variant):
    encoder = build(*variant).train()
    out = encode(encoder, [SHORT, LONG])
    out.pow(2).sum().backward()
    grad = encoder.embedding.weight.grad
    assert grad is not None
    grad = grad.to_dense() if grad.is_sparse else grad  # bag_of_ngrams' EmbeddingBag is sparse
    assert grad[SHORT].abs().sum() > 0
    assert grad[PAD].abs().sum() == 0  # padding is never read


def test_config_round_trips_through_json(variant):
    encoder = build(*variant)
    config = json.loads(json.dumps(encoder.encoder_config))  # what config.json stores
    rebuilt = ENCODERS.get(variant[0])(config).eval()
    rebuilt.load_state_dict(encoder.state_dict())
    with torch.no_grad():
        expected = encode(encoder, [SHORT, LONG])
        torch.testing.assert_close(encode(rebuilt, [SHORT, LONG]), expected, atol=0, rtol=0)


# --------------------------------------------------------------------------- encoder-specific


def test_bigram_ids_by_hand():
    ids = torch.tensor([[5, 7, 9, PAD], [3, PAD, PAD, PAD], [PAD, PAD, PAD, PAD]])
    mask = (ids != PAD).long()
    flat, offsets = bag_ids(ids, mask, vocab_size=10, num_buckets=100, ngrams=2)

    def bigram(a: int, b: int) -> int:
        return 10 + (a * BIGRAM_PRIME + b) % 100

    # Row 0: three words, two bigrams, no (9, PAD); row 1: one word, no bigram; row 2: an empty bag.
    assert flat.tolist() == [5, 7, 9, bigram(5, 7), bigram(7, 9), 3]
    assert offsets.tolist() == [0, 5, 6]
    unigrams, unigram_offsets = bag_ids(ids, mask, vocab_size=10, num_buckets=100, ngrams=1)
    assert unigrams.tolist() == [5, 7, 9, 3] and unigram_offsets.tolist() == [0, 3, 4]


def test_bag_of_ngrams_is_the_mean_of_its_rows():
    encoder = build("bag_of_ngrams", {"vocab_size": 10, "pad_id": PAD, "num_buckets": 100})
    ids, mask = torch.tensor([[5, 7, 9, PAD]]), torch.tensor([[1, 1, 1, 0]])
    rows = [5, 7, 9, 10 + (5 * BIGRAM_PRIME + 7) % 100, 10 + (7 * BIGRAM_PRIME + 9) % 100]
    with torch.no_grad():
        torch.testing.assert_close(encoder(ids, mask)[0], encoder.embedding.weight[rows].mean(dim=0))


def test_cnn_handles_a_sequence_shorter_than_its_widest_kernel():
    encoder = build("cnn", {"vocab_size": VOCAB, "pad_id": PAD, **TINY["cnn"], "kernel_sizes": [3, 5]})
    with torch.no_grad():
        alone = encode(encoder, [[17]])  # T=1 < 5
        batched = encode(encoder, [[17], LONG])
    assert alone.shape == (1, encoder.hidden_size)
    torch.testing.assert_close(batched[0], alone[0], atol=1e-5, rtol=0)


def test_rnn_last_is_the_true_final_state():
    config = {"vocab_size": VOCAB, "pad_id": PAD, **TINY["rnn"], "cell": "gru", "bidirectional": False}
    encoder = build("rnn", config)
    with torch.no_grad():
        out, _ = encoder.rnn(encoder.embedding(torch.tensor([SHORT])))  # (1, T, H), no padding at all
        batched = encode(encoder, [SHORT, LONG])
    torch.testing.assert_close(batched[0], out[0, -1], atol=1e-5, rtol=0)


def test_transformer_rejects_sequences_longer_than_max_length():
    config = {"vocab_size": VOCAB, "pad_id": PAD, **TINY["transformer"], "max_length": 8}
    encoder = build("transformer", config)
    ids = torch.ones(1, 9, dtype=torch.long)
    with pytest.raises(TexttuneError, match="max_length 8"):
        encoder(ids, torch.ones_like(ids))


@pytest.mark.parametrize("name", SCRATCH)
def test_a_config_typo_names_the_key(name):
    with pytest.raises(TexttuneError, match="unknown keys \\['hiden_size'\\]"):
        ENCODERS.get(name)({"vocab_size": VOCAB, "pad_id": PAD, "hiden_size": 8})
