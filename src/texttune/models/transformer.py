"""A small Transformer encoder trained from scratch.

token embedding (→ Linear to ``d_model`` when ``embedding_dim`` differs, e.g. 50-d GloVe) × ``embedding_scale``
+ positions (sinusoidal or learned) → dropout → ``nn.TransformerEncoder`` (batch_first, key-padding
mask, pre-LN with a final LayerNorm by default) → ``(B, T, d_model)``. It does not pool: the classifier
pools with cls/mean/max over real tokens (the tokenizer may put a <cls> token first for ``cls``).
Outputs at padded positions are zero.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from texttune.errors import TexttuneError
from texttune.models.classifier import ENCODERS, resolve_config

DEFAULTS: dict[str, Any] = {
    "embedding_dim": None,  # None: d_model
    "d_model": 128,
    "nhead": 4,
    "num_layers": 2,
    "dim_feedforward": 256,
    "dropout": 0.1,
    "positions": "sinusoidal",
    "max_length": 512,
    "norm_first": True,
    # None: sqrt(d_model), Vaswani et al.'s factor for embeddings initialised at std ~d_model**-0.5 (and
    # what every model saved before this key had). GloVe inputs get a factor measured at build time
    # (models/scratch.glove_embedding_scale), kept here so the saved model loads with the same one.
    "embedding_scale": None,
}




def _check(cfg: dict[str, Any]) -> None:
    if cfg["positions"] not in ("sinusoidal", "learned"):
        raise TexttuneError(f"transformer encoder config: positions must be sinusoidal or learned, "
                            f"got '{cfg['positions']}'")
    if cfg["d_model"] % cfg["nhead"]:
        raise TexttuneError(f"transformer encoder config: d_model ({cfg['d_model']}) must be divisible "
                            f"by nhead ({cfg['nhead']})")


class EncoderLayer(nn.TransformerEncoderLayer):
    """``nn.TransformerEncoderLayer`` without its fused inference fast path.

    In eval mode without gradients PyTorch runs the layer as one fused kernel that reads the weights
    directly: it would silently bypass LoRA, adapters and prefixes injected by a strategy, and it
    treats padding differently from training. Training and inference take this same path.
    """

    def forward(self, src, src_mask=None, src_key_padding_mask=None, is_causal=False):  # (B, T, H)
        x = src
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), src_mask, src_key_padding_mask, is_causal=is_causal)
            return x + self._ff_block(self.norm2(x))
        x = self.norm1(x + self._sa_block(x, src_mask, src_key_padding_mask, is_causal=is_causal))
        return self.norm2(x + self._ff_block(x))


def sinusoidal_table(max_length: int, d_model: int) -> torch.Tensor:
    """Vaswani et al. (2017) positions: (max_length, d_model), sin on even and cos on odd channels."""
    position = torch.arange(max_length, dtype=torch.float32).unsqueeze(1)  # (P, 1)
    frequency = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10_000.0) / d_model))
    table = torch.zeros(max_length, d_model)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency[: d_model // 2])
    return table


class TransformerEncoder(nn.Module):
    """Token ids → ``(B, T, d_model)`` contextual hidden states (zeros at padding)."""

    def __init__(self, encoder_config: dict[str, Any]) -> None:
        super().__init__()
        cfg = resolve_config(encoder_config, DEFAULTS, "transformer")
        _check(cfg)
        self.encoder_config = cfg
        d_model, embedding_dim = int(cfg["d_model"]), int(cfg["embedding_dim"] or cfg["d_model"])
        self.pad_id, self.max_length = int(cfg["pad_id"]), int(cfg["max_length"])
        self.scale = float(cfg["embedding_scale"] or math.sqrt(d_model))
        self.embedding = nn.Embedding(cfg["vocab_size"], embedding_dim, padding_idx=self.pad_id)
        self.project = nn.Linear(embedding_dim, d_model) if embedding_dim != d_model else nn.Identity()
        if cfg["positions"] == "learned":
            self.position = nn.Embedding(self.max_length, d_model)
        else:
            # A buffer, saved with the weights: it loads back exactly, whatever the loader does with
            # buffers it would otherwise have to recompute.
            self.register_buffer("position_table", sinusoidal_table(self.max_length, d_model))
        self.dropout = nn.Dropout(cfg["dropout"])
        layer = EncoderLayer(d_model, cfg["nhead"], cfg["dim_feedforward"], cfg["dropout"],
                              batch_first=True, norm_first=bool(cfg["norm_first"]))
        # Pre-LN leaves the residual stream un-normalised; the final LayerNorm is part of that recipe.
        # The nested-tensor path is off: it only exists for post-LN in eval and returns padding differently.
        self.encoder = nn.TransformerEncoder(layer, cfg["num_layers"], enable_nested_tensor=False,
                                             norm=nn.LayerNorm(d_model) if cfg["norm_first"] else None)
        self.hidden_size = d_model
        self._init()

    def _init(self) -> None:
        # std 0.1 ≈ d_model**-0.5, so the sqrt(d_model) scaling brings tokens to unit scale.
        nn.init.normal_(self.embedding.weight, std=0.1)
        with torch.no_grad():
            self.embedding.weight[self.pad_id].zero_()
        if isinstance(self.project, nn.Linear):
            nn.init.xavier_uniform_(self.project.weight)
            nn.init.zeros_(self.project.bias)
        if hasattr(self, "position"):
            nn.init.normal_(self.position.weight, std=0.02)

    def token_vectors(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The token part of the input, before positions: embedding → projection → × ``scale``."""
        return self.project(self.embedding(input_ids)) * self.scale  # (B, T, H)

    def _positions(self, real: torch.Tensor) -> torch.Tensor:
        # Count real tokens only, so left padding does not shift a sentence's positions.
        index = (real.long().cumsum(dim=1) - 1).clamp(min=0)  # (B, T)
        return self.position(index) if hasattr(self, "position") else self.position_table[index]  # (B, T, H)

    def forward(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        if input_ids.shape[1] > self.max_length:
            raise TexttuneError(f"transformer encoder: sequence length {input_ids.shape[1]} exceeds "
                                f"max_length {self.max_length}; truncate the input or raise max_length")
        real = attention_mask.bool()  # (B, T)
        x = self.token_vectors(input_ids) + self._positions(real)  # (B, T, H)
        # A row of padding alone would attend to nothing (NaN); let it attend to its first position.
        padding = ~real
        padding[:, 0] &= real.any(dim=1)  # (B, T), True = pad
        hidden = self.encoder(self.dropout(x), src_key_padding_mask=padding)  # (B, T, H)
        return hidden * real.unsqueeze(-1)  # (B, T, H), zeros at padding


ENCODERS.add("transformer", TransformerEncoder)
