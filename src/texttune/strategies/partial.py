"""``partial``: the last N encoder layers train with the head; optionally embeddings and LayerNorms."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from texttune.errors import TexttuneError
from texttune.strategies.registry import StrategyConfig, register
from texttune.strategies.blocks import embedding_names, encoder_blocks, layer_norm_names, set_trainable


class PartialConfig(StrategyConfig):
    name: Literal["partial"] = "partial"
    num_layers: int = Field(2, ge=0, description="How many of the encoder's last layers train (0: none).")
    train_embeddings: bool = Field(False, description="Also train the input embeddings.")
    train_layer_norms: bool = Field(False, description="Also train every LayerNorm of the encoder.")


@register("partial", PartialConfig)
def apply_partial(model, cfg: PartialConfig):
    """Unfreeze the last ``num_layers`` blocks (see strategies/blocks.py for what a block is)."""
    blocks = encoder_blocks(model.encoder)
    if cfg.num_layers > len(blocks):
        raise TexttuneError(f"strategy.num_layers: {cfg.num_layers} layers asked for, the encoder has "
                            f"{len(blocks)}")
    names = {name for block in blocks[len(blocks) - cfg.num_layers:] for name in block}
    if cfg.train_embeddings:
        names |= set(embedding_names(model.encoder))
    if cfg.train_layer_norms:
        names |= set(layer_norm_names(model.encoder))
    set_trainable(model, names)
    return model
