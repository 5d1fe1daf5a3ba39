"""CPU inference of one trained run, four ways (five variants), side by side in one process:

- ``pipeline``: ``transformers.pipeline("text-classification")`` on the run's standalone export
  (``texttune export --format hf``: ``BertForSequenceClassification`` for MiniLM with cls pooling and a tanh
  MLP head), or on the run's own folder (texttune's class) when there is none; the report says which;
- ``texttune-torch``: ``texttune.load(run)`` (PyTorch);
- ``onnx-fp32`` and ``onnx-int8``: ``texttune export --format onnx [--quantize int8]`` loaded with the onnx
  backend; ``onnx-int8-per-tensor`` is the same graph quantized with onnxruntime's per-tensor default,
  kept to show why the export quantizes per channel.

Every call is end to end (tokenize, forward, softmax, labels) through each tool's own ``predict`` /
``__call__``. Inputs: TREC questions of exactly 16 tokens, and texts of 128 tokens (TREC questions joined,
truncated at 128 by every variant). Latency: one text per call (p50/p95 over all calls); throughput:
batches of 32 (texts/s, median and best over rounds). Rounds interleave the variants (their order rotates), so a
change of machine load hits each; torch and onnxruntime get the same thread count. Accuracy: the run's
test split at the run's own max_length.

    python -m bench.inference RUN_DIR --threads 1 --rounds 20 --json bench/results/<date>-cpu-inference-1thread.json
    python -m bench.inference RUN_DIR --threads 2 --rounds 30 --json bench/results/<date>-cpu-inference.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def parse(argv: list[str] | None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="A trained classification run (MiniLM on TREC-6 for the docs).")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch and onnxruntime intra-op threads.")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--latency-calls", type=int, default=10, help="Batch-1 calls per variant, length and round.")
    parser.add_argument("--throughput-calls", type=int, default=2, help="Batch-32 calls per variant, length and round.")
    parser.add_argument("--exports", type=Path, default=None, help="Folder for the ONNX exports (default: temporary).")
    parser.add_argument("--note", default="")
    parser.add_argument("--json", type=Path, default=None)
    return parser.parse_args(argv)


def inputs(tokenizer, count: int = 64) -> dict[str, list[str]]:
    """Texts of exactly 16 tokens (real TREC questions) and of 128 tokens (questions joined, cut at 128)."""
    import pandas as pd

    from texttune.config import DataConfig
    from texttune.data.load import data_dir_of

    root = data_dir_of(DataConfig(dataset="trec")) / "trec"
    texts = pd.concat([pd.read_parquet(root / f"{s}.parquet")["text"] for s in ("test", "train")]).tolist()
    short = [t for t in texts if len(tokenizer(t)["input_ids"]) == 16][:count]
    long, start = [], 0
    while len(long) < count:
        joined, end = texts[start], start + 1
        while len(tokenizer(joined)["input_ids"]) < 140:
            joined, end = f"{joined} {texts[end]}", end + 1
        long.append(joined)
        start = end
    return {"16": short, "128": long}


def build_variants(run: Path, exports: Path, threads: int) -> tuple[dict[str, Callable], dict[str, Any]]:
    """name -> predict(texts, batch_size) returning labels; and the export records."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import AutoModelForSequenceClassification, pipeline

    import texttune.models  # noqa: F401  (registers texttune's classifier with the Auto classes)
    from texttune.models.saving import load_tokenizer_from
    from texttune.onnx_backend import EXPORT_RECORD, ONNX_MODEL, OnnxPredictor, export_onnx
    from texttune.predict import load

    records: dict[str, Any] = {}
    for name, quantize in (("onnx-fp32", "none"), ("onnx-int8", "int8")):
        if not (exports / name).exists():
            export_onnx(run, exports / name, quantize)
        records[name] = json.loads((exports / name / EXPORT_RECORD).read_text(encoding="utf-8"))
    per_tensor = exports / "onnx-int8-per-tensor"
    if not per_tensor.exists():
        import shutil

        shutil.copytree(exports / "onnx-fp32", per_tensor)
        quantize_dynamic(str(exports / "onnx-fp32" / ONNX_MODEL), str(per_tensor / ONNX_MODEL),
                         weight_type=QuantType.QInt8)
    source, records["pipeline_model"] = pipeline_model(run, exports)
    pipe = pipeline("text-classification", model=AutoModelForSequenceClassification.from_pretrained(source),
                    tokenizer=load_tokenizer_from(source), device="cpu")
    predictors = {"texttune-torch": load(run, device="cpu", backend="torch")}
    for name in ("onnx-fp32", "onnx-int8", "onnx-int8-per-tensor"):
        predictors[name] = OnnxPredictor.from_path(exports / name, "cpu", num_threads=threads)
    variants: dict[str, Callable] = {
        "pipeline": lambda texts, bs, n: [r["label"] for r in pipe(texts, batch_size=bs, truncation=True, max_length=n)]}
    for name, predictor in predictors.items():
        variants[name] = _predict_with(predictor)
    records["predictors"] = predictors  # for the logit comparison on the test split
    return variants, records


