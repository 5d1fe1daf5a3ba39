"""Classification heads: a Linear layer or a small MLP on the pooled vector."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import nn

from texttune.config import Section


class HeadConfig(Section):
    type: Literal["linear", "mlp"] = Field("linear", description="linear, or mlp (one hidden layer).")
    hidden_size: int | None = Field(
        None, gt=0, description="Hidden width of the mlp head; default: the encoder's hidden size."
    )
    activation: Literal["tanh", "gelu", "relu"] = Field("tanh", description="Activation of the mlp head.")
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="Dropout on the pooled vector (and mlp hidden).")


_ACTIVATIONS = {"tanh": nn.Tanh, "gelu": nn.GELU, "relu": nn.ReLU}


def build_head(cfg: HeadConfig, in_features: int, num_labels: int) -> nn.Sequential:
    if cfg.type == "linear":
        return nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(in_features, num_labels))
    hidden = cfg.hidden_size or in_features
    return nn.Sequential(
        nn.Dropout(cfg.dropout),
        nn.Linear(in_features, hidden),
        _ACTIVATIONS[cfg.activation](),
        nn.Dropout(cfg.dropout),
        nn.Linear(hidden, num_labels),
    )
