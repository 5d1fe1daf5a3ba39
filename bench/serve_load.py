"""Load on ``texttune serve``: C concurrent clients for D seconds against in-process batch prediction.

    python -m bench.serve_load --run /work/benchruns/runs/<date>-quickstart-trec-minilm --clients 32 --duration 60

1. In-process: ``texttune.load(run).predict(texts, batch_size=B)`` over the TREC test texts (one untimed
   pass, then ``--baseline-passes`` timed passes; the median is kept) in this process, with the same torch
   thread count the server gets, before the server starts and again after it stopped: the machine is
   shared, so the comparison uses the mean of the two. Also texts per CPU-second of this process, a figure
   the machine's other load moves less, and the same texts in the clients' order in consecutive batches
   of B (``logits`` per batch, without predict's sort of all texts by length): what length sorting alone
   is worth, since a server cannot sort texts that have not arrived yet.
2. The server: ``texttune serve RUN --port 0 --max-batch-size B --max-wait-ms W`` in a subprocess; its RSS
   is read (psutil) when /health first answers, after ``--warmup`` seconds of untimed load, every 5 s of
   the timed load and at its end; the CPU time of its threads (the event loop apart) over the timed load; its
   /info counters before and after (batches, inputs, the model thread's busy time).
3. The load: C asyncio clients (one httpx.AsyncClient, keep-alive, one connection each), each sending
   one TREC test text per request (``{"inputs": text}``), the next as soon as the last is answered, for D
   seconds. Every answer is checked (status 200, every label present); anything else is an error.
   Latency is per request, from send to parsed answer.

Writes ``bench/results/<date>-cpu-serve-load.json`` (``--json`` to choose): the command, the machine, the
load average before and after, the baseline, requests/s, latency percentiles, errors, the server's
RSS and its batching counters (/info), and the ratio of served to in-process throughput. The clients
share the machine with the server (on this 2-core VM: the same two cores), so the ratio includes what
the load generator itself costs.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import glob
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RUNS = "/work/benchruns/runs/*-quickstart-trec-minilm"


def newest_run(pattern: str) -> Path:
    runs = sorted(Path(p) for p in glob.glob(pattern) if (Path(p) / "metrics.json").is_file())
    if not runs:
        raise SystemExit(f"no finished run (with metrics.json) matches {pattern}")
    return runs[-1]


def trec_texts() -> list[str]:
    import pandas as pd

    data = Path(os.environ.get("TEXTTUNE_DATA_DIR", ROOT.parent / "shared" / "data"))
    return pd.read_parquet(data / "trec" / "test.parquet")["text"].astype(str).tolist()


# ---------------------------------------------------------------------------- 1. in-process baseline


def baseline(predictor, texts: list[str], batch_size: int, passes: int) -> dict[str, Any]:
    """``predict(texts, batch_size)``: median texts/s over ``passes`` timed passes, and texts per CPU-second
    of this process (which does nothing else meanwhile), a figure the machine's other load moves less.
    ``arrival_order``: the same texts as the server sees them, consecutive batches in the clients' order
    (``logits`` per batch), without predict's sort of all texts by length, so more padding per batch."""
    import torch

    def arrival_order() -> None:
        for start in range(0, len(texts), batch_size):
            predictor.logits(texts[start : start + batch_size], batch_size=batch_size)

    predictor.predict(texts, batch_size=batch_size)  # untimed: lazy initialisation, allocator warm-up
    result = {"texts": len(texts), "batch_size": batch_size, "passes": passes,
              "torch_threads": torch.get_num_threads()}
    result.update(_timed(lambda: predictor.predict(texts, batch_size=batch_size), len(texts), passes))
    result["arrival_order"] = _timed(arrival_order, len(texts), passes)
    result["load_average_1min"] = round(os.getloadavg()[0], 2)
    return result


def _timed(function, texts: int, passes: int) -> dict[str, Any]:
    import psutil

    me = psutil.Process()
    seconds, cpu = [], []
    for _ in range(passes):
        before, tic = me.cpu_times(), time.perf_counter()
        function()
        seconds.append(time.perf_counter() - tic)
        after = me.cpu_times()
        cpu.append(after.user + after.system - before.user - before.system)
    return {"seconds_per_pass": [round(s, 3) for s in seconds],
            "texts_per_s": round(texts / statistics.median(seconds), 1),
            "texts_per_cpu_s": round(texts / statistics.median(cpu), 1)}


# ---------------------------------------------------------------------------- 2. the server


