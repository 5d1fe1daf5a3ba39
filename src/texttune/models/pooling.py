"""Pooling a sequence of hidden states into one vector, always ignoring padding."""

from __future__ import annotations

from typing import Literal

import torch

Pooling = Literal["cls", "mean", "max"]


def pool(hidden: torch.Tensor, mask: torch.Tensor, how: Pooling) -> torch.Tensor:
    """(B, T, H) hidden states + (B, T) mask of real tokens → (B, H).

    ``mean`` and ``max`` look at real tokens only: a notebook bug this replaces averaged padding too,
    so a sentence's vector changed with the length of the longest sentence in its batch.
    """
    if how == "cls":
        return hidden[:, 0]
    mask = mask.to(hidden.dtype).unsqueeze(-1)  # (B, T, 1)
    if how == "mean":
        summed = (hidden * mask).sum(dim=1)  # (B, H)
        return summed / mask.sum(dim=1).clamp(min=1.0)
    if how == "max":
        filled = hidden.masked_fill(mask == 0, torch.finfo(hidden.dtype).min)
        pooled = filled.max(dim=1).values  # (B, H)
        empty = mask.sum(dim=1) == 0  # (B, 1): a text with no real token pools to zeros, not -3e38
        return pooled.masked_fill(empty, 0.0)
    raise ValueError(f"unknown pooling '{how}'")
