"""Model builders by config name: ``build_model(cfg.model, label_names) -> (model, tokenizer)``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from texttune.registry import Registry

MODEL_BUILDERS: Registry[Callable[..., tuple[Any, Any]]] = Registry("model")
MODEL_CONFIGS: Registry[type] = Registry("model")  # the classes of the config's ``model`` union


def build_model(model_cfg: Any, label_names: list[str], train_texts: Any = None) -> tuple[Any, Any]:
    """The classifier and its tokenizer for a model config (``train_texts`` lets from-scratch
    models build their vocabulary from the training split only)."""
    builder = MODEL_BUILDERS.get(model_cfg.name)
    if train_texts is not None and getattr(builder, "needs_train_texts", False):
        return builder(model_cfg, label_names, train_texts=train_texts)
    return builder(model_cfg, label_names)
