"""The predictors: a trained classifier with its tokenizer, ready for texts, whichever backend computes
the logits (``Predictor``: PyTorch; ``onnx_backend.OnnxPredictor``: onnxruntime; ``FittedPredictor``:
a closed-form model). ``predict.load`` chooses one; this module sits below both ``predict`` and
``onnx_backend`` so neither imports the other's module at import time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from texttune.errors import TexttuneError
from texttune.models.long_text import windows_of
from texttune.runs import model_dir_of


class BasePredictor:
    """What every backend shares: labels, calibration, tokenization, length-sorted batching and top-k.

    A backend supplies the tokenizer's tensor type (``tensors``) and ``_forward`` (one padded batch to
    (B, C) float logits on the CPU), so ``texttune predict``, ``serve`` and the ONNX parity check run
    the same batching whichever backend computes the logits.
    """

    backend = ""
    tensors = "pt"  # return_tensors of the tokenizer
    long_text = None  # model.long_text of a windowed model (a LongTextConfig): long texts read in windows
    thresholds: list[float] | None = None  # a multi-label model's per-label thresholds (predict_sets)

    def __init__(self, tokenizer, label_names: list[str], max_length: int, temperature: float | None) -> None:
        self.tokenizer = tokenizer
        self.label_names = list(label_names)
        self.max_length = max_length
        self.temperature = temperature

    def _forward(self, batch) -> torch.Tensor:
        raise NotImplementedError

    def logits(self, texts: list[str], text_pairs: list[str] | None = None, batch_size: int = 64) -> torch.Tensor:
        """(N, C) logits, in the order of ``texts``; batches sorted by length for speed."""
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out = torch.empty((len(texts), len(self.label_names)))
        for start in range(0, len(texts), batch_size):
            idx = order[start : start + batch_size]
            args = [[texts[i] for i in idx]]
            if text_pairs is not None:
                args.append([text_pairs[i] for i in idx])
            if self.long_text is not None:
                out[torch.from_numpy(idx)] = self._window_logits(*args)
                continue
            batch = self.tokenizer(*args, truncation=True, max_length=self.max_length, padding=True,
                                   return_tensors=self.tensors)
            out[torch.from_numpy(idx)] = self._forward(batch)
        return out

    def _window_logits(self, texts: list[str], text_pairs: list[str] | None = None) -> torch.Tensor:
        """(B, C): each text's windows (as at training, ``data.tokenize.encode_windows``) in one
        padded batch, their logits pooled per text by ``long_text.pool``."""
        from transformers import BatchEncoding

        from texttune.models.long_text import pool_windows

        if text_pairs is not None:
            raise TexttuneError("this model reads long texts in windows (model.long_text.mode windows), "
                                "which takes single texts, not text pairs")
        windows = self.long_text
        batch = self.tokenizer(texts, truncation=True, max_length=self.max_length, stride=windows.stride,
                               return_overflowing_tokens=True, padding=True, return_tensors=self.tensors)
        owner = np.asarray(batch.pop("overflow_to_sample_mapping"))  # (W,) the text of each window
        if windows.max_windows is not None:  # the first max_windows of each text, as at training
            first = np.searchsorted(owner, owner)  # owner is sorted: a text's windows are contiguous
            keep = np.arange(len(owner)) - first < windows.max_windows
            batch, owner = BatchEncoding({k: v[keep] for k, v in batch.items()}), owner[keep]
        counts = torch.from_numpy(np.bincount(owner, minlength=len(texts)))
        return pool_windows(self._forward(batch), counts, windows.pool)

    def predict(
        self, texts: list[str] | str, text_pairs: list[str] | None = None, top_k: int = 1, batch_size: int = 64
    ) -> list[dict[str, Any]]:
        """Label, probability and the ``top_k`` labels for each text. Probabilities are calibrated
        by the run's temperature when one was fitted (the predicted label is the same)."""
        if isinstance(texts, str):
            texts = [texts]
        if text_pairs is not None and len(text_pairs) != len(texts):
            raise TexttuneError(f"{len(texts)} texts but {len(text_pairs)} text pairs")
        logits = self.logits(list(texts), text_pairs, batch_size)
        if self.thresholds is not None:
            return self._label_sets(logits)
        if self.temperature:
            logits = logits / self.temperature
        probs = torch.softmax(logits, dim=-1)
        k = max(1, min(top_k, len(self.label_names)))
        values, indices = probs.topk(k, dim=-1)
        results = []
        for row_values, row_indices in zip(values.tolist(), indices.tolist()):
            top = [{"label": self.label_names[i], "score": round(v, 6)} for v, i in zip(row_values, row_indices)]
            results.append({"label": top[0]["label"], "score": top[0]["score"], "top_k": top})
        return results

    def _label_sets(self, logits: torch.Tensor) -> list[dict[str, Any]]:
        """Multi-label: ``{"labels": [the labels at or above their fitted thresholds], "scores":
        {label: sigmoid score}}`` per text."""
        probs, cut = torch.sigmoid(logits).tolist(), self.thresholds
        return [{"labels": [name for name, p, t in zip(self.label_names, row, cut) if p >= t],
                 "scores": {name: round(p, 6) for name, p in zip(self.label_names, row)}} for row in probs]


