"""``adapters``: bottleneck adapters in every layer of a frozen encoder (Houlsby et al., 2019).

An adapter is down-projection → non-linearity → up-projection with a residual connection. The
up-projection starts at zero, so before training the adapted encoder computes exactly what the
pretrained one did. ``houlsby`` puts one after the attention output projection and one after the
feed-forward output projection of each layer (before the residual add and LayerNorm); ``pfeiffer``
only the one after the feed-forward block (Pfeiffer et al., 2021), half the parameters.

Written here because PEFT has no bottleneck adapters. Each adapter is a child module of the
projection it follows (``...attention.output.dense.adapter.down.weight``) and runs from a forward
hook on that projection: the encoder's own code is untouched, and the encoder can be any Hugging
Face BERT-family model or texttune's from-scratch Transformer.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import nn

from texttune.errors import TexttuneError
from texttune.strategies.registry import StrategyConfig, freeze_encoder_except, register
from texttune.strategies.blocks import find_in_layer, layer_norm_names, transformer_layers

# Where a layer's attention and feed-forward blocks end: BERT/RoBERTa/ELECTRA/MiniLM, DistilBERT,
# texttune's Transformer (nn.MultiheadAttention returns a tuple; its out_proj is not called as a module).
ATTENTION_OUTPUT = ("attention.output.dense", "attention.out_lin", "self_attn")
FFN_OUTPUT = ("output.dense", "ffn.lin2", "linear2")
ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU, "tanh": nn.Tanh}


class AdaptersConfig(StrategyConfig):
    name: Literal["adapters"] = "adapters"
    bottleneck: int = Field(64, gt=0, description="Width of each adapter's bottleneck.")
    placement: Literal["houlsby", "pfeiffer"] = Field(
        "houlsby", description="houlsby: after attention and after feed-forward; pfeiffer: after feed-forward only."
    )
    activation: Literal["gelu", "relu", "tanh"] = Field("gelu", description="Non-linearity inside the adapter.")
    train_layer_norms: bool = Field(True, description="Also train the encoder's LayerNorms (as Houlsby et al.).")
    embeddings: bool = Field(
        False,
        description="Also an adapter on the embedding output, before the first layer: it re-maps token "
        "vectors for a new domain (as MAD-X's invertible adapters), which layer adapters cannot.",
    )


class Adapter(nn.Module):
    """x + up(act(down(x))); identity at initialisation."""

    def __init__(self, hidden_size: int, bottleneck: int, activation: str) -> None:
        super().__init__()
        self.down = nn.Linear(hidden_size, bottleneck)
        self.activation = ACTIVATIONS[activation]()
        self.up = nn.Linear(bottleneck, hidden_size)
        nn.init.normal_(self.down.weight, std=0.02)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x):  # (B, T, H) -> (B, T, H)
        return x + self.up(self.activation(self.down(x)))


def _run_adapter(module: nn.Module, args, output):
    if isinstance(output, tuple):  # nn.MultiheadAttention: (attention output, weights)
        return (module.adapter(output[0]), *output[1:])
    return module.adapter(output)


def inject_adapters(model, cfg: AdaptersConfig):
    _, layers = transformer_layers(model.encoder, "adapters")
    where = (FFN_OUTPUT,) if cfg.placement == "pfeiffer" else (ATTENTION_OUTPUT, FFN_OUTPUT)
    if cfg.embeddings:
        _add_adapter(_embedding_output(model.encoder), model.encoder.hidden_size, cfg)
    for layer in layers:
        for candidates in where:
            _, module = find_in_layer(layer, candidates, "attention/feed-forward output", "adapters")
            _add_adapter(module, model.encoder.hidden_size, cfg)
    return model


def _add_adapter(module: nn.Module, hidden_size: int, cfg: AdaptersConfig) -> None:
    module.add_module("adapter", Adapter(hidden_size, cfg.bottleneck, cfg.activation))
    module.register_forward_hook(_run_adapter)


def _embedding_output(encoder: nn.Module) -> nn.Module:
    """The module whose output enters the first layer: BERT's ``embeddings`` (after its LayerNorm), or
    the from-scratch Transformer's projection to d_model."""
    inner = getattr(encoder, "model", None)
    if inner is not None and hasattr(inner, "embeddings"):
        return inner.embeddings
    project = getattr(encoder, "project", None)
    if isinstance(project, nn.Linear):
        return project
    raise TexttuneError("strategy.embeddings: this encoder has no embedding output to adapt "
                        "(a from-scratch Transformer needs embedding_dim different from d_model)")


@register("adapters", AdaptersConfig, inject=inject_adapters)
def apply_adapters(model, cfg: AdaptersConfig):
    """Insert adapters; only they (with LayerNorms if asked) and the head train."""
    inject_adapters(model, cfg)
    norms = set(layer_norm_names(model.encoder)) if cfg.train_layer_norms else set()
    freeze_encoder_except(model, lambda name: ".adapter." in name or name in norms)
    return model
