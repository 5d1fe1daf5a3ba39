"""Resumable training state in safetensors + JSON: nothing is ever unpickled.

``torch.save``/``accelerator.save_state`` pickle optimizer and RNG state, and loading a pickle can
run code. A nested state dict is split here into its tensors (one safetensors file, keys are the
dotted paths) and everything else (JSON), and put back together on load.

A checkpoint folder is written beside its place (``.last.tmp``), sealed by ``complete.json`` (every
file and its size, written last) and swapped in; ``recover_training_state`` puts back the complete copy
a crash during the swap left aside. Whatever is wrong with a file on load is a TexttuneError naming it.
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
from texttune.io import apply_umask, atomic_write_json
from texttune.models.saving import DAMAGED_SAFETENSORS, check_safetensors, read_json_object, reading

_TENSOR = "__tensor__"
LAST = "last"  # checkpoints/last: the resumable state of the latest evaluation
BEST = "best"  # checkpoints/best/model.safetensors: the weights of the best evaluation so far
COMPLETE = "complete.json"  # written last into a checkpoint: {file name: size in bytes}


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
    apply_umask(path / f"{name}.safetensors")  # safetensors writes 0600
    atomic_write_json(path / f"{name}.json", skeleton)


def load_state(path: Path, name: str) -> Any:
    tensors_file, skeleton_file = path / f"{name}.safetensors", path / f"{name}.json"
    check_safetensors(tensors_file)
    with reading(tensors_file, DAMAGED_SAFETENSORS):
        tensors = load_file(str(tensors_file))
    with reading(skeleton_file, "not valid JSON"):
        skeleton = json.loads(skeleton_file.read_text(encoding="utf-8"))
    with reading(skeleton_file, f"does not match {tensors_file.name}"):
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
    apply_umask(tmp)  # safetensors writes 0600
    os.replace(tmp, path)


def load_model_weights(model: torch.nn.Module, path: Path) -> None:
    check_safetensors(path)
    with reading(path, "does not fit the model"):
        load_model(model, str(path), device=str(next(model.parameters()).device))


def save_training_state(
    folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, trainer: dict[str, Any]
) -> None:
    """Everything needed to continue exactly: weights, optimizer, schedule, RNG, loop position.

    Written to a temporary folder, sealed and swapped in, so an interruption at any point leaves a
    complete state: the previous one, or the new one aside (``recover_training_state``).
    """
    tmp, old = _aside(folder, "tmp"), _aside(folder, "old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_model_weights(model, tmp / "model.safetensors")
    save_state(tmp, "optimizer", optimizer.state_dict())
    save_state(tmp, "rng", rng_state())
    atomic_write_json(tmp / "trainer_state.json", {**trainer, "scheduler": scheduler.state_dict()})
    atomic_write_json(tmp / COMPLETE, {path.name: path.stat().st_size for path in sorted(tmp.iterdir())})
    shutil.rmtree(old, ignore_errors=True)  # left by a crash after an earlier swap; it would block this one
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)


def _aside(folder: Path, kind: str) -> Path:
    return folder.with_name(f".{folder.name}.{kind}")


def is_complete(folder: Path) -> bool:
    """Sealed by ``complete.json``, and every file it lists is there with its size."""
    try:
        sizes = json.loads((folder / COMPLETE).read_text(encoding="utf-8"))
        return bool(sizes) and all((folder / name).stat().st_size == size for name, size in sizes.items())
    except (OSError, ValueError, TypeError, AttributeError):
        return False


def has_training_state(folder: Path) -> bool:
    """Whether ``recover_training_state(folder)`` would find state to resume from (changes nothing)."""
    if (folder / "trainer_state.json").is_file():
        return True
    return not folder.exists() and any(is_complete(_aside(folder, kind)) for kind in ("tmp", "old"))


def recover_training_state(folder: Path) -> Path | None:
    """``folder`` if it holds training state; after a crash between the two renames of
    ``save_training_state`` (no ``folder``), the complete copy left aside — the newer ``.tmp``, else the
    ``.old`` — moved back into place; None when there is no complete state."""
    if (folder / "trainer_state.json").is_file():
        return folder
    if folder.exists():
        return None
    for kind in ("tmp", "old"):
        if is_complete(_aside(folder, kind)):
            os.replace(_aside(folder, kind), folder)
            shutil.rmtree(_aside(folder, "old"), ignore_errors=True)
            return folder
    return None


def load_training_state(
    folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any
) -> dict[str, Any]:
    """The state ``save_training_state`` wrote (recovered first if a crash left it aside); a file that is
    missing, cut short, damaged or does not fit this model and optimizer is a TexttuneError naming it."""
    folder = recover_training_state(folder) or folder
    if not (folder / "trainer_state.json").is_file():
        raise TexttuneError(f"{folder}: no resumable state here (trainer_state.json is missing)")
    _check_sizes(folder)
    load_model_weights(model, folder / "model.safetensors")
    saved = load_state(folder, "optimizer")
    with reading(folder / "optimizer.json", "does not fit the optimizer"):
        _check_fits(saved, optimizer)
        optimizer.load_state_dict(saved)
    trainer = read_json_object(folder / "trainer_state.json")
    with reading(folder / "trainer_state.json", "does not fit the training run"):
        schedule = trainer.pop("scheduler")
        if not _same_kind(schedule, scheduler.state_dict()):
            raise ValueError("its scheduler state has other fields")
        scheduler.load_state_dict(schedule)
    rng = load_state(folder, "rng")
    with reading(folder / "rng.json", "not a valid random-number state"):
        set_rng_state(rng)
    return trainer


def _check_sizes(folder: Path) -> None:
    """A sealed checkpoint whose files changed size since (cut short by a full disk or a copy)."""
    if not (folder / COMPLETE).is_file():
        return  # written before checkpoints were sealed
    sizes = read_json_object(folder / COMPLETE)
    for name, size in sizes.items():
        path = folder / str(name)
        found = path.stat().st_size if path.is_file() else None
        if found != size:
            raise TexttuneError(f"{path}: cut short or changed since it was saved ({found} bytes, "
                                f"{COMPLETE} says {size})")


def _check_fits(saved: Any, optimizer: torch.optim.Optimizer) -> None:
    """Torch only checks the group sizes; a wrong value type or tensor shape would fail at the next step."""
    current = optimizer.state_dict()
    if not isinstance(saved, dict) or set(saved) != {"state", "param_groups"}:
        raise ValueError("not an optimizer state")
    if not _same_kind(saved["param_groups"], current["param_groups"]):
        raise ValueError("its parameter groups differ from this optimizer's")
    params = dict(zip([i for g in saved["param_groups"] for i in g["params"]],
                      [p for g in optimizer.param_groups for p in g["params"]]))
    for key, state in saved["state"].items():
        if key not in params or not isinstance(state, dict):
            raise ValueError(f"state for an unknown parameter {key}")
        for name, value in state.items():
            fits = (value.dim() == 0 or value.shape == params[key].shape) if isinstance(value, torch.Tensor) \
                else isinstance(value, (int, float))
            if not fits:
                raise ValueError(f"state '{name}' of parameter {key} does not fit it")


def _same_kind(saved: Any, current: Any) -> bool:
    """Same structure: dict keys, sequence lengths, and value kinds (a number for a number)."""
    if isinstance(current, dict):
        return isinstance(saved, dict) and set(saved) == set(current) and all(
            _same_kind(saved[k], current[k]) for k in current)
    if isinstance(current, (list, tuple)):
        return isinstance(saved, (list, tuple)) and len(saved) == len(current) and all(
            _same_kind(a, b) for a, b in zip(saved, current))
    if isinstance(current, bool) or current is None or isinstance(current, str):
        return type(saved) is type(current)
    if isinstance(current, (int, float)):
        return isinstance(saved, (int, float)) and not isinstance(saved, bool)
    if isinstance(current, torch.Tensor):
        return isinstance(saved, torch.Tensor) and saved.shape == current.shape
    return True
