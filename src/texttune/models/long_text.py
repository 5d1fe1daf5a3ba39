"""Long documents (``model.long_text``): truncate them, or read them as overlapping windows.

With ``mode: windows`` a text longer than ``model.max_length`` becomes windows of ``max_length``
tokens (special tokens included) that share ``stride`` tokens with the previous one
(``data.tokenize.encode_frame``); the model reads every window and the document's logits are the
windows' logits pooled here (mean, max, or the first window's). Training computes the loss on the
pooled logits, evaluation and prediction score one row per document. The setting is part of the
model config (saved in the run's config.yaml) and written into the saved model's config.json
(``texttune_long_text``), so a loaded model windows as it was trained.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field

from texttune.config import Section

MODEL_CONFIG_KEY = "texttune_long_text"  # the setting inside a saved model's config.json


class LongTextConfig(Section):
    mode: Literal["truncate", "windows"] = Field(
        "truncate", description="truncate: tokens past model.max_length are dropped; windows: the whole text is "
        "read as overlapping windows of model.max_length tokens whose logits are pooled.",
    )
    stride: int = Field(
        64, ge=0, description="windows: tokens each window shares with the previous one; less than "
        "model.max_length minus the tokenizer's special tokens.",
    )
    pool: Literal["mean", "max", "first"] = Field(
        "mean", description="windows: how the windows' logits become the document's: their mean, their "
        "element-wise max, or the first window's (truncation at training cost of all windows).",
    )
    max_windows: int | None = Field(
        None, gt=0, description="windows: keep at most this many windows per document (the first ones), at "
        "training, evaluation and prediction alike; unset: all of them. Bounds a batch's memory.",
    )

    @property
    def windows(self) -> bool:
        return self.mode == "windows"


def check_stride(long_text: LongTextConfig, max_length: int) -> LongTextConfig:
    """The config-time check (the tokenizer's special tokens are checked when tokenizing)."""
    if long_text.windows and long_text.stride >= max_length:
        raise ValueError(f"stride {long_text.stride} must be less than model.max_length {max_length}: each "
                         "window of max_length tokens shares stride tokens with the previous one")
    return long_text


def windows_of(model_config: Any) -> LongTextConfig | None:
    """The windows setting of a model config (``model`` section, or a saved model's config.json), or
    None for truncation (and for models without the setting: classic baselines, older runs)."""
    value = getattr(model_config, "long_text", None)
    if value is None:
        value = getattr(model_config, MODEL_CONFIG_KEY, None)
    if isinstance(value, dict):
        value = LongTextConfig(**value)
    return value if value is not None and value.windows else None


def pool_windows(logits: torch.Tensor, counts: torch.Tensor, how: str) -> torch.Tensor:
    """(W, C) window logits → (D, C) document logits; ``counts`` (D,) the windows of each document,
    in order (document d owns the next counts[d] rows)."""
    counts = counts.to(logits.device)
    docs = torch.arange(len(counts), device=logits.device)
    owner = torch.repeat_interleave(docs, counts, output_size=logits.shape[0])  # (W,)
    if how == "first":
        return logits[torch.cumsum(counts, 0) - counts]
    if how == "mean":
        total = logits.new_zeros((len(counts), logits.shape[1])).index_add_(0, owner, logits)
        return total / counts.unsqueeze(1).to(logits.dtype)
    if how == "max":
        out = logits.new_full((len(counts), logits.shape[1]), float("-inf"))
        return out.scatter_reduce(0, owner.unsqueeze(1).expand_as(logits), logits, "amax", include_self=False)
    raise ValueError(f"unknown window pooling '{how}': mean, max or first")


def document_logits(model, batch: dict[str, torch.Tensor], how: str = "mean") -> torch.Tensor:
    """The model's logits for a batch, one row per document: a windowed batch (its ``windows`` key,
    from ``data.tokenize.collate``) has its windows' logits pooled."""
    counts = batch.pop("windows", None)
    logits = model(**batch).logits
    return logits if counts is None else pool_windows(logits, counts, how)


def record_windows(model_config: Any, long_text: LongTextConfig | None) -> None:
    """Write the setting into the model's config (config.json), or remove one a source run left
    (``init_from``), so a loaded model windows exactly when the run did."""
    if long_text is not None:
        setattr(model_config, MODEL_CONFIG_KEY, long_text.model_dump())
    elif hasattr(model_config, MODEL_CONFIG_KEY):
        delattr(model_config, MODEL_CONFIG_KEY)
