"""ONNX export (fp32, or int8 by dynamic quantization) with a parity check, and the ONNX predictor.

``export_onnx(RUN, OUT)`` writes a self-describing folder::

    OUT/model.onnx      the graph: (input_ids, attention_mask[, token_type_ids]) -> logits, batch and
                        sequence axes dynamic; int8 weights when quantized
    OUT/config.json     the model's config: labels, temperature, plus ``texttune_onnx`` (max_length,
                        inputs, precision, opset)
    OUT/tokenizer*.json the run's tokenizer
    OUT/export.json     the parity record: ONNX vs PyTorch logits on the run's validation texts, and
                        with int8 the test accuracy of both

The exporter is ``torch.export`` (non-strict) followed by ``torch.onnx``'s dynamo translator, not the
TorchScript exporter (deprecated since torch 2.9) nor optimum (it exports the architectures it knows,
and texttune's classifier is not one; it also trails transformers releases). Exporting in two steps
makes ``torch.export`` fail loudly when a model cannot keep an axis dynamic; ``torch.onnx.export`` on
the module would silently fall back to a graph fixed to the example's shape. Why in docs/design.md,
"ONNX (issue 18)". onnx, onnxscript and onnxruntime are imported only here, when used.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import shutil
import time
import warnings
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from torch import nn

from texttune.errors import TexttuneError
from texttune.models.long_text import windows_of
from texttune.predictors import BasePredictor, Predictor, check_padding, model_max_length, thresholds_of
from texttune.runs import model_dir_of

ONNX_MODEL = "model.onnx"
CONFIG = "config.json"
EXPORT_RECORD = "export.json"
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
AXES = ("batch", "sequence")  # the names of axes 0 and 1 of every input
QUANTIZE = ("none", "int8")
PARITY_TOLERANCE = 1e-3  # fp32 ONNX vs PyTorch, max |Δlogit|; kernels differ, ~1e-5 is usual
PARITY_TEXTS = 256  # validation texts compared (a seeded sample when there are more)
# 50, not the predictor's 64: the 256 texts then run as five batches of 50 and one of 6, so the
# check covers more than one batch size and length.
PARITY_BATCH = 50
# Encoders whose forward cannot be captured as a graph, with the reason shown to the user.
UNEXPORTABLE = {
    "rnn": "it runs on packed sequences (pack_padded_sequence), whose per-text lengths torch.export "
           "cannot trace; export a cnn, transformer, bag_of_ngrams or pretrained model",
}
# Texts for a model folder without a run record beside it (no validation split to compare on).
PROBE_TEXTS = [
    "what a wonderful film", "the service was slow and the food was cold", "who wrote hamlet ?",
    "stocks fell sharply after the central bank raised interest rates again", "ok",
    "how far is it from denver to aspen ?", "i would not recommend this product to anyone",
    "the team won the championship after a dramatic overtime victory on sunday night",
] * 4
DEPENDENCIES = "onnx, onnxscript and onnxruntime (pip install 'texttune[onnx]')"


def is_onnx_export(path: str | Path) -> bool:
    return (Path(path) / ONNX_MODEL).is_file()


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise TexttuneError(f"the ONNX backend needs {DEPENDENCIES}") from None
    return onnxruntime


# --------------------------------------------------------------------------- the predictor


class OnnxPredictor(BasePredictor):
    """An ONNX export with its tokenizer: the interface of ``predict.Predictor``, run by onnxruntime."""

    backend = "onnx"
    tensors = "np"

    def __init__(self, session, tokenizer, label_names: list[str], max_length: int,
                 temperature: float | None) -> None:
        super().__init__(tokenizer, label_names, max_length, temperature)
        self.session = session
        self.input_names = [i.name for i in session.get_inputs()]
        self.device = torch.device("cuda" if session.get_providers()[0] == "CUDAExecutionProvider" else "cpu")

    @classmethod
    def from_path(cls, path: str | Path, device: str | None = None, num_threads: int | None = None) -> OnnxPredictor:
        """``num_threads``: onnxruntime's intra-op threads; default torch's (``torch.set_num_threads``),
        so both backends run on the same cores."""
        from texttune.models.saving import load_tokenizer_from, read_json_object, reading
        from texttune.runs import quiet_libraries

        folder = Path(path)
        if not is_onnx_export(folder):
            raise TexttuneError(f"{folder}: no ONNX model here (expected {folder / ONNX_MODEL}); write one with "
                                "texttune export RUN OUT --format onnx")
        ort = _onnxruntime()
        quiet_libraries()
        config = read_json_object(folder / CONFIG)
        with reading(folder / CONFIG, "not the config of a texttune ONNX export"):
            labels = [config["id2label"][str(i)] for i in range(len(config["id2label"]))]
            max_length = int(config["texttune_onnx"]["max_length"])
        tokenizer = load_tokenizer_from(folder)
        check_padding(tokenizer, folder)
        options = ort.SessionOptions()
        options.intra_op_num_threads = num_threads or torch.get_num_threads()
        options.inter_op_num_threads = 1  # one graph at a time: the intra-op threads do the work
        with reading(folder / ONNX_MODEL, "not a readable ONNX model"):
            session = ort.InferenceSession(str(folder / ONNX_MODEL), options, providers=_providers(ort, device))
        unknown = [i.name for i in session.get_inputs() if i.name not in INPUTS]
        if unknown:
            raise TexttuneError(f"{folder / ONNX_MODEL}: inputs {unknown} are not a texttune export's "
                                f"({', '.join(INPUTS)})")
        predictor = cls(session, tokenizer, labels, max_length, config.get("texttune_temperature"))
        # The exported config is the model's own: a multi-label model's thresholds and a windowed
        # model's long_text setting apply here as in the torch backend.
        view = SimpleNamespace(**config)
        predictor.thresholds, predictor.long_text = thresholds_of(view, labels), windows_of(view)
        return predictor

    def _forward(self, batch) -> torch.Tensor:
        ids = np.asarray(batch["input_ids"], dtype=np.int64)
        # A pretrained encoder takes token types; zeros (one segment) when the tokenizer gives none.
        feeds = {name: np.asarray(batch[name], dtype=np.int64) if name in batch else np.zeros_like(ids)
                 for name in self.input_names}
        return torch.from_numpy(self.session.run(None, feeds)[0]).float()


def _providers(ort, device: str | None) -> list[str]:
    # The CPU by default: int8 dynamic quantization, the reason to export, is a CPU technique.
    if device in (None, "cpu"):
        return ["CPUExecutionProvider"]
    if str(device).startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    raise TexttuneError(f"device '{device}': onnxruntime here has {', '.join(ort.get_available_providers())}")


# --------------------------------------------------------------------------- export


class _LogitsOnly(nn.Module):
    """The classifier as a graph's signature: named int64 tensors in, the (B, C) logits out."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        return self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).logits