def thresholds_of(config, label_names: list[str]) -> list[float] | None:
    """The per-label thresholds a multi-label model's config carries (0.5 where none is stored)."""
    if getattr(config, "problem_type", None) != "multi_label_classification":
        return None
    stored = getattr(config, "texttune_thresholds", None) or {}
    return [float(stored.get(name, 0.5)) for name in label_names]


class Predictor(BasePredictor):
    """A trained classifier with its tokenizer, ready for texts (the PyTorch backend)."""

    backend = "torch"

    def __init__(self, model, tokenizer, max_length: int = 512, device: str | None = None) -> None:
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device).eval()
        labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
        super().__init__(tokenizer, labels, max_length, getattr(model.config, "texttune_temperature", None))
        self.thresholds = thresholds_of(model.config, labels)
        self.long_text = windows_of(model.config)

    @classmethod
    def from_path(cls, path: str | Path, device: str | None = None) -> Predictor:
        from texttune.export import is_export, load_export
        from texttune.runs import quiet_libraries
        from texttune.models.loading import load_classifier
        from texttune.models.saving import load_tokenizer_from

        quiet_libraries()
        folder = model_dir_of(path)
        model = load_export(folder) if is_export(folder) else load_classifier(folder)
        tokenizer = load_tokenizer_from(folder)
        check_padding(tokenizer, folder)
        return cls(model, tokenizer, model_max_length(folder, tokenizer), device)

    def _forward(self, batch) -> torch.Tensor:
        with torch.inference_mode():
            return self.model(**batch.to(self.device)).logits.float().cpu()


def check_padding(tokenizer, folder: Path) -> None:
    if tokenizer.pad_token_id is None:  # batches are padded: without it every prediction would fail
        raise TexttuneError(f"{folder}: its tokenizer has no padding token (set pad_token in "
                            "tokenizer_config.json)")


def model_max_length(folder: Path, tokenizer) -> int:
    """Where inputs are truncated: the run's ``model.max_length``, else the tokenizer's limit."""
    max_length = _run_max_length(folder.parent) or getattr(tokenizer, "model_max_length", 512)
    return min(int(max_length), 4096)


def _run_max_length(run_dir: Path) -> int | None:
    from texttune.models.saving import reading
    from texttune.runs import CONFIG, read_run_config

    if not (run_dir / CONFIG).is_file():
        return None
    with reading(run_dir / CONFIG, "not a readable run config"):
        value = (read_run_config(run_dir).get("model") or {}).get("max_length")
        return int(value) if value is not None else None


class FittedPredictor(BasePredictor):
    """A closed-form model (a classic baseline or SetFit, ``models/classic.py``): it scores raw texts
    itself (scikit-learn features or its own encoder), so there is no tokenizer batch to build here."""

    backend = "torch"  # what `--backend` names: the default path, not an ONNX export

    def __init__(self, model) -> None:
        super().__init__(None, model.label_names, getattr(model.cfg, "max_chars", 0), model.temperature)
        self.model = model

    def logits(self, texts: list[str], text_pairs: list[str] | None = None, batch_size: int = 64) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(self.model.logits(list(texts), text_pairs)))


def align_labels(ds, model_labels: list[str]) -> None:
    """Re-index a dataset's labels onto the model's label order, by name (in place)."""
    if ds.label_names == model_labels:
        return
    missing = [name for name in ds.label_names or [] if name not in model_labels]
    if missing:
        raise TexttuneError(
            f"dataset '{ds.name}' has labels the model does not know: {missing}; the model's labels "
            f"are {model_labels}"
        )
    mapping = np.array([model_labels.index(name) for name in ds.label_names])
    for split, df in ds.splits.items():
        labels = df["label"].to_numpy()
        df["label"] = np.where(labels >= 0, mapping[np.clip(labels, 0, None)], labels)
    ds.label_names = list(model_labels)