def pipeline_model(run: Path, exports: Path) -> tuple[Path, str]:
    """The folder the pipeline loads, and what it is: the standalone export (``texttune export``, a stock
    transformers class where one computes the model exactly), else the run's own folder (texttune's class,
    registered by ``import texttune.models``)."""
    from texttune.errors import TexttuneError
    from texttune.predict import export_classifier
    from texttune.runs import model_dir_of

    target = exports / "hf"
    try:
        if not target.exists():
            export_classifier(run, target)
    except TexttuneError as err:
        return model_dir_of(run), f"the run's model folder, texttune's class (no standalone export: {err})"
    architecture = json.loads((target / "config.json").read_text(encoding="utf-8"))["architectures"][0]
    return target, f"texttune export --format hf: {architecture}"


def _predict_with(predictor) -> Callable:
    def run(texts: list[str], batch_size: int, max_length: int) -> list[str]:
        predictor.max_length = max_length  # every variant truncates at the same length
        return [r["label"] for r in predictor.predict(texts, batch_size=batch_size)]

    return run


def timed(fn: Callable, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def measure(variants: dict[str, Callable], texts: dict[str, list[str]], args) -> dict[str, Any]:
    names = list(variants)
    latency = {n: {length: [] for length in texts} for n in names}
    throughput = {n: {length: [] for length in texts} for n in names}
    loads: list[float] = []
    for round_ in range(args.rounds):
        order = names[round_ % len(names):] + names[: round_ % len(names)]  # rotate: no fixed position
        for name in order:
            predict = variants[name]
            for length, pool in texts.items():
                n = int(length)
                for text in pool[:3]:
                    predict([text], 1, n)  # warm-up
                latency[name][length] += [timed(predict, [pool[i % len(pool)]], 1, n)
                                          for i in range(args.latency_calls)]
                predict(pool[:32], 32, n)
                calls = [timed(predict, pool[(i % 2) * 32:(i % 2) * 32 + 32], 32, n)
                         for i in range(args.throughput_calls)]
                throughput[name][length].append(32 * len(calls) / sum(calls))
        loads.append(round(os.getloadavg()[0], 2))  # other work on the machine shows here
        print(f"round {round_ + 1}/{args.rounds} done (load {loads[-1]})", file=sys.stderr)
    return {"load_average_1min_per_round": loads} | {name: {length: {
        "latency_batch1_ms": {"min": round(1000 * float(np.min(latency[name][length])), 2),
                              "p50": round(1000 * float(np.percentile(latency[name][length], 50)), 2),
                              "p95": round(1000 * float(np.percentile(latency[name][length], 95)), 2),
                              "calls": len(latency[name][length])},
        "throughput_batch32_texts_per_s": round(float(np.median(throughput[name][length])), 1),
        # The best round: the least disturbed by other work on a shared machine (as timeit's minimum).
        "throughput_batch32_best_round": round(float(np.max(throughput[name][length])), 1),
        "throughput_rounds": [round(v, 1) for v in throughput[name][length]],
    } for length in texts} for name in names}


def accuracy(variants: dict[str, Callable], predictors: dict[str, Any], run: Path) -> dict[str, Any]:
    from texttune.onnx_backend import run_texts
    from texttune.predict import load, model_max_length
    from texttune.runs import model_dir_of

    predictor = load(run, device="cpu", backend="torch")
    folder = model_dir_of(run)
    _, test, _ = run_texts(folder, predictor.label_names)
    texts, _, labels = test  # TREC has no text pairs
    max_length = model_max_length(folder, predictor.tokenizer)
    truth = [predictor.label_names[i] for i in labels]
    result: dict[str, Any] = {"split": "test", "rows": len(truth), "max_length": max_length,
                              "labels_agree_with_texttune_torch": {}}
    predicted = {name: predict(texts, 64, max_length) for name, predict in variants.items()}
    for name, got in predicted.items():
        result[name] = round(float(np.mean([a == b for a, b in zip(got, truth)])), 6)
        same = sum(a == b for a, b in zip(got, predicted["texttune-torch"]))
        result["labels_agree_with_texttune_torch"][name] = same
    reference = predictors["texttune-torch"].logits(texts)
    result["max_abs_logit_diff_vs_texttune_torch"] = {
        name: round(float((predictor.logits(texts) - reference).abs().max()), 6)
        for name, predictor in predictors.items() if name != "texttune-torch"}
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    import torch

    torch.set_num_threads(args.threads)  # before any work; onnxruntime gets the same number
    torch.set_num_interop_threads(1)
    from bench.run import machine
    from texttune.runs import quiet_libraries

    quiet_libraries()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        exports = args.exports or Path(tmp)
        variants, records = build_variants(args.run, exports, args.threads)
        from texttune.predict import load

        texts = inputs(load(args.run, backend="torch").tokenizer)
        agree = {n: variants[n](texts["16"], 32, 16) for n in variants}
        results = measure(variants, texts, args)
        predictors = records.pop("predictors")
        acc = accuracy(variants, predictors, args.run)
    import onnxruntime

    loads = results.pop("load_average_1min_per_round")
    short = {n: r["16"]["throughput_batch32_texts_per_s"] for n, r in results.items()}
    best = {n: r["16"]["throughput_batch32_best_round"] for n, r in results.items()}
    speedup = short["onnx-int8"] / short["pipeline"]
    drop = 100 * (acc["texttune-torch"] - acc["onnx-int8"])
    report = {
        "benchmark": "inference", "date": dt.date.today().isoformat(),
        "command": "python -m bench.inference " + shlex.join(argv if argv is not None else sys.argv[1:]),
        "machine": {**machine(), "onnxruntime": onnxruntime.__version__,
                    "load_average_1min": {"before": round(load_before, 2), "per_round": loads,
                                          "after": round(os.getloadavg()[0], 2)}},
        "note": args.note, "threads": args.threads, "run": str(args.run),
        "pipeline_model": records.pop("pipeline_model"),
        "inputs": {k: {"texts": len(v), "tokens": int(k)} for k, v in texts.items()},
        "labels_agree_with_pipeline_16": {n: sum(a == b for a, b in zip(agree[n], agree["pipeline"])) for n in agree},
        "results": results, "test_accuracy": acc,
        "exports": {n: {"parity": r["parity"], "test": r.get("test"), "size_mb": r["size_mb"]} for n, r in records.items()},
        "targets": {
            "int8_vs_pipeline_short_throughput": round(speedup, 2), "target_speedup": 2.5,
            "int8_vs_pipeline_short_throughput_best_rounds": round(best["onnx-int8"] / best["pipeline"], 2),
            "int8_accuracy_drop_points": round(drop, 2), "target_drop_points": 0.5,
            "met": bool(speedup >= 2.5 and drop <= 0.5),
        },
    }
    text = json.dumps(report, indent=2) + "\n"
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
