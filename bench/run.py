"""The benchmark suite: A/B measurements on the same data and machine in one command.

    python -m bench.run --suite cpu [--quick]
    python -m bench.run --suite gpu --model-path DIR      # on a GPU machine

Each measurement runs in its own process (``bench.minilm`` for MiniLM fine-tuning, ``bench.scratch``
for the from-scratch models against fastText and for tokenization), one after another; the suite
writes ``bench/results/<date>-<machine>-<suite>.json`` and Markdown tables beside it, with texttune's
ratio to each baseline. See docs/performance.md for what the figures mean.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]



@dataclass(frozen=True)
class Row:
    """One line of a suite: each variant runs as ``python -m <module> --variant V --task T ... <extra>``."""

    task: str
    mode: str  # bench.minilm's --mode; "scratch" for bench.scratch (which has none)
    variants: list[str]
    extra: list[str]
    module: str = "bench.minilm"
    quick: list[str] | None = field(default=None)  # this row's --quick args (default: QUICK's for its module)


SCRATCH = "bench.scratch"
# suite -> rows; sizes chosen so the suite ends in its budget.
SUITES: dict[str, list[Row]] = {
    "gpu": [
        Row("imdb", "epochs", ["notebook", "trainer", "texttune", "texttune-compile"],
            ["--epochs", "1", "--batch-size", "32", "--eval-batch-size", "256"]),
        Row("sst2", "epochs", ["notebook", "trainer", "texttune", "texttune-compile"],
            ["--epochs", "1", "--batch-size", "32", "--eval-batch-size", "256"]),
    ],
    "cpu": [
        # Throughput rows: T steps' examples, an untimed warm-up epoch over them, then a timed one.
        Row("imdb", "throughput", ["notebook", "trainer", "texttune"],
            ["--batch-size", "16", "--timed-steps", "32", "--max-validation", "256"]),
        Row("sst2", "throughput", ["notebook", "trainer", "texttune"],
            ["--batch-size", "32", "--timed-steps", "80", "--max-validation", "872"]),
        # From scratch against fastText: full splits, median of 3 trainings (the CNN: ~10 min, once).
        Row("imdb", "scratch", ["fasttext", "texttune-bag"], ["--repeats", "3"], SCRATCH),
        Row("imdb", "scratch", ["texttune-cnn"], ["--repeats", "1"], SCRATCH,
            quick=["--repeats", "1", "--max-train", "5000", "--max-test", "5000"]),
        Row("ag_news", "scratch", ["fasttext", "texttune-bag"], ["--repeats", "3"], SCRATCH),
        Row("imdb", "scratch", ["tokenize"], ["--repeats", "3"], SCRATCH),
    ],
}
QUICK: dict[str, dict[str, list[str]]] = {  # the same jobs, smaller: suite -> module -> args
    "gpu": {"bench.minilm": ["--max-train", "4000", "--max-validation", "1000"]},
    "cpu": {"bench.minilm": ["--timed-steps", "25", "--max-validation", "128"],
            SCRATCH: ["--repeats", "1"]},
}


def quick_args(suite: str, row: Row) -> list[str]:
    return row.quick if row.quick is not None else QUICK[suite].get(row.module, [])


def module_variants(module: str) -> tuple[str, ...]:
    import importlib

    return tuple(importlib.import_module(module).VARIANTS)


def machine() -> dict[str, Any]:
    from bench.summarize_runs import machine as host

    info: dict[str, Any] = host()
    try:
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name()
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        pass
    return info


def run_job(task: str, mode: str, variant: str, extra: list[str], model_path: str, log,
            module: str = "bench.minilm") -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", module, "--variant", variant, "--task", task]
        if module == "bench.minilm":
            cmd += ["--mode", mode, "--model-path", model_path]
        cmd += ["--json", str(out), *extra]
        tic = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        log.write(f"$ {' '.join(cmd)}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}\n")
        log.flush()
        if proc.returncode != 0 or not out.is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            return {"variant": variant, "task": task, "mode": mode, "module": module,
                    "error": " | ".join(tail)}
        result = json.loads(out.read_text())
        result["module"] = module
        result["process_wall_s"] = round(time.perf_counter() - tic, 1)
        return result


def is_scratch(row: dict[str, Any]) -> bool:
    return row.get("module") == SCRATCH


def different_timed_examples(rows: list[dict[str, Any]]) -> list[str]:
    """Tasks whose MiniLM variants timed different example sets (or counted their real tokens from
    different lists): their samples/s and tokens/s would compare different work, so the suite fails."""
    problems = []
    for task, mode in sorted({(r["task"], r.get("mode")) for r in rows if not is_scratch(r) and "error" not in r}):
        group = [r for r in rows if (r["task"], r.get("mode")) == (task, mode) and not is_scratch(r)
                 and "error" not in r]
        seen = {(r.get("timed_fingerprint"), r.get("train_samples"), r.get("train_tokens")) for r in group}
        if len(seen) > 1 or any(not r.get("timed_fingerprint") for r in group):
            problems.append(f"{task} ({mode}): " + "; ".join(
                f"{r['variant']} timed {r.get('train_samples')} examples, {r.get('train_tokens')} real tokens, "
                f"set {r.get('timed_fingerprint') or 'unknown'}" for r in group))
    return problems


def interleaved(variants: list[str], rounds: int) -> list[tuple[int, str]]:
    """(round, variant) in run order: A B C, then C B A, ...: drift in the machine's load then falls
    on every variant alike."""
    return [(r, v) for r in range(rounds) for v in (variants if r % 2 == 0 else variants[::-1])]


MEDIAN_OF = ("train_samples_per_s", "real_tokens_per_s", "window_samples_per_s", "eval_samples_per_s")


def median_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (task, mode, variant): the medians of its rounds' throughputs (one round: itself)."""
    import statistics

    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["task"], r.get("mode"), r["variant"], r.get("module")), []).append(r)
    out = []
    for group in groups.values():
        ok = [r for r in group if "error" not in r]
        if len(group) == 1 or not ok:
            out.append(group[0])
            continue
        row = dict(ok[0])
        for metric in MEDIAN_OF:
            values = [r[metric] for r in ok if r.get(metric)]
            row[metric] = round(statistics.median(values), 2) if values else None
        out.append(row)
    return out


