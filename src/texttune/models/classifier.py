"""The one classifier class: an encoder, a pooling rule and a head, as a Hugging Face model.

Being a ``PreTrainedModel`` gives every texttune classifier ``save_pretrained``/``from_pretrained``
(safetensors), ``transformers.pipeline`` support and PEFT compatibility. The encoder is built from the
``ENCODERS`` registry by name: ``hf`` wraps any Hugging Face encoder (built from its config; the
pretrained weights are loaded once by ``models.pretrained``), the from-scratch encoders register
their own builders. ``import texttune`` registers the architecture with the Auto classes, so a saved
model loads with ``AutoModelForSequenceClassification`` and ``pipeline("text-classification", ...)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

from texttune.models.heads import HeadConfig, build_head
from texttune.models.pooling import pool
from texttune.registry import Registry

# name -> builder(encoder_config: dict) -> nn.Module with .hidden_size, .embedding and
# forward(input_ids, attention_mask, token_type_ids=None) -> (B, T, H) hidden states, or (B, H) for
# encoders with ``pools_itself = True``.
ENCODERS: Registry[Callable[[dict[str, Any]], nn.Module]] = Registry("encoder")


class HFEncoder(nn.Module):
    """Any Hugging Face encoder (BERT, MiniLM, RoBERTa, ...), returning its last hidden states."""

    def __init__(self, encoder_config: dict[str, Any]) -> None:
        super().__init__()
        config = AutoConfig.for_model(**encoder_config)
        self.model = AutoModel.from_config(config, add_pooling_layer=False) if config.model_type == "bert" \
            else AutoModel.from_config(config)
        self.hidden_size = config.hidden_size

    def forward(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        kwargs = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        return self.model(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state


ENCODERS.add("hf", HFEncoder)


def resolve_config(encoder_config: dict[str, Any], defaults: dict[str, Any], name: str) -> dict[str, Any]:
    """Defaults filled in; an unknown or missing key fails here, naming it, not deep in a forward pass."""
    from texttune.errors import TexttuneError

    unknown = sorted(set(encoder_config) - set(defaults) - {"vocab_size", "pad_id"})
    missing = sorted({"vocab_size", "pad_id"} - set(encoder_config))
    if unknown or missing:
        problem = f"unknown keys {unknown}" if unknown else f"missing keys {missing}"
        known = ", ".join(["vocab_size", "pad_id", *defaults])
        raise TexttuneError(f"{name} encoder config: {problem}; known: {known}")
    return {**defaults, **encoder_config}


class TexttuneConfig(PretrainedConfig):
    model_type = "texttune"

    def __init__(
        self,
        encoder_type: str = "hf",
        encoder: dict[str, Any] | None = None,
        pooling: str = "cls",
        head: dict[str, Any] | None = None,
        strategy: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self.encoder_type = encoder_type
        # The strategy that added modules to the encoder (adapters, LoRA, prefixes), rebuilt on load.
        self.strategy = dict(strategy) if strategy else None
        self.encoder = dict(encoder or {})
        self.pooling = pooling
        self.head = dict(head or {})
        super().__init__(**kwargs)


class TexttuneForSequenceClassification(PreTrainedModel):
    config_class = TexttuneConfig
    base_model_prefix = "texttune"
    main_input_name = "input_ids"
    _supports_sdpa = True

    def __init__(self, config: TexttuneConfig) -> None:
        super().__init__(config)
        self.encoder = ENCODERS.get(config.encoder_type)(config.encoder)
        self.head = build_head(HeadConfig(**config.head), self.encoder.hidden_size, config.num_labels)
        if config.strategy:
            from texttune.strategies import restore_structure

            restore_structure(self, config.strategy)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        # Only the head is ours to initialise; the encoder's weights come from its checkpoint, or,
        # for a from-scratch encoder, from that encoder's own initialisation.
        if isinstance(module, nn.Linear) and any(module is m for m in self.head.modules()):
            nn.init.normal_(module.weight, std=0.02)
            nn.init.zeros_(module.bias)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **_: Any,
    ) -> SequenceClassifierOutput:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        hidden = self.encoder(input_ids, attention_mask, token_type_ids)  # (B, T, H) or (B, H)
        if getattr(self.encoder, "pools_itself", False):
            pooled = hidden  # CNN max-over-time, bag-of-n-grams mean, RNN final state
        else:
            pooled = pool(hidden, attention_mask, self.config.pooling)  # (B, H)
        logits = self.head(pooled)  # (B, C)
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits.float(), labels)
        return SequenceClassifierOutput(loss=loss, logits=logits)


AutoConfig.register("texttune", TexttuneConfig, exist_ok=True)
AutoModelForSequenceClassification.register(TexttuneConfig, TexttuneForSequenceClassification, exist_ok=True)
