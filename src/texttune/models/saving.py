"""Saving and loading classifiers: the whole model, or only what a run trained plus its base.

A run whose strategy froze part of the encoder (linear_probe, partial, bitfit, adapters, lora,
prefix) and whose frozen weights can be re-created exactly — from a pretrained checkpoint, or from
the run it started from (``init_from``) — saves only its trained tensors in
``trained_weights.safetensors`` (as PEFT saves adapters); ``config.json`` names the base
(``texttune_base``: kind, path, and the SHA-256 of its weight files, checked on load). Every other
run saves the whole model (``model.safetensors``), which also loads with transformers' Auto classes.
``texttune export`` writes any run as a whole model (LoRA merged into its base weights).

Every model, tokenizer and checkpoint texttune reads goes through ``reading`` and, for Hugging Face
folders, ``load_pretrained`` / ``load_tokenizer_from``: safetensors only (a pickle can run code when
loaded, and transformers falls back to ``pytorch_model.bin``), and a damaged file is one TexttuneError
naming it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from safetensors import safe_open
from safetensors.torch import save_file

from texttune.errors import TexttuneError

TRAINED_WEIGHTS = "trained_weights.safetensors"
SAFE_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", TRAINED_WEIGHTS)
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
DAMAGED_SAFETENSORS = "corrupted or truncated safetensors file"
SAFETENSORS_ONLY = "texttune reads safetensors only"
CONVERT_HINT = ("convert them with https://huggingface.co/spaces/safetensors/convert or, if you trust the "
                "file, load it once with transformers and save_pretrained (it writes model.safetensors)")
log = logging.getLogger("texttune")


# --------------------------------------------------------------------------- reading safely


@contextmanager
def reading(path: str | Path, problem: str) -> Iterator[None]:
    """Whatever reading ``path`` raises becomes one TexttuneError that starts with ``path``.

    json, safetensors (``SafetensorError``), tokenizers (a bare ``Exception``), transformers and torch (a
    tensor of the wrong shape) each raise their own types for a damaged or foreign file; the file is at
    fault in every case, so the block is kept to the library calls that read it.
    """
    try:
        yield
    except TexttuneError as err:
        if str(err).startswith(str(path)):
            raise
        raise TexttuneError(f"{path}: {err}") from None
    except Exception as err:  # noqa: BLE001  (see the docstring)
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise TexttuneError(f"{path}: {problem} ({detail})") from None


def read_json_object(path: Path) -> dict[str, Any]:
    with reading(path, "not valid JSON"):
        data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise TexttuneError(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data


def check_safetensors(path: Path) -> None:
    """The header of a safetensors file parses and covers the file: a truncated file fails here."""
    with reading(path, DAMAGED_SAFETENSORS):
        with safe_open(str(path), "pt") as handle:
            handle.keys()


def check_model_folder(folder: Path) -> None:
    """A local model folder reads as safetensors only: its config and weight headers parse, and
    pickled weights (``pytorch_model.bin``), which transformers would fall back to, are refused."""
    if (folder / "config.json").is_file():
        explicit = read_json_object(folder / "config.json").get("transformers_weights")
        if explicit is not None and not str(explicit).endswith((".safetensors", ".safetensors.index.json")):
            raise TexttuneError(f"{folder / 'config.json'}: transformers_weights names {explicit}, not a "
                                f"safetensors file; {SAFETENSORS_ONLY}")
    weights = [folder / name for name in SAFE_WEIGHTS if (folder / name).is_file()]
    if not weights:
        pickles = sorted(p.name for p in folder.iterdir() if p.name.endswith(PICKLE_SUFFIXES))
        if pickles:
            raise TexttuneError(f"{folder}: holds pickled weights only ({', '.join(pickles)}); "
                                f"{SAFETENSORS_ONLY} — {CONVERT_HINT}")
    for path in weights:
        for shard in _shards(path):
            check_safetensors(shard)


def _shards(path: Path) -> list[Path]:
    if not path.name.endswith(".index.json"):
        return [path]
    weight_map = read_json_object(path).get("weight_map")
    if not isinstance(weight_map, dict):
        raise TexttuneError(f"{path}: no weight_map in this index")
    names = sorted({str(name) for name in weight_map.values()})
    pickled = [name for name in names if not name.endswith(".safetensors")]
    if pickled:
        raise TexttuneError(f"{path}: lists pickled shards ({', '.join(pickled)}); {SAFETENSORS_ONLY} — "
                            f"{CONVERT_HINT}")
    return [path.parent / name for name in names]


def load_pretrained(auto_class, source: str | Path, name: str | Path | None = None, strict: bool = False,
                    **kwargs: Any):
    """``auto_class.from_pretrained(source)`` reading safetensors only, from a folder or a Hub id (where
    ``use_safetensors=True`` refuses a pickle-only repository); ``strict``: every weight must be in the
    files (a texttune model saved whole), not initialised at random. Errors start with ``name``."""
    name = name if name is not None else source
    local = Path(str(source)).is_dir()
    if local:
        check_model_folder(Path(str(source)))
    with reading(name, "cannot load the model"):
        try:
            model, info = auto_class.from_pretrained(str(source), use_safetensors=True,
                                                     output_loading_info=True, **kwargs)
        except OSError as err:
            if not local and "cannot be loaded with `safetensors`" in str(err):  # transformers' words
                raise TexttuneError(f"{name}: this repository holds no safetensors weights; "
                                    f"{SAFETENSORS_ONLY} — {CONVERT_HINT}") from None
            raise
    missing = [*sorted(info.get("missing_keys") or []), *sorted(map(str, info.get("mismatched_keys") or []))]
    if strict and missing:
        raise TexttuneError(f"{name}: its weights do not fit its config.json (missing or mismatched: "
                            f"{missing[:5]})")
    return model


def load_tokenizer_from(source: str | Path, name: str | Path | None = None):
    """A tokenizer from a folder or a Hub id; errors start with ``name`` (a damaged JSON file: its path)."""
    from transformers import AutoTokenizer

    folder = Path(str(source))
    if folder.is_dir():
        for file in TOKENIZER_FILES:
            if (folder / file).is_file():
                read_json_object(folder / file)
    with reading(name if name is not None else source, "cannot load the tokenizer"):
        # Never the folder's own code: a custom-code export (texttune export) would otherwise make
        # transformers ask on stdin whether to run it; the tokenizer itself is plain tokenizer.json.
        return AutoTokenizer.from_pretrained(str(source), trust_remote_code=False)


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
