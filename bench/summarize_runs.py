"""Collect finished run directories into one results JSON (command, machine, date, metrics).

    python -m bench.summarize_runs RUN_DIR [RUN_DIR ...] --output bench/results/<name>.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

from texttune import runs


def machine() -> dict:
    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count()}
    try:
        mem_kb = int(next(line for line in open("/proc/meminfo") if line.startswith("MemTotal")).split()[1])
        info["memory_gib"] = round(mem_kb / 2**20, 1)
    except (OSError, StopIteration):
        pass
    return info


def summarize(run_dir: Path) -> dict:
    metrics, env = runs.read_json(run_dir, runs.METRICS), runs.read_json(run_dir, runs.ENVIRONMENT)
    data, config = runs.read_json(run_dir, runs.DATA), runs.read_run_config(run_dir)
    row = {
        "run": run_dir.name, "command": env.get("command"), "started": env.get("started"),
        "device": env.get("device"), "git_commit": env.get("git_commit"),
        "dataset": data["name"], "splits": {k: v["rows"] for k, v in data["splits"].items()},
        "model": config["model"], "strategy": config["strategy"], "init_from": config.get("init_from"),
        "seed": config["seed"], "lr": config["train"]["lr"],
        "epochs": metrics["epochs"], "steps": metrics["steps"], "best": metrics["best"],
        "params": metrics["params"], "wall_time_s": metrics["wall_time_s"],
        "train_time_s": metrics["train_time_s"], "train_samples_per_s": metrics["train_samples_per_s"],
        "peak_memory_mb": metrics["peak_memory_mb"],
        "checkpoint_size_mb": metrics.get("checkpoint_size_mb"), "checkpoint": metrics.get("checkpoint"),
    }
    for split in ("validation", "test"):
        if split in metrics:
            m = metrics[split]
            row[split] = {k: m[k] for k in ("accuracy", "f1_macro", "log_loss", "ece", "num_examples")}
            if "f1" in m:
                row[split]["f1"] = m["f1"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--note", default="")
    args = parser.parse_args()
    # The machine that summarised; each run's own device is in its row (a GPU run's host differs).
    result = {"summarised_on": machine(), "note": args.note, "runs": [summarize(r) for r in args.runs]}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["runs"], indent=1)[:3000])


if __name__ == "__main__":
    main()
