"""Data-parallel scaling of a classification run: samples/s of 1 process against N processes on the
same data and the same global batch, one after another in one command.

    python -m bench.scaling --processes 2 --global-batch 16 --threads 1 --warmup-steps 5 --timed-steps 40 \\
        --set model.path=minilm --set data.dataset=trec --set data.max_train_samples=400

Each variant is a whole ``texttune run`` (``runs.run_task``) in processes of its own: ``1`` as one
process with per-device batch G, ``N`` under ``torchrun --nproc_per_node N`` with per-device batch
G / N (on CPU: gloo, ``--threads`` torch threads per process; on a GPU machine N defaults to every
GPU). The main process times T optimizer steps after W untimed warm-up steps with a callback; DDP
all-reduces the gradients at every step, so its clock is the whole group's. Evaluation runs once, after
the timed steps. Writes ``bench/results/<date>-<device>-scaling.json``: the command, the machine,
samples/s and seconds per step of each variant (median over ``--repeats``, variants interleaved so a
drift in machine load hits both) and the efficiency, N-process samples/s / (N × 1-process samples/s).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------- one variant (the worker)


def worker(json_out: Path, warmup: int, timed: int, overrides: list[str]) -> None:
    """One run of ``texttune run`` with ``overrides``; the main process writes its timing to ``json_out``."""
    from texttune import runs
    from texttune.tasks.classify import CLASSIFY
    from texttune.training.callbacks import Callback

    class StepClock(Callback):
        """Wall time of the optimizer steps warmup+1 .. warmup+timed (no evaluation falls in between)."""

        def __init__(self) -> None:
            self.marks: dict[int, float] = {}

        def on_step_end(self, trainer) -> None:
            if trainer.state.global_step in (warmup, warmup + timed):
                self.marks[trainer.state.global_step] = time.perf_counter()

    clock = StepClock()
    result = runs.run_task(CLASSIFY, CLASSIFY.load_config(None, overrides), callbacks=[clock])
    if not runs.is_main_process():
        return
    elapsed = clock.marks[warmup + timed] - clock.marks[warmup]
    metrics = result.metrics
    samples = timed * metrics["global_batch_size"]
    json_out.write_text(json.dumps({
        "world_size": metrics["world_size"], "global_batch_size": metrics["global_batch_size"],
        "timed_steps": timed, "timed_s": round(elapsed, 3), "samples_per_s": round(samples / elapsed, 2),
        "seconds_per_step": round(elapsed / timed, 4),
        "run_train_samples_per_s": metrics["train_samples_per_s"],  # the whole run, warm-up included
        "validation_accuracy": metrics["validation"]["accuracy"], "peak_memory_mb": metrics["peak_memory_mb"],
    }), encoding="utf-8")


# ---------------------------------------------------------------------------- the comparison


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(processes: int, args, output: Path, json_out: Path) -> list[str]:
    """The command line of one variant."""
    per_device = args.global_batch // processes
    overrides = [*args.set, f"train.per_device_batch_size={per_device}",
                 f"train.max_steps={args.warmup_steps + args.timed_steps}",
                 f"train.eval_every_steps={args.warmup_steps + args.timed_steps}", f"output_dir={output}"]
    if args.threads is not None:
        overrides.append(f"train.num_threads={args.threads}")
    worker_args = ["-m", "bench.scaling", "--worker", str(json_out), "--warmup-steps", str(args.warmup_steps),
                   "--timed-steps", str(args.timed_steps),
                   *[a for item in overrides for a in ("--set", item)]]
    if processes == 1:
        return [sys.executable, *worker_args]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
            "--master_addr", "127.0.0.1", "--master_port", str(free_port()), *worker_args]


def run_variant(processes: int, args, log) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        json_out = Path(tmp) / "timing.json"
        cmd = launch(processes, args, Path(tmp) / "runs", json_out)
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        if args.threads is not None:  # torchrun would set 1 anyway; the 1-process variant gets the same
            env["OMP_NUM_THREADS"] = str(args.threads)
        load_before, tic = os.getloadavg()[0], time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
        log.write(f"$ {' '.join(cmd)}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}\n")
        log.flush()
        if proc.returncode != 0 or not json_out.is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise SystemExit(f"{processes} process(es) failed: {' | '.join(tail)}")
        out = json.loads(json_out.read_text(encoding="utf-8"))
        out["process_wall_s"] = round(time.perf_counter() - tic, 1)
        # Other work on the machine competes with N processes first: the load says whether it did.
        out["load_average_1min"] = {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)}
        return out


def summarize(processes: int, repeats: list[dict[str, Any]]) -> dict[str, Any]:
    """A variant: the median samples/s and seconds per step over its repeats, and every repeat."""
    return {"processes": processes, "per_device_batch_size": repeats[0]["global_batch_size"] // processes,
            "samples_per_s": round(statistics.median(r["samples_per_s"] for r in repeats), 2),
            "seconds_per_step": round(statistics.median(r["seconds_per_step"] for r in repeats), 4),
            "repeats": repeats}


def default_processes() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 2


def parse(argv: list[str] | None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=None, help="N (default: every GPU; on CPU 2)")
    parser.add_argument("--global-batch", type=int, default=16, help="examples per optimizer step, all processes")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per process (CPU)")
    parser.add_argument("--warmup-steps", type=int, default=5)
    parser.add_argument("--timed-steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=1, help="runs of each variant (the median is reported)")
    parser.add_argument("--set", action="append", default=[], help="texttune --set overrides (model, data)")
    parser.add_argument("--note", default=None, help="conditions of the measurement, kept in the JSON")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--worker", type=Path, default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.worker is not None:
        worker(args.worker, args.warmup_steps, args.timed_steps, args.set)
        return 0
    from bench.run import machine

    n = args.processes or default_processes()
    if args.global_batch % n:
        raise SystemExit(f"--global-batch {args.global_batch} must divide by {n} processes")
    info = machine()
    tag = (info.get("gpu") or "cpu").lower().replace("nvidia ", "").split()[0]
    stem = f"{dt.date.today().isoformat()}-{tag}-scaling"
    args.out.mkdir(parents=True, exist_ok=True)
    timings: dict[int, list[dict[str, Any]]] = {1: [], n: []}
    with open(args.out / f"{stem}.log", "w", encoding="utf-8") as log:
        for _ in range(args.repeats):
            for processes in (1, n):
                timings[processes].append(run_variant(processes, args, log))
                print(json.dumps({"processes": processes, **timings[processes][-1]}), flush=True)
    one, many = summarize(1, timings[1]), summarize(n, timings[n])
    result = {
        "benchmark": "scaling", "date": dt.date.today().isoformat(), "machine": info, "note": args.note,
        "command": "python -m bench.scaling " + shlex.join(argv if argv is not None else sys.argv[1:]),
        "global_batch_size": args.global_batch, "warmup_steps": args.warmup_steps,
        "timed_steps": args.timed_steps, "threads_per_process": args.threads, "variants": [one, many],
        "speedup": round(many["samples_per_s"] / one["samples_per_s"], 3),
        "efficiency": round(many["samples_per_s"] / (n * one["samples_per_s"]), 3),
    }
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({k: result[k] for k in ("speedup", "efficiency")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
