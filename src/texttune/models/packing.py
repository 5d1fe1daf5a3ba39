"""Packing: several texts in one row, each attending to itself only (issue 21, point 2; a building
block, not wired into the loop yet).

A padded batch of B texts costs B × longest tokens; packed, the same texts cost the sum of their
lengths. The row concatenates each text's real tokens, restarts the position ids at 0 for each text
(absolute position embeddings then see what they see padded), and attends through a block-diagonal
("document") mask, so no token sees another text. The encoder's output is cut back into one padded
sequence per text, and the usual pooling (which ignores padding) and head apply unchanged: packed
and padded forward passes compute the same function (``tests/unit/test_packing.py`` checks logits
and gradients, strategy by strategy).

Only Hugging Face encoders (``HFEncoder``), through an explicit 4-D mask: boolean for SDPA (PyTorch
then picks its memory-efficient or math kernel: a dense (T, T) mask rules out the flash kernel),
additive for eager attention. The mask is dense, T² per row; flash-attention's variable-length
kernels (``cu_seqlens``) would avoid it on a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from texttune.errors import TexttuneError
from texttune.models.pooling import pool


@dataclass
class PackedRow:
    """B texts as one row of T = sum of their lengths tokens."""

    input_ids: torch.Tensor  # (1, T)
    position_ids: torch.Tensor  # (1, T), 0 at each text's first token
    token_type_ids: torch.Tensor  # (1, T)
    lengths: torch.Tensor  # (B,) tokens of each text

    @property
    def documents(self) -> torch.Tensor:
        """(T,) which text each token belongs to."""
        texts = torch.arange(len(self.lengths), device=self.lengths.device)
        return torch.repeat_interleave(texts, self.lengths)

    def attention_mask(self, additive_dtype: torch.dtype | None = None) -> torch.Tensor:
        """(1, 1, T, T): a token attends to the tokens of its own text only. Boolean (True = attend),
        or with ``additive_dtype`` 0 / the dtype's minimum, as eager attention adds it to its scores."""
        docs = self.documents
        same = (docs[:, None] == docs[None, :])[None, None]  # (1, 1, T, T)
        if additive_dtype is None:
            return same
        mask = torch.zeros(same.shape, dtype=additive_dtype, device=same.device)
        return mask.masked_fill(~same, torch.finfo(additive_dtype).min)


def pack(batch: dict[str, torch.Tensor]) -> PackedRow:
    """A padded batch (``collate``'s: right padding, ``attention_mask`` 1 on real tokens) as one row."""
    mask = batch["attention_mask"].bool()  # (B, L)
    lengths = mask.sum(dim=1)
    if not torch.equal(mask, torch.arange(mask.shape[1], device=mask.device)[None, :] < lengths[:, None]):
        raise TexttuneError("packing expects right padding: each row's real tokens first")
    ids = batch["input_ids"][mask][None]  # (1, T): row by row, in order
    types = batch.get("token_type_ids")
    types = types[mask][None] if types is not None else torch.zeros_like(ids)
    starts = torch.cumsum(lengths, 0) - lengths  # (B,)
    positions = torch.arange(ids.shape[1], device=ids.device) - torch.repeat_interleave(starts, lengths)
    return PackedRow(ids, positions[None], types, lengths)


def unpack(hidden: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(1, T, H) packed hidden states → (B, L, H) one padded row per text, and its (B, L) mask."""
    width = int(lengths.max())
    mask = torch.arange(width, device=hidden.device)[None, :] < lengths[:, None]  # (B, L)
    out = hidden.new_zeros(len(lengths), width, hidden.shape[-1])
    out[mask] = hidden[0]  # the boolean mask walks (B, L) in row order: the packed order
    return out, mask.long()


def unpackable_reason(model) -> str | None:
    """Why ``model`` cannot run packed (None if it can)."""
    encoder = model.encoder
    if not hasattr(encoder, "model") or getattr(encoder, "pools_itself", False):
        return (f"{type(encoder).__name__} is not a Hugging Face encoder: packing passes position ids and "
                "a 4-D mask")
    strategy = getattr(model.config, "strategy", None) or {}
    if strategy.get("name") == "prefix" and strategy.get("mode", "prompt") == "prompt":
        # The prompt vectors are positions of the row: once per row, their hidden states in deeper
        # layers would mix every text's; packing would need a copy of the prompt per text.
        return "prefix (mode prompt) prepends one prompt per row, shared by all its texts"
    return None


def packed_hidden(encoder, row: PackedRow) -> torch.Tensor:
    """(1, T, H): the Hugging Face encoder's last hidden states over a packed row."""
    implementation = getattr(encoder.model.config, "_attn_implementation", "eager")
    dtype = next(encoder.model.parameters()).dtype
    mask = row.attention_mask(None if implementation == "sdpa" else dtype)
    return encoder.model(input_ids=row.input_ids, attention_mask=mask, position_ids=row.position_ids,
                         token_type_ids=row.token_type_ids).last_hidden_state


def packed_pooled(model, row: PackedRow) -> torch.Tensor:
    """(B, H): each text's pooled vector, as ``TexttuneForSequenceClassification`` pools it padded."""
    reason = unpackable_reason(model)
    if reason is not None:
        raise TexttuneError(f"cannot pack: {reason}")
    hidden, mask = unpack(packed_hidden(model.encoder, row), row.lengths)  # (B, L, H), (B, L)
    return pool(hidden, mask, model.config.pooling)


def packed_logits(model, row: PackedRow) -> torch.Tensor:
    """(B, C): the classifier's logits of each text of a packed row."""
    return model.head(packed_pooled(model, row))