def ratios(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """texttune's train/eval throughput over each baseline's, per task; from scratch: texttune's
    accuracy minus fastText's in points, and the ratios of their training times and prediction speeds."""
    out: dict[str, Any] = {}
    for task in sorted({r["task"] for r in rows}):
        scratch = {r["variant"]: r for r in rows if r["task"] == task and "error" not in r and is_scratch(r)}
        for ours in ("texttune-bag", "texttune-cnn"):
            if ours not in scratch or "fasttext" not in scratch:
                continue
            a, b = scratch[ours], scratch["fasttext"]
            if any((a.get("data") or {}).get(split, {}).get("fingerprint")
                   != (b.get("data") or {}).get(split, {}).get("fingerprint") for split in ("train", "test")):
                out[f"{task}: {ours} / fasttext"] = {"note": "not compared: different train/test splits"}
                continue
            value: dict[str, Any] = {}
            if a.get("test_accuracy") is not None and b.get("test_accuracy") is not None:
                value["accuracy_points"] = round(100 * (a["test_accuracy"] - b["test_accuracy"]), 2)
            for metric in ("train_time_s", "predict_samples_per_s"):
                if a.get(metric) and b.get(metric):
                    value[metric] = round(a[metric] / b[metric], 2)
            out[f"{task}: {ours} / fasttext"] = value
        by = {r["variant"]: r for r in rows if r["task"] == task and "error" not in r and not is_scratch(r)}
        for ours in ("texttune", "texttune-compile"):
            if ours not in by:
                continue
            for base in ("notebook", "trainer"):
                if base not in by:
                    continue
                key = f"{task}: {ours} / {base}"
                out[key] = {
                    metric: round(by[ours][metric] / by[base][metric], 2)
                    for metric in ("train_samples_per_s", "real_tokens_per_s", "window_samples_per_s",
                                   "eval_samples_per_s")
                    if by[ours].get(metric) and by[base].get(metric)
                }
    return out


def markdown(result: dict[str, Any]) -> str:
    lines = [f"# Benchmark `{result['suite']}` — {result['date']}", "",
             f"Machine: {result['machine'].get('gpu') or result['machine']['processor']}, "
             f"{result['machine']['cpu_count']} CPU cores; torch {result['machine'].get('torch')}, "
             f"transformers {result['machine'].get('transformers')}.", "",
             f"Command: `{result['command']}`", ""]
    rows = result["rows"]
    minilm = [r for r in rows if not is_scratch(r)]
    tokenize = [r for r in rows if is_scratch(r) and r["variant"] == "tokenize"]
    scratch = [r for r in rows if is_scratch(r) and r["variant"] != "tokenize"]
    if minilm or not rows:
        lines += ["| task | variant | train samples/s | window median | real tokens/s | padding "
                  "| eval samples/s | val acc | peak MB | prep s |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
    rounds = any(r.get("round") for r in minilm)
    for r in minilm:
        variant = f"{r['variant']} (round {r['round'] + 1})" if rounds else r["variant"]
        if "error" in r:
            lines.append(f"| {r['task']} | {variant} | failed: {r['error'][:80]} |||||||| ")
            continue
        acc = r.get("val_accuracy")
        lines.append(
            f"| {r['task']} | {variant} | {r.get('train_samples_per_s', '')} | "
            f"{r.get('window_samples_per_s') or ''} | {r.get('real_tokens_per_s', '')} | "
            f"{r.get('padding_share', '')} | {r.get('eval_samples_per_s', '')} | "
            f"{'' if acc is None else f'{acc:.4f}'} | {r['peak_memory_mb']} | {r['prep_time_s']} |")
    if scratch:
        if minilm:
            lines.append("")
        lines += ["From scratch against fastText (fastText on one thread, texttune with its config's "
                  "train.num_threads; times: median of the runs; texttune's training time is its steps only, "
                  "fastText's is `train_supervised` whole; predict samples/s: raw test text to label, the "
                  "word split included, fastText's `predict` alone on pre-split text in parentheses):", "",
                  "| task | variant | test acc | val acc | train s | train s (runs) | prep s "
                  "| predict samples/s | wall s | peak MB | train/test rows |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in scratch:
            if "error" in r:
                lines.append(f"| {r['task']} | {r['variant']} | failed: {r['error'][:80]} ||||||||| ")
                continue
            acc, val = r.get("test_accuracy"), r.get("val_accuracy")
            predict = r.get("predict_samples_per_s", "")
            if (r.get("settings") or {}).get("predict_pretokenized_samples_per_s"):
                predict = f"{predict} ({r['settings']['predict_pretokenized_samples_per_s']} pre-split)"
            lines.append(
                f"| {r['task']} | {r['variant']} | {'' if acc is None else f'{acc:.4f}'} | "
                f"{'' if val is None else f'{val:.4f}'} | {r.get('train_time_s', '')} | "
                f"{', '.join(str(x) for x in r.get('train_time_runs') or [])} | {r.get('prep_time_s', '')} | "
                f"{predict} | {r.get('wall_time_s', '')} | "
                f"{r['peak_memory_mb']} | "
                f"{r.get('train_samples')}/{r.get('test_samples')} |")
    if tokenize:
        lines += ["", "Tokenization of the train split (median of the runs): cold = empty cache, "
                  "cached = the .npz:", "",
                  "| task | tokenizer | texts | tokens | cold s | cached s | cold texts/s | note |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in tokenize:
            if "error" in r:
                lines.append(f"| {r['task']} | — | failed: {r['error'][:80]} |||||| ")
                continue
            mini, word = r["tokenization"]["minilm"], r["tokenization"]["word"]
            lines.append(f"| {r['task']} | MiniLM WordPiece (max_length {mini['max_length']}) | "
                         f"{r['train_samples']} | {mini['tokens']} | {mini['cold_s']} | {mini['cached_s']} | "
                         f"{mini['cold_texts_per_s']} | "
                         f"tokenizer load {mini['load_tokenizer_s']} s |")
            lines.append(f"| {r['task']} | word (scratch models, max_length {word['max_length']}) | "
                         f"{r['train_samples']} | {word['tokens']} | {word['cold_s']} | {word['cached_s']} | "
                         f"{round(r['train_samples'] / word['cold_s'], 1) if word['cold_s'] else ''} | "
                         f"vocabulary {word['vocab_size']} words, built in {word['vocab_build_s']} s |")
    lines += ["", "Ratios (texttune / baseline" + (", medians of the rounds" if rounds else "") + "):", ""]
    if any(" / fasttext" in key for key in result["ratios"]):
        lines += ["(from scratch: accuracy in points, texttune minus fastText; train_time_s above 1× means "
                  "texttune trains longer; predict_samples_per_s above 1× means texttune predicts faster)",
                  ""]
    for key, value in result["ratios"].items():
        lines.append(f"- {key}: " + ", ".join(
            f"accuracy {v:+.2f} points" if k == "accuracy_points" else v if k == "note" else f"{k} {v}×"
            for k, v in value.items()))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", choices=list(SUITES), required=True)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a first look")
    parser.add_argument("--model-path", default=os.environ.get("BENCH_MINILM", "minilm"))
    parser.add_argument("--only", default=None, help="comma-separated tasks to run (default: all)")
    parser.add_argument("--variants", default=None, help="comma-separated variants (default: the suite's)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="MiniLM rows: run the variants this many times, in reversed order every other "
                        "round; ratios then compare the medians (a shared machine's load drifts)")
    parser.add_argument("--minilm-args", default="",
                        help="arguments appended to every bench.minilm job (the last of an option wins), "
                        "e.g. '--timed-steps 15 --max-validation 128'")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--name", default=None, help="file name stem (default: <date>-<machine>-<suite>)")
    args = parser.parse_args(argv)
    info = machine()
    date = dt.date.today().isoformat()
    machine_tag = (info.get("gpu") or "cpu").lower().replace("nvidia ", "").split()[0]
    stem = args.name or f"{date}-{machine_tag}-{args.suite}{'-quick' if args.quick else ''}"
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    with open(args.out / f"{stem}.log", "w", encoding="utf-8") as log:
        for job in SUITES[args.suite]:
            if args.only and job.task not in args.only.split(","):
                continue
            variants = job.variants
            if args.variants:
                # MiniLM rows run any asked-for variant bench.minilm knows (as before); a from-scratch
                # row only its own (texttune-cnn is IMDB-only, tokenize has a row of its own).
                known = job.variants if job.module == SCRATCH else module_variants(job.module)
                variants = [v for v in args.variants.split(",") if v in known]
            rounds = args.rounds if job.module == "bench.minilm" else 1
            for round_, variant in interleaved(variants, rounds):
                extra = job.extra + (quick_args(args.suite, job) if args.quick else [])
                if job.module == "bench.minilm":
                    extra += shlex.split(args.minilm_args)
                row = run_job(job.task, job.mode, variant, extra, args.model_path, log, job.module)
                row["round"] = round_
                shown = (("task", "variant", "test_accuracy", "val_accuracy", "train_time_s", "prep_time_s",
                          "predict_samples_per_s", "error") if job.module == SCRATCH else
                         ("task", "variant", "train_samples_per_s", "window_samples_per_s",
                          "eval_samples_per_s", "val_accuracy", "train_time_s", "error"))
                print(json.dumps({k: row.get(k) for k in shown}), flush=True)
                rows.append(row)
    problems = different_timed_examples(rows)
    result = {"suite": args.suite, "quick": args.quick, "date": date, "machine": info,
              "command": "python -m bench.run " + shlex.join(argv if argv is not None else sys.argv[1:]),
              "rows": rows, "ratios": {} if problems else ratios(median_rows(rows))}
    if problems:
        result["error"] = "timed example sets differ between variants: " + " | ".join(problems)
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    (args.out / f"{stem}.md").write_text(markdown(result), encoding="utf-8")
    print(markdown(result))
    if problems:
        print("error: the variants timed different examples, no ratio is computed:", *problems, sep="\n  ",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
