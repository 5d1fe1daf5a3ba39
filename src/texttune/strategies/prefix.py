"""``prefix``: trainable vectors in front of a frozen encoder's sequence; only they and the head train.

Two modes:

- ``prompt`` — the notebooks' method (soft prompts, as Lester et al., 2021, at the embedding output):
  ``prefix_length`` vectors are put before the embedding output of every text, the attention mask is
  extended to cover them, and they are removed again from the encoder's output, so pooling (cls,
  mean) sees the text's own positions. ``prefix_length: null`` adds none: only the head trains, the
  notebooks' control.
- ``deep`` — P-tuning v2 / prefix tuning (Li & Liang, 2021; Liu et al., 2022): every attention layer
  gets its own trainable key and value vectors that every token can attend to.

Written here with forward hooks rather than with PEFT: PEFT's prompt learning wraps the whole model
and feeds prefixes through the key/value cache, which encoder models handle differently from one
transformers version to the next. The hooks work on the layer stack and attention modules of any
BERT-family encoder of transformers 5 and of texttune's Transformer.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn

from texttune.compat import attention_cache_keyword
from texttune.errors import TexttuneError
from texttune.strategies.registry import StrategyConfig, freeze_encoder_except, register
from texttune.strategies.blocks import find_in_layer, transformer_layers

SELF_ATTENTION = ("attention.self", "self_attn")


class PrefixConfig(StrategyConfig):
    name: Literal["prefix"] = "prefix"
    mode: Literal["prompt", "deep"] = Field(
        "prompt", description="prompt: vectors before the embedding output; deep: key/value prefixes in every layer."
    )
    prefix_length: int | None = Field(
        20, gt=0, description="Number of prefix vectors; null adds none (only the head trains)."
    )
    init: Literal["vocab", "random"] = Field(
        "vocab", description="vocab: start from the encoder's own vectors of random vocabulary words; random: N(0, 0.02)."
    )


# --------------------------------------------------------------------------- masks


def _attend_value(mask: torch.Tensor) -> Any:
    return True if mask.dtype == torch.bool else 0.0  # boolean "may attend" or additive 0


def _extend_key_mask(mask: torch.Tensor | None, p: int, pad_is_true: bool = False) -> torch.Tensor | None:
    """Prepend ``p`` attendable key positions to a (B, T) or (B, 1, Tq, T) mask."""
    if mask is None:
        return None
    value = (False if pad_is_true else True) if mask.dtype == torch.bool else 0.0
    if mask.dim() == 2 and not pad_is_true and mask.dtype != torch.bool:
        value = 1  # Hugging Face 2-D masks: 1 = real token
    return nn.functional.pad(mask, (p, 0), value=value)


def _extend_square_mask(mask: torch.Tensor | None, p: int) -> torch.Tensor | None:
    """(B, 1, Tq, Tk) → (B, 1, p+Tq, p+Tk): prefix keys attendable; prefix queries see what the first row sees."""
    if mask is None:
        return None
    mask = nn.functional.pad(mask, (p, 0), value=_attend_value(mask))
    if mask.shape[-2] > 1:
        mask = torch.cat([mask[..., :1, :].expand(*mask.shape[:-2], p, mask.shape[-1]), mask], dim=-2)
    return mask


# --------------------------------------------------------------------------- prompt mode


class Prompt(nn.Module):
    def __init__(self, length: int, hidden_size: int) -> None:
        super().__init__()
        self.vectors = nn.Parameter(torch.empty(length, hidden_size))  # (P, H)


def _prepend_prompt(stack: nn.Module, args: tuple, kwargs: dict[str, Any]):
    hidden = args[0] if args else kwargs.pop("hidden_states")  # (B, T, H)
    p = stack.prompt.vectors.shape[0]
    prompt = stack.prompt.vectors.to(hidden.dtype).unsqueeze(0).expand(hidden.shape[0], -1, -1)  # (B, P, H)
    hidden = torch.cat([prompt, hidden], dim=1)  # (B, P+T, H)
    if "src_key_padding_mask" in kwargs:  # nn.TransformerEncoder: (B, T), True = padding
        kwargs["src_key_padding_mask"] = _extend_key_mask(kwargs["src_key_padding_mask"], p, pad_is_true=True)
    if kwargs.get("attention_mask") is not None:  # Hugging Face encoder stack: (B, 1, T, T)
        kwargs["attention_mask"] = _extend_square_mask(kwargs["attention_mask"], p)
    return (hidden, *args[1:]), kwargs


def _strip_prompt(stack: nn.Module, args, kwargs, output):
    p = stack.prompt.vectors.shape[0]
    if isinstance(output, torch.Tensor):
        return output[:, p:]
    if hasattr(output, "last_hidden_state"):
        output.last_hidden_state = output.last_hidden_state[:, p:]
        return output
    return (output[0][:, p:], *output[1:])


# --------------------------------------------------------------------------- deep mode


class LayerPrefix(nn.Module):
    def __init__(self, length: int, hidden_size: int) -> None:
        super().__init__()
        self.keys = nn.Parameter(torch.empty(length, hidden_size))  # (P, H)
        self.values = nn.Parameter(torch.empty(length, hidden_size))  # (P, H)


class _PrefixKeyValues:
    """Stands in for a key/value cache: Hugging Face attention calls ``update`` with the layer's keys
    and values (B, heads, T, d) and attends over what it returns. Nothing is stored."""

    def __init__(self, prefix: LayerPrefix, heads: int) -> None:
        self.prefix, self.heads = prefix, heads

    def update(self, key, value, layer_idx=None, *args, **kwargs):
        def heads_first(x):  # (P, H) -> (B, heads, P, d)
            x = x.to(key.dtype).view(1, x.shape[0], self.heads, -1).transpose(1, 2)
            return x.expand(key.shape[0], -1, -1, -1)

        return (torch.cat([heads_first(self.prefix.keys), key], dim=2),
                torch.cat([heads_first(self.prefix.values), value], dim=2))


def _hf_deep_prefix(module: nn.Module, args: tuple, kwargs: dict[str, Any]):
    heads = module.num_attention_heads if hasattr(module, "num_attention_heads") else module.config.num_attention_heads
    kwargs[module.prefix_cache_keyword] = _PrefixKeyValues(module.prefix, heads)
    if kwargs.get("attention_mask") is not None:  # (B, 1, Tq, Tk): the prefix keys are always visible
        kwargs["attention_mask"] = _extend_key_mask(kwargs["attention_mask"], module.prefix.keys.shape[0])
    return args, kwargs


def _mha_deep_prefix(module: nn.Module, args: tuple, kwargs: dict[str, Any]):
    # nn.MultiheadAttention(query, key, value, key_padding_mask=...): the prefixes are key/value
    # *inputs* of the layer (its in-projection applies to them as to every token).
    query, key, value = args[:3]
    b = query.shape[0]
    keys = module.prefix.keys.to(key.dtype).unsqueeze(0).expand(b, -1, -1)  # (B, P, H)
    values = module.prefix.values.to(value.dtype).unsqueeze(0).expand(b, -1, -1)
    kwargs["key_padding_mask"] = _extend_key_mask(kwargs.get("key_padding_mask"), keys.shape[1], pad_is_true=True)
    return (query, torch.cat([keys, key], dim=1), torch.cat([values, value], dim=1), *args[3:]), kwargs


# --------------------------------------------------------------------------- inject / apply


def inject_prefix(model, cfg: PrefixConfig):
    if cfg.prefix_length is None:
        return model
    stack, layers = transformer_layers(model.encoder, "prefix")
    hidden, p = model.encoder.hidden_size, cfg.prefix_length
    if cfg.mode == "prompt":
        stack.add_module("prompt", Prompt(p, hidden))
        stack.register_forward_pre_hook(_prepend_prompt, with_kwargs=True)
        stack.register_forward_hook(_strip_prompt, with_kwargs=True)
        return model
    for layer in layers:
        _, attention = find_in_layer(layer, SELF_ATTENTION, "self-attention", "prefix")
        attention.add_module("prefix", LayerPrefix(p, hidden))
        if isinstance(attention, nn.MultiheadAttention):
            attention.register_forward_pre_hook(_mha_deep_prefix, with_kwargs=True)
        elif (keyword := attention_cache_keyword(attention)) is not None:
            attention.prefix_cache_keyword = keyword
            attention.register_forward_pre_hook(_hf_deep_prefix, with_kwargs=True)
        else:
            raise TexttuneError(f"strategy 'prefix' (mode deep): {type(attention).__name__} takes no key/value "
                                "prefixes; use mode: prompt")
    return model


@register("prefix", PrefixConfig, inject=inject_prefix)
def apply_prefix(model, cfg: PrefixConfig):
    """Add the prefixes and initialise them; only they and the head train."""
    inject_prefix(model, cfg)
    if cfg.prefix_length is not None:
        _initialise(model, cfg)
    freeze_encoder_except(model, lambda name: ".prompt." in name or ".prefix." in name)
    return model


def _initialise(model, cfg: PrefixConfig) -> None:
    prompts = [m for m in model.encoder.modules() if isinstance(m, (Prompt, LayerPrefix))]
    if cfg.init == "random":
        for module in prompts:
            for param in module.parameters():
                nn.init.normal_(param, std=0.02)
        return
    with torch.no_grad():
        words = _embedded_words(model.encoder, cfg.prefix_length)  # (P, H)
        for name, module in model.encoder.named_modules():
            if isinstance(module, Prompt):
                module.vectors.copy_(words)
            elif isinstance(module, LayerPrefix):
                owner = model.encoder.get_submodule(name.rsplit(".", 1)[0])
                if isinstance(owner, nn.MultiheadAttention):  # prefixes are key/value inputs
                    module.keys.copy_(words)
                    module.values.copy_(words)
                else:  # prefixes are keys/values after the projections
                    module.keys.copy_(owner.key(words))
                    module.values.copy_(owner.value(words))


def _embedded_words(encoder: nn.Module, count: int) -> torch.Tensor:
    """What the layer stack receives for ``count`` random vocabulary words (skipping the first
    thousand ids, which hold special and unused tokens in BERT vocabularies)."""
    inner = getattr(encoder, "model", None)
    if inner is not None and hasattr(inner, "embeddings"):
        vocab = inner.get_input_embeddings().num_embeddings
        ids = torch.randint(min(1000, vocab // 2), vocab, (1, count))
        return inner.embeddings(input_ids=ids)[0]  # (P, H)
    vocab = encoder.embedding.num_embeddings
    ids = torch.randint(min(4, vocab - 1), vocab, (count,))
    return encoder.project(encoder.embedding(ids)) * getattr(encoder, "scale", 1.0)  # (P, H)
