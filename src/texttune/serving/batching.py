"""Micro-batching: requests that arrive together share one forward pass.

Each HTTP request becomes a job (its inputs and a future). A collector task on the event loop takes
the oldest job, waits up to ``max_wait_ms`` after that job arrived for more, until the waiting jobs hold
``max_batch_size`` inputs, and runs the batch in the one model thread, off the event loop. While the
model runs, new jobs queue; a batch whose oldest job has already waited longer starts at once, so
under load batches fill without any extra wait. Results go back to each job's future in order; a job
that fails (an input too long) fails alone, and when the whole forward pass raises, each job is run
again by itself, so that one bad input cannot fail the requests it happened to share a batch with.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from texttune.serving.errors import ServeError

logger = logging.getLogger("texttune.serve")

# run(payloads) -> one outcome per payload: a result, or an exception for that payload alone
RunBatch = Callable[[list[Any]], list[Any]]


@dataclass
class Job:
    payload: Any
    size: int  # inputs, what max_batch_size counts
    future: asyncio.Future
    arrived: float  # loop.time()


@dataclass
class BatchStats:
    """Counters for /info: how requests were grouped."""

    requests: int = 0
    inputs: int = 0
    batches: int = 0
    batches_of_several_requests: int = 0
    largest_batch_requests: int = 0
    largest_batch_inputs: int = 0
    failed_batches: int = 0
    model_busy_s: float = 0.0  # wall time spent in run(): with the uptime, how idle the model thread was
    queued_requests: int = 0  # now, waiting for the model
    queued_inputs: int = 0
    batch_sizes: dict[int, int] = field(default_factory=dict)  # inputs in a batch -> how many batches

    def record(self, batch: list[Job]) -> None:
        size = sum(job.size for job in batch)
        self.batches += 1
        self.requests += len(batch)
        self.inputs += size
        self.batches_of_several_requests += len(batch) > 1
        self.largest_batch_requests = max(self.largest_batch_requests, len(batch))
        self.largest_batch_inputs = max(self.largest_batch_inputs, size)
        self.batch_sizes[size] = self.batch_sizes.get(size, 0) + 1


class MicroBatcher:
    """Groups submitted jobs into batches for ``run``, which is called in one worker thread."""

    def __init__(self, run: RunBatch, max_batch_size: int, max_wait_ms: float, max_queued_inputs: int) -> None:
        self.run = run
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000
        self.max_queued_inputs = max_queued_inputs
        self.stats = BatchStats()
        self._pending: deque[Job] = deque()
        self._arrived = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task | None = None
        # One thread: the model is not shared between threads, and torch parallelises inside it.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="texttune-model")

    @property
    def alive(self) -> bool:
        return self._task is not None and not self._task.done()

    def run_in_model_thread(self, function: Callable, *args: Any) -> Any:
        """``function(*args)`` in the model thread, now (before serving: the warm-up, whose memory then
        belongs to the thread that will use it; glibc gives each thread its own arena)."""
        return self._executor.submit(function, *args).result()

    def stop_model_thread(self) -> None:
        """Before serving started (the address could not be bound): end the thread the warm-up started."""
        self._executor.shutdown(wait=True)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._collect(), name="texttune-batcher")

    async def submit(self, payload: Any, size: int) -> Any:
        """The outcome of ``run`` for this payload, once its batch has run."""
        if self._closing or not self.alive:
            raise ServeError(503, "unhealthy", "the server is shutting down")
        if self._queued_inputs() + size > self.max_queued_inputs and self._pending:
            raise ServeError(429, "overloaded", "Model is overloaded: too many inputs are waiting; retry later")
        loop = asyncio.get_running_loop()
        job = Job(payload, size, loop.create_future(), loop.time())
        self._pending.append(job)
        self._arrived.set()
        return await job.future

    async def close(self) -> None:
        """Refuse new jobs, run every waiting one (no more waiting for company), stop the thread."""
        self._closing = True
        self._arrived.set()
        if self._task is not None:
            await self._task
        self._executor.shutdown(wait=True)

    def snapshot(self) -> dict[str, Any]:
        self.stats.queued_requests = len(self._pending)
        self.stats.queued_inputs = self._queued_inputs()
        data = dict(self.stats.__dict__)
        data["model_busy_s"] = round(self.stats.model_busy_s, 3)
        data["batch_sizes"] = {str(k): v for k, v in sorted(self.stats.batch_sizes.items())}
        return data

    # ----------------------------------------------------------------------- the collector task

    def _queued_inputs(self) -> int:
        return sum(job.size for job in self._pending)

    async def _collect(self) -> None:
        try:
            while True:
                batch = await self._next_batch()
                if not batch:
                    if self._closing and not self._pending:
                        return
                    continue
                await self._run(batch)
        finally:  # cancelled, or a bug: no request may wait forever
            for job in self._pending:
                if not job.future.done():
                    job.future.set_exception(ServeError(503, "unhealthy", "the server is shutting down"))
            self._pending.clear()

    async def _next_batch(self) -> list[Job]:
        loop = asyncio.get_running_loop()
        while not self._pending:
            if self._closing:
                return []
            self._arrived.clear()
            await self._arrived.wait()
        deadline = self._pending[0].arrived + self.max_wait
        while self._queued_inputs() < self.max_batch_size and not self._closing:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                break
        batch: list[Job] = []
        size = 0
        # Oldest first; a job that would overflow the batch waits for the next one (a job larger than
        # max_batch_size runs alone: run() splits it into forward passes of max_batch_size).
        while self._pending and (not batch or size + self._pending[0].size <= self.max_batch_size):
            job = self._pending.popleft()
            if job.future.done():  # cancelled: the request is gone
                continue
            batch.append(job)
            size += job.size
        return batch

    async def _run(self, batch: list[Job]) -> None:
        self.stats.record(batch)
        try:
            outcomes = await self._call(batch)
        except Exception:  # logged; then each request again alone, so that one bad input fails only its own
            logger.exception("a batch of %d requests failed", len(batch))
            self.stats.failed_batches += 1
            outcomes = [await self._alone(job) for job in batch] if len(batch) > 1 else [_internal_error()]
        for job, outcome in zip(batch, outcomes):
            if job.future.done():
                continue
            if isinstance(outcome, BaseException):
                job.future.set_exception(outcome)
            else:
                job.future.set_result(outcome)

    async def _call(self, batch: list[Job]) -> list[Any]:
        loop = asyncio.get_running_loop()
        start = time.perf_counter()
        try:
            outcomes = await loop.run_in_executor(self._executor, self.run, [job.payload for job in batch])
        finally:
            self.stats.model_busy_s += time.perf_counter() - start
        if len(outcomes) != len(batch):
            raise RuntimeError(f"run returned {len(outcomes)} outcomes for {len(batch)} payloads")
        return outcomes

    async def _alone(self, job: Job) -> Any:
        try:
            return (await self._call([job]))[0]
        except Exception:
            logger.exception("a request failed alone")
            return _internal_error()


def _internal_error() -> ServeError:
    return ServeError(500, "backend", "internal server error; see the server's log")
