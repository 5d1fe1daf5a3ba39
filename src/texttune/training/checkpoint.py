"""Resumable training state in safetensors + JSON: nothing is ever unpickled.

``torch.save``/``accelerator.save_state`` pickle optimizer and RNG state, and loading a pickle can
run code. A nested state dict is split here into its tensors (one safetensors file, keys are the
dotted paths) and everything else (JSON), and put back together on load.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from texttune.errors import TexttuneError
from texttune.io import atomic_write_json

_TENSOR = "__tensor__"


def split_tensors(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Replace tensors in a nested structure by references, collecting them in ``tensors``."""
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj.detach().cpu().contiguous()
        return {_TENSOR: prefix}
    if isinstance(obj, dict):
        return {"__dict__": [[_key(k), split_tensors(v, f"{prefix}.{k}", tensors)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        items = [split_tensors(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
        return {"__tuple__": items} if isinstance(obj, tuple) else items
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": obj.tolist(), "dtype": str(obj.dtype)}
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    return obj


def _key(key: Any) -> Any:
    return {"__int__": key} if isinstance(key, int) else key


def join_tensors(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if _TENSOR in obj:
            return tensors[obj[_TENSOR]]
        if "__dict__" in obj:
            return {
                (k["__int__"] if isinstance(k, dict) else k): join_tensors(v, tensors) for k, v in obj["__dict__"]
            }
        if "__tuple__" in obj:
            return tuple(join_tensors(v, tensors) for v in obj["__tuple__"])
        if "__ndarray__" in obj:
            return np.array(obj["__ndarray__"], dtype=obj["dtype"])
    if isinstance(obj, list):
        return [join_tensors(v, tensors) for v in obj]
    return obj


def save_state(path: Path, name: str, state: Any) -> None:
    tensors: dict[str, torch.Tensor] = {}
    skeleton = split_tensors(state, name, tensors)
    save_file(tensors, str(path / f"{name}.safetensors"))
    atomic_write_json(path / f"{name}.json", skeleton)


def load_state(path: Path, name: str) -> Any:
    try:
        tensors = load_file(str(path / f"{name}.safetensors"))
        skeleton = json.loads((path / f"{name}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, json.JSONDecodeError) as err:
        raise TexttuneError(f"{path}: unreadable checkpoint '{name}' ({err})") from None
    return join_tensors(skeleton, tensors)


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    python = state["python"]
    random.setstate((python[0], tuple(python[1]), python[2]))
    np.random.set_state(tuple(state["numpy"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_model_weights(model: torch.nn.Module, path: Path) -> None:
    # save_model (not save_file): tied weights (a masked-LM decoder sharing the word embeddings) are
    # stored once and re-tied on load.
    tmp = path.with_name(f".{path.name}.tmp")
    save_model(model, str(tmp))
    os.replace(tmp, path)


def load_model_weights(model: torch.nn.Module, path: Path) -> None:
    try:
        load_model(model, str(path), device=str(next(model.parameters()).device))
    except (OSError, ValueError) as err:
        raise TexttuneError(f"{path}: unreadable checkpoint ({err})") from None


def save_training_state(
    folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, trainer: dict[str, Any]
) -> None:
    """Everything needed to continue exactly: weights, optimizer, schedule, RNG, loop position.

    Written to a temporary folder and swapped in, so an interruption while saving leaves the
    previous state intact.
    """
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_model_weights(model, tmp / "model.safetensors")
    save_state(tmp, "optimizer", optimizer.state_dict())
    save_state(tmp, "rng", rng_state())
    atomic_write_json(tmp / "trainer_state.json", {**trainer, "scheduler": scheduler.state_dict()})
    old = folder.with_name(f".{folder.name}.old")
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)


def load_training_state(
    folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any
) -> dict[str, Any]:
    if not (folder / "trainer_state.json").is_file():
        raise TexttuneError(f"{folder}: no resumable state here (trainer_state.json is missing)")
    load_model_weights(model, folder / "model.safetensors")
    optimizer.load_state_dict(load_state(folder, "optimizer"))
    trainer = json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))
    scheduler.load_state_dict(trainer.pop("scheduler"))
    set_rng_state(load_state(folder, "rng"))
    return trainer
