"""``full``: fine-tune every weight of the encoder and the head (the default)."""

from __future__ import annotations

from typing import Literal

from texttune.strategies import StrategyConfig, register


class FullConfig(StrategyConfig):
    name: Literal["full"] = "full"


@register("full", FullConfig)
def apply_full(model, cfg: FullConfig):
    """Every parameter trains."""
    for param in model.parameters():
        param.requires_grad_(True)
    return model