def export_onnx(run: str | Path, out: str | Path, quantize: str = "none") -> dict[str, Any]:
    """Write ``run``'s model as an ONNX folder (see the module docstring); returns the export record.
    Refuses an existing ``out``, an encoder that cannot be exported, and fp32 logits that differ from
    PyTorch's by more than ``PARITY_TOLERANCE``; nothing is left behind then."""
    out = _check_target(run, Path(out), quantize)
    reference = _load_for_export(run)
    folder = model_dir_of(run)
    texts, test, note = run_texts(folder, reference.label_names)
    expected = reference.logits(*texts, batch_size=PARITY_BATCH)  # the model as trained, LoRA unmerged
    test_expected = reference.logits(*test[:2]) if test and quantize == "int8" else None
    record: dict[str, Any] = {"source": str(folder), "format": "onnx", "quantize": quantize,
                              "versions": _versions(), "parity_texts": note, "seconds": {}}
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        started = time.perf_counter()
        record["inputs"] = _export_graph(_merged(reference.model), reference.tokenizer, tmp / ONNX_MODEL, folder)
        _write_config(reference.model, reference.tokenizer, tmp, reference.max_length, record["inputs"], quantize)
        record["seconds"]["export"] = round(time.perf_counter() - started, 2)
        fp32 = OnnxPredictor.from_path(tmp, "cpu")
        record["parity"] = {"fp32": {**_compare(expected, fp32.logits(*texts, batch_size=PARITY_BATCH)),
                                     "tolerance": PARITY_TOLERANCE}}
        worst = record["parity"]["fp32"]["max_abs_logit_diff"]
        if worst > PARITY_TOLERANCE:
            raise TexttuneError(f"{folder}: ONNX fp32 logits differ from PyTorch's by up to {worst:.2e} on "
                                f"{len(expected)} texts (tolerance {PARITY_TOLERANCE:g}); nothing exported")
        if quantize == "int8":
            started = time.perf_counter()
            _quantize_int8(tmp / ONNX_MODEL)
            record["seconds"]["quantize"] = round(time.perf_counter() - started, 2)
            int8 = OnnxPredictor.from_path(tmp, "cpu")
            record["parity"]["int8"] = _compare(expected, int8.logits(*texts, batch_size=PARITY_BATCH))
            if test:
                record["test"] = _test_accuracy(test, test_expected, int8)
        record["size_mb"] = round((tmp / ONNX_MODEL).stat().st_size / 2**20, 1)
        (tmp / EXPORT_RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {**record, "path": str(out)}


def _check_target(run: str | Path, out: Path, quantize: str) -> Path:
    if quantize not in QUANTIZE:
        raise TexttuneError(f"--quantize {quantize}: choose one of {', '.join(QUANTIZE)}")
    if out.exists():
        raise TexttuneError(f"{out}: already exists; export writes a new folder")
    if is_onnx_export(run):
        raise TexttuneError(f"{run}: already an ONNX export; export from the run it came from")
    _require_exporter()
    return out


def _load_for_export(run: str | Path) -> Predictor:
    """The run's model in fp32 on the CPU, as a torch predictor: the reference the graph is checked against."""
    from texttune.models.loading import load_classifier
    from texttune.models.saving import load_tokenizer_from
    from texttune.runs import quiet_libraries

    quiet_libraries()
    folder = model_dir_of(run)
    model = load_classifier(folder).float().cpu().eval()
    encoder = model.config.encoder_type
    if encoder in UNEXPORTABLE:
        raise TexttuneError(f"{folder}: the {encoder} encoder cannot be exported to ONNX: {UNEXPORTABLE[encoder]}")
    tokenizer = load_tokenizer_from(folder)
    check_padding(tokenizer, folder)
    return Predictor(model, tokenizer, model_max_length(folder, tokenizer), device="cpu")


def _require_exporter() -> None:
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401  (torch.onnx's dynamo translator is written in it)
    except ImportError:
        raise TexttuneError(f"ONNX export needs {DEPENDENCIES}") from None
    _onnxruntime()


def _merged(model):
    """LoRA folded into the weights: a graph with one matmul per layer, not three."""
    strategy = getattr(model.config, "strategy", None)
    if strategy and strategy.get("name") == "lora":
        from texttune.strategies.lora import merge_lora

        merge_lora(model)
    return model


def _export_graph(model, tokenizer, path: Path, folder: Path) -> list[str]:
    """``torch.export`` the classifier with dynamic batch and sequence axes, translate it to ONNX, save it;
    returns the graph's input names."""
    names = ["input_ids", "attention_mask"]
    if model.config.encoder_type == "hf" and "token_type_ids" in tokenizer.model_input_names:
        names.append("token_type_ids")  # sentence pairs: BERT-family encoders embed the segment
    # Three texts of different lengths: no axis is 0 or 1 (torch.export specialises those) nor equal
    # to the other.
    example = tokenizer(PROBE_TEXTS[:3], padding=True, return_tensors="pt")
    kwargs = {name: example[name] if name in example else torch.zeros_like(example["input_ids"]) for name in names}
    dims = {name: {0: torch.export.Dim.AUTO, 1: torch.export.Dim.AUTO} for name in names}
    what = f"the {model.config.encoder_type} encoder" + (
        f" with strategy {model.config.strategy['name']}" if getattr(model.config, "strategy", None) else "")
    try:
        with _quiet():
            program = torch.export.export(_LogitsOnly(model).eval(), (), kwargs=kwargs, dynamic_shapes=dims,
                                          strict=False)
            torch.onnx.export(program, dynamo=True, verbose=False).save(str(path))
    except Exception as err:  # noqa: BLE001  (any exporter failure is this model's limitation, said once)
        detail = next((line for line in str(err).splitlines() if line.strip()), type(err).__name__)
        raise TexttuneError(f"{folder}: {what} cannot be exported to ONNX ({detail.strip()})") from None
    _name_axes(path, folder, what)
    return names


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """torch.onnx prints its progress and logs warnings (torchvision absent), onnxruntime's quantizer
    advises pre-processing (the dynamo graph is optimized already): not ours to show."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


def _name_axes(path: Path, folder: Path, what: str) -> None:
    """Name the symbolic axes ``batch`` and ``sequence`` (torch.export calls them s0, s1, ...), and refuse
    a graph in which an axis became a constant: it would fail on any other batch or length."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    rename: dict[str, str] = {}
    for value in proto.graph.input:
        for axis, dim in zip(AXES, value.type.tensor_type.shape.dim):
            if not dim.dim_param:
                raise TexttuneError(f"{folder}: {what} exported with a fixed {axis} axis ({dim.dim_value}), "
                                    "which would fail on other inputs; it cannot be exported to ONNX")
            rename[dim.dim_param] = axis
    for value in [*proto.graph.input, *proto.graph.output, *proto.graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in rename:
                dim.dim_param = rename[dim.dim_param]
    onnx.save(proto, str(path))


def _quantize_int8(path: Path) -> None:
    """Dynamic quantization: int8 weights stored, activations quantized per batch at run time (no
    calibration data; the usual choice for transformer encoders on a CPU). Per channel (one scale per
    output column), not onnxruntime's per-tensor default: on MiniLM/TREC-6 it kept 498 of PyTorch's 500 test
    labels instead of 494, with a third of the logit error (docs/design.md, "ONNX (issue 18)")."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    target = path.with_name("model.int8.onnx")
    with _quiet():
        quantize_dynamic(str(path), str(target), weight_type=QuantType.QInt8, per_channel=True)
    target.replace(path)
    config = json.loads((path.parent / CONFIG).read_text(encoding="utf-8"))
    config["texttune_onnx"]["precision"] = "int8"
    config["texttune_onnx"]["quantization"] = {"method": "onnxruntime quantize_dynamic", "weights": "int8, per channel",
                                               "activations": "uint8, scale computed per batch"}
    (path.parent / CONFIG).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def _write_config(model, tokenizer, folder: Path, max_length: int, inputs: list[str], quantize: str) -> None:
    import onnx

    config = model.config.to_dict()
    config["texttune_base"] = None  # the graph holds every weight
    config["texttune_onnx"] = {
        "max_length": max_length, "inputs": inputs, "output": "logits", "axes": list(AXES),
        "precision": "fp32", "quantize": quantize,
        "opset": next(o.version for o in onnx.load(str(folder / ONNX_MODEL), load_external_data=False).opset_import
                      if o.domain in ("", "ai.onnx")),
    }
    (folder / CONFIG).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    tokenizer.model_max_length = max_length  # so the tokenizer alone, with onnxruntime, truncates where the run did
    tokenizer.save_pretrained(folder)


def _versions() -> dict[str, str]:
    found = {}
    for package in ("torch", "transformers", "onnx", "onnxscript", "onnxruntime"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


# --------------------------------------------------------------------------- parity


def run_texts(folder: Path, label_names: list[str]):
    """(texts, pairs) to compare on, the test split (texts, pairs, labels) or None, and where they came
    from: the run's validation split as the run loaded it (a seeded sample of ``PARITY_TEXTS``), or
    ``PROBE_TEXTS`` when there is no run record or its data cannot be read any more."""
    from texttune.runs import CONFIG as RUN_CONFIG
    from texttune.runs import DATA, MODEL

    run_dir = folder.parent
    if folder.name != MODEL or not (run_dir / RUN_CONFIG).is_file():
        return (PROBE_TEXTS, None), None, f"{len(PROBE_TEXTS)} probe texts (no run record beside {folder})"
    try:
        ds = _run_dataset(run_dir, label_names)
    except TexttuneError as err:
        return (PROBE_TEXTS, None), None, f"{len(PROBE_TEXTS)} probe texts (the run's data: {err})"
    frame = ds.splits["validation"]
    sample = frame if len(frame) <= PARITY_TEXTS else frame.sample(n=PARITY_TEXTS, random_state=0)
    note = f"{len(sample)} of the {len(frame)} validation texts of {ds.name}"
    recorded = json.loads((run_dir / DATA).read_text(encoding="utf-8")) if (run_dir / DATA).is_file() else {}
    from texttune.data.tokenize import frame_fingerprint

    if recorded.get("splits", {}).get("validation", {}).get("fingerprint") not in (None, frame_fingerprint(frame)):
        note += " (the data changed since the run: its fingerprint differs from data.json)"
    test = None
    if "test" in ds.splits:
        rows = ds.splits["test"][ds.splits["test"]["label"] >= 0]
        test = (rows["text"].tolist(), rows["text_pair"].tolist() if "text_pair" in rows else None,
                rows["label"].to_numpy())
    return (sample["text"].tolist(), sample["text_pair"].tolist() if "text_pair" in sample else None), test, note


def _run_dataset(run_dir: Path, label_names: list[str]):
    from pydantic import ValidationError

    from texttune.config import DataConfig
    from texttune.data.load import prepare_data
    from texttune.predictors import align_labels
    from texttune.runs import read_run_config

    section = read_run_config(run_dir).get("data") or {}
    try:
        cfg = DataConfig.model_validate(section)
    except ValidationError as err:
        raise TexttuneError(f"{run_dir}: its recorded data config no longer validates ({err.errors()[0]['msg']})") from None
    ds, _, _ = prepare_data(cfg)  # the checks and their policy too: the splits the run trained on
    if "validation" not in ds.splits:
        raise TexttuneError(f"dataset '{ds.name}' has no validation split")
    align_labels(ds, label_names)
    return ds


def _compare(expected: torch.Tensor, got: torch.Tensor) -> dict[str, Any]:
    agree = int((expected.argmax(-1) == got.argmax(-1)).sum())
    return {"texts": len(expected), "max_abs_logit_diff": float((expected - got).abs().max()) if len(expected) else 0.0,
            "labels_agree": agree, "label_agreement": round(agree / max(len(expected), 1), 6)}


def _test_accuracy(test, expected: torch.Tensor, int8: OnnxPredictor) -> dict[str, Any]:
    texts, pairs, labels = test
    got = int8.logits(texts, pairs, batch_size=64)
    torch_acc = float((expected.argmax(-1).numpy() == labels).mean())
    int8_acc = float((got.argmax(-1).numpy() == labels).mean())
    return {"split": "test", "rows": len(labels), "accuracy_torch_fp32": round(torch_acc, 6),
            "accuracy_onnx_int8": round(int8_acc, 6), "accuracy_drop_points": round(100 * (torch_acc - int8_acc), 2),
            "labels_agree": int((expected.argmax(-1) == got.argmax(-1)).sum())}
