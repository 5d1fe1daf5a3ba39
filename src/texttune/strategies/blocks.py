"""Where the parts of an encoder are, for strategies that treat parts differently.

Every encoder is seen as: embeddings, then a stack of blocks (layers, in order), plus LayerNorms.
Hugging Face encoders keep their layers in a ``ModuleList`` (``encoder.layer`` in BERT); the
from-scratch Transformer in ``nn.TransformerEncoder.layers``; an RNN's layers are parameter groups of
one module (``weight_ih_l0``, ``weight_hh_l1_reverse``, ...); a CNN's filters are one block working in
parallel; a bag of n-grams has no blocks.
"""

from __future__ import annotations

import re

from torch import nn

from texttune.errors import TexttuneError

_RNN_LAYER = re.compile(r"_l(\d+)(_reverse)?$")


def encoder_blocks(encoder: nn.Module) -> list[list[str]]:
    """Parameter names (relative to ``encoder``) of each block, first block first."""
    if isinstance(getattr(encoder, "rnn", None), nn.RNNBase):
        layers: dict[int, list[str]] = {}
        for name, _ in encoder.rnn.named_parameters():
            layers.setdefault(int(_RNN_LAYER.search(name).group(1)), []).append(f"rnn.{name}")
        return [layers[i] for i in sorted(layers)]
    if isinstance(getattr(encoder, "convs", None), nn.ModuleList):
        return [[f"convs.{name}" for name, _ in encoder.convs.named_parameters()]]
    stack = _layer_list(encoder)
    if stack is None:
        return []
    prefix, layers_list = stack
    blocks = [[f"{prefix}.{i}.{name}" for name, _ in layer.named_parameters()]
              for i, layer in enumerate(layers_list)]
    # What the stack's owner applies after the layers (the final LayerNorm of a pre-LN Transformer)
    # belongs to the last block: "the last layer trains" must include the norm its output goes through.
    owner = prefix.rsplit(".", 1)[0] if "." in prefix else ""
    owner_module = encoder.get_submodule(owner) if owner else encoder
    stacked = {name for block in blocks for name in block}
    trailing = [f"{owner}.{n}" if owner else n for n, _ in owner_module.named_parameters()]
    if blocks and owner:
        blocks[-1] += [n for n in trailing if n not in stacked]
    return blocks


def _layer_list(encoder: nn.Module) -> tuple[str, nn.ModuleList] | None:
    """The longest ModuleList named ``layer``/``layers`` (the encoder stack, not e.g. conv lists)."""
    found = [(name, module) for name, module in encoder.named_modules()
             if isinstance(module, nn.ModuleList) and name.rsplit(".", 1)[-1] in ("layer", "layers")]
    return max(found, key=lambda item: len(item[1])) if found else None


def embedding_names(encoder: nn.Module) -> list[str]:
    """Parameters of the input embeddings (token, position, token-type; their LayerNorm in BERT)."""
    in_blocks = {name for block in encoder_blocks(encoder) for name in block}
    names = []
    for module_name, module in encoder.named_modules():
        leaf = module_name.rsplit(".", 1)[-1]
        if isinstance(module, (nn.Embedding, nn.EmbeddingBag)) or leaf in ("embeddings", "position", "project"):
            names += [f"{module_name}.{n}" if module_name else n for n, _ in module.named_parameters()]
    return [n for n in dict.fromkeys(names) if n not in in_blocks]


def layer_norm_names(encoder: nn.Module) -> list[str]:
    return [f"{module_name}.{n}" for module_name, module in encoder.named_modules()
            if isinstance(module, nn.LayerNorm) for n, _ in module.named_parameters()]


def set_trainable(model: nn.Module, encoder_names: set[str]) -> None:
    """Exactly these encoder parameters (and every head parameter) train; the rest of the encoder is frozen."""
    for name, param in model.encoder.named_parameters():
        param.requires_grad_(name in encoder_names)
    for param in model.head.parameters():
        param.requires_grad_(True)


def transformer_layers(encoder: nn.Module, strategy: str) -> tuple[nn.Module, list[nn.Module]]:
    """(the module that runs the layer stack, its layers) of an attention encoder, or a clear error."""
    stack = _layer_list(encoder)
    if stack is None:
        kind = type(encoder).__name__
        raise TexttuneError(f"strategy '{strategy}' needs an attention encoder (transformer or pretrained); "
                            f"{kind} has no layer stack")
    prefix, layers = stack
    owner = prefix.rsplit(".", 1)[0] if "." in prefix else ""
    return (encoder.get_submodule(owner) if owner else encoder), list(layers)


def find_in_layer(layer: nn.Module, candidates: tuple[str, ...], what: str, strategy: str) -> tuple[str, nn.Module]:
    """The first of ``candidates`` (relative module names) that exists in ``layer``."""
    for name in candidates:
        try:
            return name, layer.get_submodule(name)
        except AttributeError:
            continue
    raise TexttuneError(f"strategy '{strategy}': no {what} found in {type(layer).__name__} "
                        f"(looked for {', '.join(candidates)})")
