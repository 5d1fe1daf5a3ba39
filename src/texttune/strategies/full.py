"""``full``: fine-tune every weight of the encoder and the head (the default)."""

from __future__ import annotations

from typing import Literal

from texttune.strategies.registry import StrategyConfig, register


class FullConfig(StrategyConfig):
    name: Literal["full"] = "full"


@register("full", FullConfig)
def apply_full(model, cfg: FullConfig):
    """Every parameter the model built as trainable trains: the whole encoder and the head.

    It does not unfreeze what the model config froze on purpose (``freeze_embedding`` for GloVe).
    """
    return model
