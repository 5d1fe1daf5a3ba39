"""Saving and loading classifiers: the whole model, or only what a run trained plus its base.

A run whose strategy froze part of the encoder (linear_probe, partial, bitfit, adapters, lora,
prefix) and whose frozen weights can be re-created exactly — from a pretrained checkpoint, or from
the run it started from (``init_from``) — saves only its trained tensors in
``trained_weights.safetensors`` (as PEFT saves adapters); ``config.json`` names the base
(``texttune_base``: kind, path, and the SHA-256 of its weight files, checked on load). Every other
run saves the whole model (``model.safetensors``), which also loads with transformers' Auto classes.
``texttune export`` writes any run as a whole model (LoRA merged into its base weights).
"""

from __future__ import annotations

import copy
import hashlib
import logging
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from texttune.errors import TexttuneError

TRAINED_WEIGHTS = "trained_weights.safetensors"
log = logging.getLogger("texttune")


def weights_fingerprint(folder: str | Path) -> str | None:
    """SHA-256 over a model folder's weight files (None for a Hub id: nothing local to hash)."""
    folder = Path(folder)
    files = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
    if not files:
        return None
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode())
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 22), b""):
                digest.update(chunk)
    return digest.hexdigest()


def saves_trained_only(model) -> bool:
    """True when the frozen weights come back from a base: a pretrained checkpoint or a source run."""
    base = getattr(model.config, "texttune_base", None)
    return bool(base and base.get("sha256")) and any(not p.requires_grad for p in model.parameters())


def save_classifier(model, tokenizer, folder: Path) -> None:
    """The model (whole, or trained tensors + base reference), its tokenizer and config."""
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(folder)
    if not saves_trained_only(model):
        model.save_pretrained(folder)
        return
    model.config.save_pretrained(folder)
    trained = {name: p.detach().cpu().contiguous() for name, p in model.named_parameters() if p.requires_grad}
    save_file(trained, str(folder / TRAINED_WEIGHTS), metadata={"format": "pt", "texttune": "trained-only"})


def load_classifier(folder: str | Path):
    """A saved classifier, whichever way it was saved; raises TexttuneError naming what is wrong."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    import texttune.plugins  # noqa: F401  (registers the architecture, encoders and strategies)

    folder = Path(folder)
    try:
        if not (folder / TRAINED_WEIGHTS).is_file():
            return AutoModelForSequenceClassification.from_pretrained(folder)
        config = AutoConfig.from_pretrained(folder)
        model = build_on_base(config, folder)
        state = load_file(str(folder / TRAINED_WEIGHTS))
    except (OSError, ValueError) as err:
        raise TexttuneError(f"{folder}: cannot load the model ({str(err).splitlines()[0]})") from None
    result = model.load_state_dict(state, strict=False)
    if result.unexpected_keys:
        raise TexttuneError(f"{folder / TRAINED_WEIGHTS}: tensors the model does not have: "
                            f"{result.unexpected_keys[:5]}")
    return model.eval()


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


def export_classifier(run: str | Path, out: str | Path) -> Path:
    """Write a run's model as a whole Hugging Face model folder (LoRA merged); never overwrites."""
    from transformers import AutoTokenizer

    from texttune.evaluation.predict import model_dir_of

    folder, out = model_dir_of(run), Path(out)
    if out.exists():
        raise TexttuneError(f"{out}: already exists; export writes a new folder")
    model = load_classifier(folder)
    strategy = getattr(model.config, "strategy", None)
    if strategy and strategy.get("name") == "lora":
        from texttune.strategies.lora import merge_lora

        merge_lora(model)
    model.config.texttune_base = None  # a whole model stands alone
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    AutoTokenizer.from_pretrained(folder).save_pretrained(tmp)
    tmp.rename(out)
    return out