def start_server(run: Path, log_path: Path, options: list[str],
                 env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    command = [sys.executable, "-m", "texttune.cli", "serve", str(run), "--port", "0", *options]
    with log_path.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    deadline = time.monotonic() + 180
    import httpx

    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with {process.returncode}:\n{log_path.read_text()}")
        match = re.search(r"on (http://127\.0\.0\.1:\d+) ", log_path.read_text(errors="replace"))
        if match:
            try:
                if httpx.get(f"{match.group(1)}/health", timeout=2).status_code == 200:
                    return process, match.group(1)
            except httpx.TransportError:
                pass
        time.sleep(0.2)
    process.kill()
    raise SystemExit(f"the server did not answer /health within 180 s:\n{log_path.read_text()}")


def rss_mb(pid: int) -> float:
    import psutil

    return round(psutil.Process(pid).memory_info().rss / 2**20, 1)


def cpu_seconds(pid: int) -> dict[str, float]:
    """CPU time of the server's main thread (the event loop: HTTP, validation, JSON, the log) and of all
    its other threads (the model thread, torch's and the tokenizer's pools), and of this process (the
    clients)."""
    import psutil

    threads = psutil.Process(pid).threads()
    main = sum(t.user_time + t.system_time for t in threads if t.id == pid)
    others = sum(t.user_time + t.system_time for t in threads if t.id != pid)
    me = psutil.Process().cpu_times()
    return {"server_event_loop": main, "server_model_and_pools": others, "clients": me.user + me.system}


# ---------------------------------------------------------------------------- 3. the load


async def load(url: str, texts: list[str], labels: int, clients: int, seconds: float,
               pid: int | None = None) -> dict[str, Any]:
    """``pid``: the server's, to sample its RSS every 5 s meanwhile (``rss_mb_every_5_s``)."""
    import httpx

    latencies: list[float] = []
    samples: list[float] = []
    errors: dict[str, int] = {}
    stop = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def client(k: int, session: httpx.AsyncClient) -> None:
        i = k
        while time.perf_counter() < stop:
            text = texts[i % len(texts)]
            i += clients
            tic = time.perf_counter()
            try:
                response = await session.post(f"{url}/predict", json={"inputs": text})
                ok = response.status_code == 200 and len(response.json()) == labels
                problem = None if ok else f"status {response.status_code}"
            except (httpx.HTTPError, ValueError) as error:
                problem = type(error).__name__
            if problem is None:
                latencies.append(time.perf_counter() - tic)
            else:
                errors[problem] = errors.get(problem, 0) + 1

    async def sample_rss() -> None:
        while pid is not None and time.perf_counter() < stop:
            await asyncio.sleep(min(5.0, max(0.0, stop - time.perf_counter())))
            samples.append(rss_mb(pid))

    async with httpx.AsyncClient(limits=limits, timeout=60) as session:
        tic = time.perf_counter()
        await asyncio.gather(sample_rss(), *(client(k, session) for k in range(clients)))
        elapsed = time.perf_counter() - tic
    latencies.sort()

    def pct(q: float) -> float:
        return round(1000 * latencies[min(len(latencies) - 1, int(q * len(latencies)))], 1) if latencies else 0.0

    return {"clients": clients, "seconds": round(elapsed, 2), "requests": len(latencies) + sum(errors.values()),
            "ok": len(latencies), "errors": sum(errors.values()), "error_kinds": errors,
            "requests_per_s": round(len(latencies) / elapsed, 1),
            "latency_ms": {"p50": pct(0.50), "p95": pct(0.95), "p99": pct(0.99),
                           "max": round(1000 * latencies[-1], 1) if latencies else 0.0},
            **({"rss_mb_every_5_s": samples} if pid is not None else {})}


# ---------------------------------------------------------------------------- the whole benchmark


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", default=None, help=f"run directory (default: the newest {DEFAULT_RUNS})")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of timed load")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of untimed load first")
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads, server and baseline (default: torch's)")
    parser.add_argument("--baseline-passes", type=int, default=3)
    parser.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE",
                        help="an environment variable for the server process only (repeatable), e.g. "
                             "MALLOC_MMAP_THRESHOLD_=131072")
    parser.add_argument("--note", default="")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    import torch

    import texttune
    from bench.run import machine

    run = Path(args.run) if args.run else newest_run(DEFAULT_RUNS)
    texts = trec_texts()
    load_before = os.getloadavg()[0]
    if args.threads:
        torch.set_num_threads(args.threads)
    predictor = texttune.load(run)
    print(f"in-process: texttune.load({run.name}).predict, {len(texts)} TREC test texts, batch {args.max_batch_size}")
    base = {"before": baseline(predictor, texts, args.max_batch_size, args.baseline_passes)}
    print(f"  before the load: {base['before']['texts_per_s']} texts/s")

    options = ["--max-batch-size", str(args.max_batch_size), "--max-wait-ms", str(args.max_wait_ms)]
    options += ["--num-threads", str(args.threads)] if args.threads else []
    log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"serve-load-{os.getpid()}.log"
    server_env = dict(item.split("=", 1) for item in args.server_env)
    process, url = start_server(run, log_path, options, server_env)
    try:
        import httpx

        labels = len(httpx.get(f"{url}/info", timeout=10).json()["labels"])
        rss = {"ready": rss_mb(process.pid)}
        if args.warmup > 0:
            asyncio.run(load(url, texts, labels, args.clients, args.warmup))
        rss["after_warmup"] = rss_mb(process.pid)
        print(f"load: {args.clients} clients for {args.duration:g} s against {url}")
        cpu_before, stats_before = cpu_seconds(process.pid), httpx.get(f"{url}/info", timeout=10).json()["stats"]
        served = asyncio.run(load(url, texts, labels, args.clients, args.duration, process.pid))
        cpu_after = cpu_seconds(process.pid)
        rss["end"] = rss_mb(process.pid)
        cpu = {key: round((cpu_after[key] - cpu_before[key]) / served["seconds"], 3) for key in cpu_after}
        stats = httpx.get(f"{url}/info", timeout=10).json()["stats"]
        timed = {key: stats[key] - stats_before[key] for key in ("batches", "inputs", "model_busy_s")}
    finally:
        process.terminate()
        try:
            code = process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            code = process.wait(timeout=10)
    base["after"] = baseline(predictor, texts, args.max_batch_size, args.baseline_passes)
    print(f"  after the load: {base['after']['texts_per_s']} texts/s")
    # The machine is shared: in-process throughput is taken before and after the load, and compared by its mean.
    base["texts_per_s"] = round((base["before"]["texts_per_s"] + base["after"]["texts_per_s"]) / 2, 1)
    base["texts_per_cpu_s"] = round((base["before"]["texts_per_cpu_s"] + base["after"]["texts_per_cpu_s"]) / 2, 1)
    served["inputs_per_server_cpu_s"] = round(served["requests_per_s"] / (cpu["server_event_loop"]
                                                                          + cpu["server_model_and_pools"]), 1)
    log = log_path.read_text(errors="replace")
    ratio = served["requests_per_s"] / base["texts_per_s"]
    growth = {"ready_to_end_pct": round(100 * (rss["end"] / rss["ready"] - 1), 1),
              "after_warmup_to_end_pct": round(100 * (rss["end"] / rss["after_warmup"] - 1), 1)}
    result = {
        "benchmark": "serve-load",
        "date": dt.date.today().isoformat(),
        "machine": machine(),
        "note": args.note,
        "command": "python -m bench.serve_load " + shlex.join(argv if argv is not None else sys.argv[1:]),
        "run": str(run),
        "load_average_1min": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
        "cpu_cores_busy_during_load": cpu,  # CPU seconds per second of timed load
        "server": {"options": options, "env": server_env, "exit_code": code, "rss_mb": rss, "rss_growth": growth,
                   "tracebacks_in_log": log.count("Traceback"),
                   "timed_batches": timed["batches"],
                   "timed_mean_batch_inputs": round(timed["inputs"] / max(timed["batches"], 1), 2),
                   # the share of the timed load the model thread spent in forward passes
                   "timed_model_busy_share": round(timed["model_busy_s"] / served["seconds"], 3),
                   "largest_batch_inputs": stats["largest_batch_inputs"],
                   "batch_sizes_whole_run": stats["batch_sizes"]},
        "in_process": base,
        "served": served,
        "served_over_in_process": round(ratio, 3),
        # against the same batches without predict's global length sort (what a server can do at best)
        "served_over_in_process_arrival_order": round(
            served["requests_per_s"] / ((base["before"]["arrival_order"]["texts_per_s"]
                                         + base["after"]["arrival_order"]["texts_per_s"]) / 2), 3),
        # the same comparison per CPU-second (server: all its threads), which the machine's other load moves less
        "served_over_in_process_per_cpu_s": round(served["inputs_per_server_cpu_s"] / base["texts_per_cpu_s"], 3),
        "targets": {"throughput_ratio_at_least": 0.8, "rss_growth_pct_below": 10, "errors": 0,
                    "met": {"throughput": ratio >= 0.8, "rss_growth": growth["ready_to_end_pct"] < 10,
                            "errors": served["errors"] == 0}},
    }
    out = args.json or ROOT / "bench" / "results" / f"{result['date']}-cpu-serve-load.json"
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"served {served['requests_per_s']} requests/s (p50 {served['latency_ms']['p50']} ms, p95 "
          f"{served['latency_ms']['p95']} ms, {served['errors']} errors) = {ratio:.2f} x in-process "
          f"{base['texts_per_s']} texts/s; RSS {rss['ready']} -> {rss['end']} MB; mean batch "
          f"{result['server']['timed_mean_batch_inputs']}, model busy {result['server']['timed_model_busy_share']:.0%}; written to {out}")


if __name__ == "__main__":
    main()
