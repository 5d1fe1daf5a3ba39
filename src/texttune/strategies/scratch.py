"""``scratch``: the same architecture with every weight randomly initialised (no pretrained or GloVe
weights), all training: the baseline that tells what pre-training bought."""

from __future__ import annotations

from typing import Literal

import torch

from texttune.strategies.registry import StrategyConfig, register


class ScratchConfig(StrategyConfig):
    name: Literal["scratch"] = "scratch"


@register("scratch", ScratchConfig)
def apply_scratch(model, cfg: ScratchConfig):
    """Re-initialise the encoder the way its own architecture initialises a new model, then train all."""
    encoder = model.encoder
    inner = getattr(encoder, "model", None)
    with torch.no_grad():
        if inner is not None and hasattr(inner, "_init_weights"):  # a Hugging Face encoder
            # transformers' init functions skip tensors flagged as loaded from a checkpoint.
            for tensor in [*inner.parameters(), *inner.buffers()]:
                if getattr(tensor, "_is_hf_initialized", False):
                    tensor._is_hf_initialized = False
            for module in inner.modules():
                inner._init_weights(module)
        else:
            for module in encoder.modules():
                if module is not encoder and hasattr(module, "reset_parameters"):
                    module.reset_parameters()
            if hasattr(encoder, "_init"):
                encoder._init()  # the encoder's own scheme (embedding std, pad row zero, ...)
    for param in model.parameters():
        param.requires_grad_(True)
    if getattr(model.config, "glove", None) is not None:
        model.config.glove = None  # the GloVe rows are gone: the record must not claim them
    return model
