"""``bitfit``: only the encoder's bias terms and the head train (Ben Zaken et al., 2022)."""

from __future__ import annotations

from typing import Literal

from texttune.strategies.registry import StrategyConfig, register
from texttune.strategies.blocks import set_trainable


class BitFitConfig(StrategyConfig):
    name: Literal["bitfit"] = "bitfit"


@register("bitfit", BitFitConfig)
def apply_bitfit(model, cfg: BitFitConfig):
    """Every bias of the encoder trains, with the head."""
    names = {name for name, _ in model.encoder.named_parameters() if _is_bias(name.rsplit(".", 1)[-1])}
    set_trainable(model, names)
    return model


def _is_bias(leaf: str) -> bool:
    # ``bias`` (Linear, LayerNorm, Conv), ``bias_ih_l0`` (RNNs), ``in_proj_bias`` (MultiheadAttention)
    return leaf == "bias" or leaf.startswith("bias_") or leaf.endswith("_bias")
