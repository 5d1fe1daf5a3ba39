"""Using a trained model: ``texttune.load(RUN_DIR).predict([...])`` and ``texttune evaluate``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from texttune.errors import TexttuneError
from texttune.predictors import (  # noqa: F401  (the predictors, importable from here as before)
    BasePredictor,
    FittedPredictor,
    Predictor,
    align_labels,
    check_padding,
    model_max_length,
    thresholds_of,
)
from texttune.runs import model_dir_of


BACKENDS = ("torch", "onnx")


def load(path: str | Path, device: str | None = None, backend: str | None = None) -> BasePredictor:
    """Load a run directory, its model folder or an export for prediction.

    ``backend``: ``"torch"``, ``"onnx"`` (a folder written by ``texttune export --format onnx``), or
    None: onnx for such a folder, torch otherwise. Either backend has the same interface.
    """
    from texttune import onnx_backend

    if backend is not None and backend not in BACKENDS:
        raise TexttuneError(f"backend '{backend}': choose one of {', '.join(BACKENDS)}")
    fitted = _fitted_folder(path)
    if fitted is not None:
        from texttune.models.classic import CLASSIC_FILE, load_fitted

        if backend == "onnx":
            raise TexttuneError(f"{fitted}: a closed-form model ({fitted / CLASSIC_FILE}), which runs with the "
                                "torch backend only (there is no ONNX export of it)")
        return FittedPredictor(load_fitted(fitted))
    is_onnx = onnx_backend.is_onnx_export(path)
    if backend == "onnx" or (backend is None and is_onnx):
        return onnx_backend.OnnxPredictor.from_path(path, device)
    if is_onnx:
        raise TexttuneError(f"{path}: an ONNX export (model.onnx), not a PyTorch model; it runs with the onnx "
                            "backend (predict and serve --backend onnx); texttune evaluate needs the run")
    return Predictor.from_path(path, device)


def _fitted_folder(path: str | Path) -> Path | None:
    """The model folder of a run of a closed-form family, or None."""
    from texttune.models.classic import is_classic_folder

    try:
        folder = model_dir_of(path)
    except TexttuneError:
        return None
    return folder if is_classic_folder(folder) else None


def evaluate_saved(path: str | Path, data_cfg, split: str = "test") -> dict[str, Any]:
    """Metrics of a saved model on any dataset split (``texttune evaluate``)."""
    from texttune.data.load import load_dataset
    from texttune.data.tokenize import encode_frame
    from texttune.evaluation.evaluate import evaluate

    # The metrics run the PyTorch model itself; an ONNX export is refused by name.
    predictor = load(path, backend="torch")
    # A file is evaluated whole (no carving); a built-in gets the splits a run would see.
    ds = load_dataset(data_cfg, carve=data_cfg.train_file is None)
    if data_cfg.train_file is not None and split not in ds.splits and list(ds.splits) == ["train"]:
        ds.splits[split] = ds.splits.pop("train")
        ds.files[split] = ds.files.pop("train")
    if split not in ds.splits:
        raise TexttuneError(f"dataset '{ds.name}' has no split '{split}'; it has {ds.split_names()}")
    if not ds.has_labels:
        raise TexttuneError(f"dataset '{ds.name}' has no labels to evaluate against")
    align_labels(ds, predictor.label_names)
    frame = ds.splits[split]
    bad = frame["label"] < 0
    if bad.any():
        raise TexttuneError(f"{ds.where(split)}: {int(bad.sum())} rows have a missing or unknown label")
    if isinstance(predictor, FittedPredictor):  # scores raw texts: no token ids to evaluate over
        from texttune.evaluation.evaluate import metrics_of_logits

        pairs = frame["text_pair"].astype(str).tolist() if "text_pair" in frame.columns else None
        logits = predictor.logits(frame["text"].astype(str).tolist(), pairs)
        metrics = metrics_of_logits(logits, frame["label"].to_numpy(), predictor.label_names, frame.index.to_numpy())
        metrics.pop("worst", None)
        metrics["dataset"], metrics["split"] = ds.name, split
        return metrics
    windows = predictor.long_text  # a windowed model is evaluated per document, as in its run
    window_args = {"stride": windows.stride, "max_windows": windows.max_windows} if windows else {}
    encoded = encode_frame(frame, predictor.tokenizer, predictor.max_length, **window_args)
    metrics, _ = evaluate(predictor.model, encoded, predictor.label_names,
                          predictor.tokenizer.pad_token_id or 0, 64, temperature=None,
                          window_pool=windows.pool if windows else "mean")
    metrics["dataset"], metrics["split"] = ds.name, split
    return metrics


def read_texts(path: Path, text_column: str, text_pair_column: str | None) -> pd.DataFrame:
    """The texts (and pairs) of an --input file; a missing column names the flag that chose it."""
    from texttune.data.files import detect_format, read_table, select_columns

    frame = read_table(path, detect_format(path))
    flags = {"text": "--text-column", "text_pair": "--text-pair-column"}
    return select_columns(frame, path, text_column, text_pair_column, None, keys=flags)


def write_predictions(path: Path, frame: pd.DataFrame, predictions: list[dict[str, Any]]) -> None:
    from texttune.io import atomic_write_text

    out = frame.reset_index(drop=True).copy()
    if predictions and "labels" in predictions[0]:  # multi-label: the set and every label's score
        predictions = [{"label": json.dumps(p["labels"]), "score": max(p["scores"].values(), default=0.0),
                        "top_k": [{"label": k, "score": v} for k, v in p["scores"].items()]} for p in predictions]
    out["label"] = [p["label"] for p in predictions]
    out["score"] = [p["score"] for p in predictions]
    out["top_k"] = [json.dumps(p["top_k"]) for p in predictions]
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        text = "".join(json.dumps({**row, "top_k": json.loads(row["top_k"])}, ensure_ascii=False) + "\n"
                       for row in out.to_dict(orient="records"))
    elif suffix in (".csv", ".tsv"):
        text = out.to_csv(index=False, sep="\t" if suffix == ".tsv" else ",")
    else:
        raise TexttuneError(f"{path}: write predictions to .jsonl, .csv or .tsv")
    atomic_write_text(path, text)


def export_classifier(run: str | Path, out: str | Path) -> Path:
    """Write a run's model as a standalone Hugging Face folder (``texttune.export``); never overwrites."""
    from texttune.export import export_classifier as export

    return export(run, out)
