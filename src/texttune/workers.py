"""Jobs in worker processes, K at a time: one log file each, one GPU or a share of the cores each.

A job is a Python callable named by module and function, fed one JSON document on stdin, in a fresh
interpreter (``subprocess``, not ``fork``): the environment, ``CUDA_VISIBLE_DEVICES`` included, is set
before the worker imports torch, and nothing of the parent's state (CUDA, threads, open files) leaks
in. Its stdout and stderr go to the job's log, so concurrent jobs never interleave their lines. A
worker that fails with a message it can show (a ``TexttuneError``) ends its log with one marked line
(``report_error``), which the parent reads back.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from texttune.errors import TexttuneError

ERROR_MARK = "texttune-worker-error: "
POLL_S = 0.2
STOP_WAIT_S = 60.0  # after Ctrl-C: time a worker gets to stop cleanly before it is killed


@dataclass
class Job:
    label: str  # named in every message, e.g. "main/full-seed1"
    module: str  # the worker entry: module.function(job_input), in a fresh interpreter
    function: str
    payload: dict[str, Any]
    log: Path


@dataclass
class Slot:
    """The resources of one worker: a GPU (an entry of CUDA_VISIBLE_DEVICES) or a number of CPU threads."""
    env: dict[str, str]
    num_threads: int | None


def slots(parallel: int) -> list[Slot]:
    """K workers' resources. With GPUs, one each (K > GPUs is refused: two runs on one GPU compete for
    its memory and time, and the scores' timing would not be comparable). On CPU the cores are split
    into K groups: K workers with every core each would oversubscribe the machine (a tiny model on two
    threads under contention runs many times slower than on one), so each gets cores // K threads."""
    import torch

    gpus = torch.cuda.device_count()
    if gpus:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        ids = visible.split(",") if visible else [str(i) for i in range(gpus)]
        if parallel > len(ids):
            raise TexttuneError(f"--parallel {parallel}: one GPU per worker, and {len(ids)} are visible")
        return [Slot({"CUDA_VISIBLE_DEVICES": ids[i]}, None) for i in range(parallel)]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = max(1, cores // parallel)
    # OMP/MKL too: tokenization and data loading run before the loop calls torch.set_num_threads.
    env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    return [Slot(dict(env), threads) for _ in range(parallel)]


def report_error(message: str) -> None:
    """In a worker: the last line of its log, the message the parent shows for this job."""
    print(ERROR_MARK + json.dumps(message), flush=True)


def job_input() -> dict[str, Any]:
    """In a worker: its job's payload (read from stdin)."""
    return json.load(sys.stdin)


def _start(job: Job, slot: Slot) -> subprocess.Popen:
    job.log.parent.mkdir(parents=True, exist_ok=True)
    code = f"from {job.module} import {job.function}; {job.function}()"
    with open(job.log, "ab") as log:
        # A session of its own: Ctrl-C at the terminal reaches the parent only, which stops each worker
        # once (a second SIGINT during a worker's clean-up would cut it short).
        process = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=log,
                                   stderr=subprocess.STDOUT, env={**os.environ, **slot.env}, start_new_session=True)
    process.stdin.write(json.dumps(job.payload).encode())
    process.stdin.close()
    return process


def _failure(job: Job, returncode: int) -> TexttuneError:
    """The worker's own message when it left one, else where to look."""
    lines = job.log.read_text(encoding="utf-8", errors="replace").splitlines() if job.log.is_file() else []
    marked = [line for line in lines if line.startswith(ERROR_MARK)]
    if marked:
        error = TexttuneError(f"{job.label}: {json.loads(marked[-1][len(ERROR_MARK):])}")
        error.exit_code = returncode
        return error
    error = TexttuneError(f"{job.label}: the worker failed (exit code {returncode}); its log: {job.log}")
    error.exit_code = 1
    return error


def run_jobs(jobs: list[Job], workers: list[Slot], on_start: Callable[[Job, int], None],
             on_finish: Callable[[Job, float], None]) -> None:
    """Run every job, one per slot at a time (``slots(K)``). After a failure no new job starts; the running ones
    finish (their runs are kept for the next attempt), then the first failure is raised. Ctrl-C stops
    every worker (SIGINT: each run stops as on a terminal) and re-raises KeyboardInterrupt."""
    free, running, failure = list(workers), {}, None
    pending = iter(jobs)
    try:
        for job, process, slot, started in _finished(pending, free, running, lambda: failure is None,
                                                     on_start):
            free.append(slot)
            if process.returncode == 0:
                on_finish(job, time.perf_counter() - started)
            elif failure is None:
                failure = _failure(job, process.returncode)
    except KeyboardInterrupt:
        _stop(running)
        raise
    if failure is not None:
        raise failure


def _finished(pending: Iterator[Job], free: list[Slot], running: dict, may_start: Callable[[], bool],
              on_start: Callable[[Job, int], None]):
    """Starts jobs while slots are free, yields (job, process, slot, start time) as each one ends."""
    while True:
        while free and may_start():
            job = next(pending, None)
            if job is None:
                break
            slot = free.pop(0)
            process = _start(job, slot)
            running[process] = (job, slot, time.perf_counter())
            on_start(job, process.pid)
        if not running:
            return
        time.sleep(POLL_S)
        for process in [p for p in running if p.poll() is not None]:
            job, slot, started = running.pop(process)
            yield job, process, slot, started


def _stop(running: dict) -> None:
    for process in running:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
    deadline = time.monotonic() + STOP_WAIT_S
    for process in running:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
