"""Loading a saved classifier, whichever way it was saved (whole, or trained tensors on a named base).

Apart from ``saving.py`` (the low-level, file-by-file guards every reader uses) because rebuilding a
model needs every encoder and strategy registered: this module imports the ``models`` and
``strategies`` packages; nothing they hold imports it back.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

import texttune.models  # noqa: F401  (registers the architecture and the encoders)
import texttune.strategies  # noqa: F401  (registers the strategies, whose modules a model re-creates)
from texttune.errors import TexttuneError
from texttune.models.saving import (
    TRAINED_WEIGHTS, check_model_folder, load_pretrained, read_json_object, reading, weights_fingerprint,
)


def load_classifier(folder: str | Path):
    """A saved classifier, whichever way it was saved; raises TexttuneError naming what is wrong."""
    from transformers import AutoModelForSequenceClassification


    folder = Path(folder)
    config = load_classifier_config(folder)
    if not (folder / TRAINED_WEIGHTS).is_file():
        return load_pretrained(AutoModelForSequenceClassification, folder, config=config, strict=True).eval()
    check_model_folder(folder)
    with reading(folder, "cannot load the model"):
        model = build_on_base(config, folder)
    with reading(folder / TRAINED_WEIGHTS, "does not fit the model"):
        result = model.load_state_dict(load_file(str(folder / TRAINED_WEIGHTS)), strict=False)
    if result.unexpected_keys:
        raise TexttuneError(f"{folder / TRAINED_WEIGHTS}: tensors the model does not have: "
                            f"{result.unexpected_keys[:5]}")
    return model.eval()


def load_classifier_config(folder: Path):
    """``config.json`` of a saved classifier, checked where a wrong value would fail only later
    (pooling and labels are read at prediction time, not when the model is built)."""
    from transformers import AutoConfig

    from texttune.models.heads import HeadConfig
    from texttune.models.pooling import Pooling

    path = folder / "config.json"
    raw = read_json_object(path)
    # transformers before 5.x's stricter configs derives num_labels from id2label and lets a wrong value
    # pass; checked here so every supported release refuses the same file.
    count = raw.get("num_labels")
    if count is not None and (not isinstance(count, int) or isinstance(count, bool) or count < 1):
        raise TexttuneError(f"{path}: not a valid model config (num_labels {count!r} is not a count)")
    with reading(path, "not a valid model config"):
        config = AutoConfig.from_pretrained(folder)
        HeadConfig(**config.head)
        labels = [config.id2label[i] for i in range(config.num_labels)]
    if config.pooling not in Pooling.__args__ or not all(isinstance(label, str) for label in labels):
        raise TexttuneError(f"{path}: not a valid model config (pooling '{config.pooling}', labels {labels})")
    return config


def build_on_base(config, folder: Path):
    """The architecture of ``config`` with the base's weights, then the strategy's modules."""
    from texttune.models.classifier import TexttuneForSequenceClassification
    from texttune.strategies import restore_structure

    base = config.texttune_base
    plain = copy.deepcopy(config)
    plain.strategy = None
    model = TexttuneForSequenceClassification(plain)
    if base["kind"] == "pretrained":
        from texttune.models.pretrained import load_encoder
        from texttune.resources import resolve_model_path

        try:
            source = resolve_model_path(base["path"])
        except TexttuneError:
            source = base["path"]  # gone: _check_fingerprint says so, naming this run
        _check_fingerprint(folder, base, source)
        model.encoder.model = load_encoder(base["path"], base.get("attn_implementation", "sdpa"))
    elif base["kind"] == "run":
        source_folder = Path(base["path"])
        _check_fingerprint(folder, base, source_folder)
        model.encoder.load_state_dict(plain_encoder_state(load_classifier(source_folder), source_folder))
    else:
        raise TexttuneError(f"{folder}/config.json: unknown texttune_base kind '{base['kind']}'")
    if config.strategy:
        restore_structure(model, config.strategy)
    model.config.strategy = config.strategy
    return model


def _check_fingerprint(folder: Path, base: dict[str, Any], source: str | Path) -> None:
    if not Path(str(source)).exists():
        raise TexttuneError(f"{folder}: its base model {base['path']} is missing; this run saved only the "
                            "weights it trained and needs the base it started from")
    found = weights_fingerprint(source)
    if found != base.get("sha256"):
        raise TexttuneError(f"{folder}: its base model {base['path']} has changed since this run was trained "
                            "(weight files differ); restore that base to load this run")


def plain_encoder_state(model, where: Path | str) -> dict[str, torch.Tensor]:
    """The encoder's weights without strategy modules: LoRA is merged; adapters and prefixes cannot be."""
    strategy = getattr(model.config, "strategy", None)
    if strategy:
        if strategy.get("name") != "lora":
            raise TexttuneError(
                f"{where}: trained with strategy '{strategy.get('name')}', whose modules cannot be folded into "
                "the encoder's weights; start from a run trained with full, partial, linear_probe, bitfit, "
                "scratch or lora")
        from texttune.strategies.lora import merge_lora

        merge_lora(model)
    return model.encoder.state_dict()
