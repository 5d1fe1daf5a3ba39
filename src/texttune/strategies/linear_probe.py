"""``linear_probe``: the encoder is frozen; only the head trains (the encoder is a feature extractor)."""

from __future__ import annotations

from typing import Literal

from texttune.strategies.registry import StrategyConfig, register
from texttune.strategies.blocks import set_trainable


class LinearProbeConfig(StrategyConfig):
    name: Literal["linear_probe"] = "linear_probe"


@register("linear_probe", LinearProbeConfig)
def apply_linear_probe(model, cfg: LinearProbeConfig):
    """Freeze every encoder weight; the head (linear or MLP, see model.head) trains."""
    set_trainable(model, set())
    return model
