"""fastText-style bag of n-grams: the mean of word and hashed word-bigram embeddings.

The CPU speed model (Joulin et al., 2016): one ``nn.EmbeddingBag`` lookup per batch over flat ids and
offsets, no recurrence, no attention. It pools itself: ``forward`` returns ``(B, embedding_dim)``.

Rows ``[0, vocab_size)`` of ``embedding.weight`` are the words (GloVe can be copied there); rows
``[vocab_size, vocab_size + num_buckets)`` are the hashed bigram buckets (only when ``ngrams == 2``).
Freezing ``embedding.weight`` freezes the buckets too, leaving them at their random initialisation;
train this model with the embedding unfrozen.

With ``sparse`` (the default) the embedding's gradient is a sparse tensor holding only the rows a
batch read, as in fastText: an optimizer that takes sparse gradients (``train.optimizer: sgd`` or
``adagrad``) then updates those rows alone instead of the whole table. ``sparse`` changes how the
gradient is stored, never the model's function; ``build_optimizer`` turns it off for AdamW.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from texttune.errors import TexttuneError
from texttune.models.classifier import ENCODERS, resolve_config

# 200k buckets x 50 floats = 40 MB of weights, 160 MB with the gradient and AdamW's two moments.
# A dense-gradient optimizer (AdamW) touches every row every step, ~0.4 ms per 1k buckets on a 2-core
# CPU (500k: ~220 ms/step; 200k: ~90 ms). With sparse gradients and SGD a step costs only the rows the
# batch read, whatever the table size. `sparse` defaults to true when absent (configs saved before it).
DEFAULTS: dict[str, Any] = {
    "embedding_dim": 50, "ngrams": 2, "num_buckets": 200_000, "dropout": 0.0, "sparse": True,
}
BIGRAM_PRIME = 1_000_003



def bag_ids(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, vocab_size: int, num_buckets: int, ngrams: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat ids and per-sequence offsets for ``nn.EmbeddingBag``: each sequence's real words, then the
    hashed bigrams of its consecutive real tokens. Padding never enters a word or a bigram."""
    real = attention_mask.bool()  # (B, T)
    ids, keep = input_ids, real
    if ngrams == 2:
        pairs = input_ids[:, :-1] * BIGRAM_PRIME + input_ids[:, 1:]  # (B, T-1); int64, no overflow
        bigrams = vocab_size + pairs % num_buckets  # (B, T-1)
        ids = torch.cat([input_ids, bigrams], dim=1)  # (B, 2T-1)
        keep = torch.cat([real, real[:, :-1] & real[:, 1:]], dim=1)  # (B, 2T-1)
    # Boolean indexing walks row-major, so each sequence's ids stay contiguous and in order.
    flat = ids[keep]  # (N,)
    counts = keep.sum(dim=1)  # (B,)
    offsets = torch.cumsum(counts, dim=0) - counts  # (B,) start of each bag
    return flat, offsets


class BagOfNgramsEncoder(nn.Module):
    """Mean of word (+ bigram) embeddings per sequence → ``(B, embedding_dim)``."""

    pools_itself = True

    def __init__(self, encoder_config: dict[str, Any]) -> None:
        super().__init__()
        cfg = resolve_config(encoder_config, DEFAULTS, "bag_of_ngrams")
        if cfg["ngrams"] not in (1, 2):
            raise TexttuneError(f"bag_of_ngrams encoder config: ngrams must be 1 or 2, got {cfg['ngrams']}")
        self.encoder_config = cfg
        self.vocab_size, self.pad_id = int(cfg["vocab_size"]), int(cfg["pad_id"])
        self.ngrams, self.num_buckets = int(cfg["ngrams"]), int(cfg["num_buckets"])
        rows = self.vocab_size + (self.num_buckets if self.ngrams == 2 else 0)
        self.embedding = nn.EmbeddingBag(rows, cfg["embedding_dim"], mode="mean", sparse=bool(cfg["sparse"]))
        self.dropout = nn.Dropout(cfg["dropout"])
        self.hidden_size = int(cfg["embedding_dim"])
        self._init()

    def _init(self) -> None:
        # Same scale as the other from-scratch encoders; GloVe vectors (std ~0.4) may replace the words.
        nn.init.normal_(self.embedding.weight, std=0.1)
        with torch.no_grad():
            self.embedding.weight[self.pad_id].zero_()

    def forward(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        flat, offsets = bag_ids(input_ids, attention_mask, self.vocab_size, self.num_buckets, self.ngrams)
        pooled = self.embedding(flat, offsets)  # (B, D); an all-padding sequence gives zeros
        return self.dropout(pooled)


ENCODERS.add("bag_of_ngrams", BagOfNgramsEncoder)
