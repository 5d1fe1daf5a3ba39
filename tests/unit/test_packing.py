"""Packing parity (issue 21, point 2; the CPU scaffolding): texts packed into one row, positions
restarted per text and a block-diagonal mask, give every text the pooled vector, logits and gradients
it gets padded, through texttune's Hugging Face encoder, for every strategy that can pack."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import texttune.strategies  # noqa: F401  (registers every strategy)
from texttune.data.tokenize import Encoded, collate
from texttune.errors import TexttuneError
from texttune.models.classifier import TexttuneConfig, TexttuneForSequenceClassification
from texttune.models.packing import pack, packed_logits, packed_pooled, unpack, unpackable_reason
from texttune.models.pooling import pool
from texttune.strategies import STRATEGIES, apply_strategy
from texttune.strategies.registry import STRATEGY_CONFIGS

VOCAB = 80
# Strategy settings that make the strategy touch attention where it can (deep prefixes, LoRA on q/v).
SETTINGS = {"prefix": {"mode": "deep", "prefix_length": 3}, "lora": {"rank": 2},
            "adapters": {"bottleneck": 4}, "partial": {"num_layers": 1}}


def tiny_bert(pooling: str, attention: str, seed: int = 0) -> TexttuneForSequenceClassification:
    from transformers import BertConfig

    encoder = BertConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=64, hidden_dropout_prob=0.0,
                         attention_probs_dropout_prob=0.0, type_vocab_size=2).to_dict()
    for key in ("transformers_version", "architectures", "_name_or_path", "dtype", "torch_dtype"):
        encoder.pop(key, None)
    encoder["attn_implementation"] = attention
    torch.manual_seed(seed)
    config = TexttuneConfig(encoder_type="hf", encoder=encoder, pooling=pooling, head={"dropout": 0.0},
                            num_labels=3)
    model = TexttuneForSequenceClassification(config)
    assert model.encoder.model.config._attn_implementation == attention
    return model


def texts(pairs: bool = False) -> Encoded:
    """Five texts of 2..17 tokens (one of them the longest, the rest padded in a batch)."""
    rng = np.random.default_rng(0)
    lengths = np.array([17, 2, 9, 5, 12])
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    ids = rng.integers(5, VOCAB, int(offsets[-1])).astype(np.int32)
    types = None
    if pairs:  # second half of each text is segment 1
        types = np.concatenate([(np.arange(n) >= n // 2).astype(np.int8) for n in lengths])
    return Encoded(ids, types, offsets, np.array([0, 1, 2, 1, 0]), np.arange(5))


def grads(model, logits, labels) -> dict[str, torch.Tensor]:
    model.zero_grad()
    torch.nn.functional.cross_entropy(logits, labels).backward()
    return {name: p.grad.clone() for name, p in model.named_parameters()
            if p.requires_grad and p.grad is not None}


def assert_parity(model, batch) -> None:
    model.eval()  # no dropout anywhere (LoRA's, the head's): gradients still flow
    labels = batch["labels"]
    padded = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                   token_type_ids=batch.get("token_type_ids")).logits
    padded_grads = grads(model, padded, labels)
    row = pack(batch)
    packed = packed_logits(model, row)
    packed_grads = grads(model, packed, labels)
    torch.testing.assert_close(packed, padded, atol=1e-5, rtol=1e-4)
    assert packed_grads.keys() == padded_grads.keys() and padded_grads
    for name, grad in padded_grads.items():
        torch.testing.assert_close(packed_grads[name], grad, atol=1e-5, rtol=1e-4, msg=name)


def test_pack_restarts_positions_and_masks_across_texts():
    batch = collate(texts(pairs=True), np.arange(5), pad_id=0)
    row = pack(batch)
    assert row.input_ids.shape == (1, 45) and row.lengths.tolist() == [17, 2, 9, 5, 12]
    assert row.position_ids[0, 17:19].tolist() == [0, 1] and row.position_ids[0, -1].item() == 11
    mask = row.attention_mask()[0, 0]
    assert mask[17, 18] and not mask[17, 16] and not mask[16, 17] and int(mask.sum()) == sum(
        n * n for n in (17, 2, 9, 5, 12))
    additive = row.attention_mask(torch.float32)[0, 0]
    assert additive[0, 0] == 0 and additive[0, 20] == torch.finfo(torch.float32).min
    hidden = torch.arange(45, dtype=torch.float32).view(1, 45, 1)
    padded, back = unpack(hidden, row.lengths)  # unpack is pack's inverse on the real tokens
    assert torch.equal(back, batch["attention_mask"])
    assert torch.equal(padded[back.bool()].view(-1), hidden.view(-1))
    with pytest.raises(TexttuneError, match="right padding"):
        pack({"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"].flip(1)})


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("pooling", ["cls", "mean", "max"])
def test_packed_and_padded_forward_and_backward_agree(pooling, attention):
    model = tiny_bert(pooling, attention)
    batch = collate(texts(pairs=True), np.arange(5), pad_id=0)
    assert_parity(model, batch)
    row = pack(batch)
    model.eval()
    with torch.no_grad():
        hidden = model.encoder(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        padded_pooled = pool(hidden, batch["attention_mask"], pooling)
        torch.testing.assert_close(packed_pooled(model, row), padded_pooled, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("strategy", STRATEGIES.names())
def test_every_strategy_that_packs_gives_the_padded_gradients(strategy):
    model = tiny_bert("mean", "sdpa")
    cfg = STRATEGY_CONFIGS.config_class(strategy)(**SETTINGS.get(strategy, {}))
    model = apply_strategy(model, cfg)
    reason = unpackable_reason(model)
    if reason is not None:
        pytest.skip(f"{strategy} cannot pack yet: {reason}")
    assert_parity(model, collate(texts(), np.arange(5), pad_id=0))


def test_prompt_prefixes_are_refused_with_their_reason():
    cfg = STRATEGY_CONFIGS.config_class("prefix")(mode="prompt", prefix_length=3)
    model = apply_strategy(tiny_bert("mean", "sdpa"), cfg)
    said = r"cannot pack: prefix \(mode prompt\) prepends one prompt per row"
    with pytest.raises(TexttuneError, match=said):
        packed_logits(model, pack(collate(texts(), np.arange(5), pad_id=0)))
