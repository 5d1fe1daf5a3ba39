"""The benchmark suite: A/B measurements on the same data and machine in one command.

    python -m bench.run --suite cpu [--quick]
    python -m bench.run --suite gpu --model-path DIR      # on a GPU machine

Each measurement runs in its own process (``bench.minilm``), one after another; the suite writes
``bench/results/<date>-<machine>-<suite>.json`` and a Markdown table beside it, with texttune's
ratio to each baseline. See docs/performance.md for what the figures mean.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

# suite -> list of (task, mode, variants, extra args); sizes chosen so the suite ends in its budget.
SUITES: dict[str, list[tuple[str, str, list[str], list[str]]]] = {
    "gpu": [
        ("imdb", "epochs", ["notebook", "trainer", "texttune", "texttune-compile"],
         ["--epochs", "1", "--batch-size", "32", "--eval-batch-size", "256"]),
        ("sst2", "epochs", ["notebook", "trainer", "texttune", "texttune-compile"],
         ["--epochs", "1", "--batch-size", "32", "--eval-batch-size", "256"]),
    ],
    "cpu": [
        ("imdb", "throughput", ["notebook", "trainer", "texttune"],
         ["--batch-size", "16", "--warmup-steps", "2", "--timed-steps", "50", "--max-validation", "256"]),
        ("sst2", "throughput", ["notebook", "trainer", "texttune"],
         ["--batch-size", "32", "--warmup-steps", "3", "--timed-steps", "100", "--max-validation", "872"]),
    ],
}
QUICK = {  # the same jobs, smaller
    "gpu": ["--max-train", "4000", "--max-validation", "1000"],
    "cpu": ["--timed-steps", "25", "--max-validation", "128"],
}


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                            "processor": platform.processor() or platform.machine()}
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


def run_job(task: str, mode: str, variant: str, extra: list[str], model_path: str, log) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "bench.minilm", "--variant", variant, "--task", task, "--mode", mode,
               "--model-path", model_path, "--json", str(out), *extra]
        tic = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        log.write(f"$ {' '.join(cmd)}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}\n")
        log.flush()
        if proc.returncode != 0 or not out.is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            return {"variant": variant, "task": task, "mode": mode, "error": " | ".join(tail)}
        result = json.loads(out.read_text())
        result["process_wall_s"] = round(time.perf_counter() - tic, 1)
        return result


def ratios(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """texttune's train/eval throughput over each baseline's, per task."""
    out: dict[str, Any] = {}
    for task in sorted({r["task"] for r in rows}):
        by = {r["variant"]: r for r in rows if r["task"] == task and "error" not in r}
        for ours in ("texttune", "texttune-compile"):
            if ours not in by:
                continue
            for base in ("notebook", "trainer"):
                if base not in by:
                    continue
                key = f"{task}: {ours} / {base}"
                out[key] = {
                    metric: round(by[ours][metric] / by[base][metric], 2)
                    for metric in ("train_samples_per_s", "window_samples_per_s", "eval_samples_per_s")
                    if by[ours].get(metric) and by[base].get(metric)
                }
    return out


def markdown(result: dict[str, Any]) -> str:
    lines = [f"# Benchmark `{result['suite']}` — {result['date']}", "",
             f"Machine: {result['machine'].get('gpu') or result['machine']['processor']}, "
             f"{result['machine']['cpu_count']} CPU cores; torch {result['machine'].get('torch')}, "
             f"transformers {result['machine'].get('transformers')}.", "",
             f"Command: `{result['command']}`", "",
             "| task | variant | train samples/s | window median | real tokens/s | padding | eval samples/s "
             "| val acc | peak MB | prep s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        if "error" in r:
            lines.append(f"| {r['task']} | {r['variant']} | failed: {r['error'][:80]} |||||||| ")
            continue
        acc = r.get("val_accuracy")
        lines.append(
            f"| {r['task']} | {r['variant']} | {r.get('train_samples_per_s', '')} | "
            f"{r.get('window_samples_per_s') or ''} | {r.get('real_tokens_per_s', '')} | "
            f"{r.get('padding_share', '')} | {r.get('eval_samples_per_s', '')} | "
            f"{'' if acc is None else f'{acc:.4f}'} | {r['peak_memory_mb']} | {r['prep_time_s']} |")
    lines += ["", "Ratios (texttune / baseline):", ""]
    for key, value in result["ratios"].items():
        lines.append(f"- {key}: " + ", ".join(f"{k} {v}×" for k, v in value.items()))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", choices=list(SUITES), required=True)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a first look")
    parser.add_argument("--model-path", default=os.environ.get("BENCH_MINILM", "minilm"))
    parser.add_argument("--only", default=None, help="comma-separated tasks to run (default: all)")
    parser.add_argument("--variants", default=None, help="comma-separated variants (default: the suite's)")
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
        for task, mode, variants, extra in SUITES[args.suite]:
            if args.only and task not in args.only.split(","):
                continue
            for variant in (args.variants.split(",") if args.variants else variants):
                row = run_job(task, mode, variant, extra + (QUICK[args.suite] if args.quick else []),
                              args.model_path, log)
                print(json.dumps({k: row.get(k) for k in ("task", "variant", "train_samples_per_s",
                                                          "window_samples_per_s", "eval_samples_per_s",
                                                          "val_accuracy", "train_time_s", "error")}), flush=True)
                rows.append(row)
    result = {"suite": args.suite, "quick": args.quick, "date": date, "machine": info,
              "command": "python -m bench.run " + " ".join(argv if argv is not None else sys.argv[1:]),
              "rows": rows, "ratios": ratios(rows)}
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    (args.out / f"{stem}.md").write_text(markdown(result), encoding="utf-8")
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
