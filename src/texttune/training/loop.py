"""The single training loop every model × strategy goes through, so comparisons are fair.

Read ``Trainer.fit`` top to bottom: fetch batch → forward → backward (accumulate) → clip → step →
schedule → log → evaluate / checkpoint / early-stop. Accelerate places the model and batches on the
device and runs mixed precision; the position in the data is a pure function of (seed, epoch, batch)
so a run saved at an evaluation resumes exactly where it was (see ``checkpoint.py``).

Data parallelism (``torchrun --nproc_per_node N``): ``train.per_device_batch_size`` is per process, so
a step trains on a global batch of per_device × N examples. The global batches are those of one
process with batch size per_device × N (``epoch_batches``, a pure function of seed and epoch); rank r
takes every N-th example of each (``_share``), so resume still needs only (epoch, batch) and N
processes track one process with the global batch size. DDP (``accelerator.prepare``) averages the
gradients; only the main process writes checkpoints and records.

Token budgets (``train.batch_tokens``): batches hold as many examples as fit the budget in padded
tokens (rows × longest row) per process (``epoch_token_batches``, also a pure function of seed and
epoch), so their sizes vary; each micro-batch's loss is weighted by its share of the examples of its
optimizer step (``_step_weight``), so a step's gradient stays the mean over its examples, and the
schedule's length is counted from the epochs' own batches.
"""

from __future__ import annotations

import logging
import math
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from torch import nn

from texttune.config import TrainConfig
from texttune.data.tokenize import Encoded, epoch_batches, epoch_token_batches, padded_tokens
from texttune.errors import TexttuneError
from texttune.evaluation.metrics import is_better
from texttune.models.saving import check_safetensors, reading
from texttune.training.callbacks import Callback, MetricsFile
from texttune.training.checkpoint import (
    BEST,
    LAST,
    load_model_weights,
    load_training_state,
    save_model_weights,
    save_training_state,
)
from texttune.training.optim import build_optimizer, build_scheduler, total_steps
from texttune.training.task import LoopTask

log = logging.getLogger(__name__)


@dataclass
class LoopState:
    """Where training is; saved with every checkpoint (JSON)."""

    global_step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0  # micro-batches of `epoch` already consumed
    samples_seen: int = 0
    padded_tokens_seen: int = 0  # rows × longest row of every global batch: the compute it took
    real_tokens_seen: int = 0
    train_time_s: float = 0.0
    best_value: float | None = None
    best_step: int | None = None
    evals_without_improvement: int = 0
    stopped_early: bool = False
    stop_reason: str | None = None  # early_stopping, or the reason a callback gave (Trainer.stop)
    last_eval_step: int = -1
    # The running-loss window of the next log line, so a resumed run logs the same losses.
    window_losses: list[float] = field(default_factory=list)
    window_samples: int = 0
    window_counts: list[int] = field(default_factory=list)  # examples behind each of window_losses
    window_tokens: int = 0
    window_steps: int = 0


def cpu_only() -> bool:
    """No accelerator device here: Accelerate then needs ``cpu=True`` to see torchrun's processes as
    one CPU (gloo) group rather than N independent runs."""
    return not torch.accelerator.is_available()


# Accelerate configs that shard parameters or optimizer state across processes.
SHARDED = ("FSDP", "DEEPSPEED", "MEGATRON_LM")


def refuse_sharding(distributed_type) -> None:
    """FSDP / DeepSpeed launches stop here, before any training, instead of saving garbage.

    The loop writes checkpoints, the best weights and the final model from the main process's own
    copy of the parameters, and restores the best weights into that copy: right under DDP (every
    rank holds the whole model), wrong once parameters are sharded (each rank holds a slice; the
    save needs ``accelerator.get_state_dict`` on every rank, the restore a sharded load, the resume
    a sharded optimizer state). That path has not run on a GPU yet (docs/design.md, "Past one
    process"), so it is refused by name rather than trusted.
    """
    name = getattr(distributed_type, "name", str(distributed_type))
    if name in SHARDED:
        raise TexttuneError(
            f"accelerate is configured for {name}: texttune trains data-parallel only (DDP: every process "
            "holds the whole model); sharded training (FSDP, DeepSpeed) is not supported yet. Launch "
            "with a multi-GPU config without sharding (accelerate config: distributed_type MULTI_GPU), "
            "or torchrun / texttune run --num-processes N")


def mixed_precision(setting: str) -> str:
    if setting != "auto":
        return setting
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16"
    return "no"


class Trainer:
    """The loop. ``objective`` (a ``LoopTask``) batches, computes the loss and evaluates; the loop
    writes checkpoints under ``checkpoint_dir`` and its records through the ``MetricsFile`` callback
    (``metrics_path``); everything else a run needs is outside it (``runs.run_task``)."""

    def __init__(
        self,
        model: nn.Module,
        train_data: Encoded,
        validation_data: Encoded | None,
        cfg: TrainConfig,
        *,
        objective: LoopTask,
        checkpoint_dir: Path,
        metrics_path: Path | None,
        pad_id: int,
        seed: int,
        head_lr: float | None = None,
        callbacks: list[Callback] | tuple[Callback, ...] = (),
    ) -> None:
        self.cfg, self.pad_id, self.seed = cfg, pad_id, seed
        self.train_data, self.validation_data = train_data, validation_data
        self.metrics_path = Path(metrics_path) if metrics_path is not None else None
        self.callbacks = ([MetricsFile()] if self.metrics_path is not None else []) + list(callbacks)
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        if torch.cuda.is_available():
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
            # With dynamic padding every batch has a new sequence length, and cuDNN's attention builds
            # an execution plan per shape: ~8 ms of CPU per attention call, which made bf16 training
            # 4x slower than fp32 on an H100 (profile in bench/results/2026-11-22-h100-profile.md).
            # SDPA then picks the flash / memory-efficient kernels, which take any length.
            torch.backends.cuda.enable_cudnn_sdp(False)
        self.accelerator = Accelerator(mixed_precision=mixed_precision(cfg.mixed_precision), cpu=cpu_only())
        refuse_sharding(self.accelerator.distributed_type)
        self.world_size = self.accelerator.num_processes
        self._count_steps(cfg, train_data)
        optimizer = build_optimizer(model, cfg, head_lr)
        self.scheduler = build_scheduler(optimizer, cfg, self.total_steps)
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        if cfg.compile:
            # Module.compile() compiles forward in place: parameter names and checkpoints are unchanged.
            self.accelerator.unwrap_model(self.model).compile(dynamic=True)
        self.task = objective
        self.state = LoopState()
        self.start_step = 0
        self.resumed = False
        self.checkpoint_dir = Path(checkpoint_dir)

    def _count_steps(self, cfg: TrainConfig, train_data: Encoded) -> None:
        """Batches per epoch and the schedule's length: fixed-size batches are ceil(N / global batch)
        an epoch; token-budget batches are counted from each epoch's own (their number varies)."""
        if cfg.batch_tokens is None:
            self.global_batch_size: int | None = cfg.per_device_batch_size * self.world_size
            self.batches_per_epoch = math.ceil(len(train_data) / self.global_batch_size)
            self.total_steps = total_steps(cfg, self.batches_per_epoch)
            return
        self.global_batch_size = None  # varies: metrics.json records the mean (effective_batch)
        epochs = 1 if cfg.max_steps is not None else math.ceil(cfg.epochs)
        counts = [len(self._epoch_batches(epoch)) for epoch in range(epochs)]
        self.batches_per_epoch = counts[0]
        self.total_steps = total_steps(cfg, counts)
        longer = int((train_data.lengths > cfg.batch_tokens).sum())
        if longer:
            log.warning("%d training examples are longer than train.batch_tokens (%d tokens; the longest has "
                        "%d): each trains in a batch of its own", longer, cfg.batch_tokens,
                        int(train_data.lengths.max()))

    def _epoch_batches(self, epoch: int) -> list[np.ndarray]:
        """The global batches of ``epoch``: a pure function of (seed, epoch); resume needs a position only."""
        lengths, cfg = self.train_data.lengths, self.cfg
        if cfg.batch_tokens is not None:
            return epoch_token_batches(lengths, cfg.batch_tokens, self.seed, epoch, cfg.group_by_length,
                                       ranks=self.world_size)
        return epoch_batches(lengths, self.global_batch_size, self.seed, epoch, cfg.group_by_length)

    def effective_batch(self) -> dict[str, Any]:
        """What an optimizer step trained on, on average (every micro-batch, every process): with
        ``train.batch_tokens`` the batch size varies, and the learning rate was tuned for this."""
        steps = max(self.state.global_step, 1)
        return {
            "examples_per_step": round(self.state.samples_seen / steps, 2),
            "padded_tokens_per_step": round(self.state.padded_tokens_seen / steps, 1),
            "real_tokens_per_step": round(self.state.real_tokens_seen / steps, 1),
            "batch_tokens": self.cfg.batch_tokens,  # per process and forward pass; None: fixed batches
            "per_device_batch_size": None if self.cfg.batch_tokens else self.cfg.per_device_batch_size,
            "gradient_accumulation_steps": self.cfg.gradient_accumulation_steps,
            "world_size": self.world_size,
        }

    # ------------------------------------------------------------------ the loop

    def fit(self, resume: bool = False) -> LoopState:
        if resume:
            self._resume()
        self.start_step = self.state.global_step
        self._call("on_train_begin")
        window = self.window = _Window()
        window.restore(self.state)
        pending = 0  # micro-batches accumulated since the last optimizer step
        self.model.train()
        try:
            while not self._done():
                batches = self._epoch_batches(self.state.epoch)
                self.batches_per_epoch = len(batches)
                while self.state.batch_in_epoch < len(batches) and not self._done():
                    tic = time.perf_counter()
                    indices = batches[self.state.batch_in_epoch]
                    last_of_epoch = self.state.batch_in_epoch + 1 == len(batches)
                    steps_now = pending + 1 == self.cfg.gradient_accumulation_steps or last_of_epoch
                    weight = _step_weight(batches, self.state.batch_in_epoch,
                                          self.cfg.gradient_accumulation_steps)
                    batch, share = self._fetch(indices)  # fetch batch
                    # DDP all-reduces gradients at every backward; between optimizer steps that is wasted.
                    with nullcontext() if steps_now else self.accelerator.no_sync(self.model):
                        loss = self._forward(batch)  # forward
                        self.accelerator.backward(self._scaled(loss, share, weight))  # backward
                    pending += 1
                    self.state.batch_in_epoch += 1
                    tokens = padded_tokens(self.train_data.lengths, indices)
                    window.add(self._global_loss(loss, share), len(indices), tokens)
                    self.state.samples_seen += len(indices)
                    self.state.padded_tokens_seen += tokens
                    self.state.real_tokens_seen += int(self.train_data.lengths[indices].sum())
                    if steps_now:
                        grad_norm = self._step()  # clip → step → schedule
                        pending = 0
                        window.grad_norm = grad_norm
                        window.steps += 1
                    self.state.train_time_s += time.perf_counter() - tic
                    if pending == 0:
                        self._after_step(window, epoch_end=last_of_epoch)  # log → eval/ckpt/stop
                if self.state.batch_in_epoch >= len(batches):
                    self.state.epoch += 1
                    self.state.batch_in_epoch = 0
            if self.state.last_eval_step != self.state.global_step and not self.state.stopped_early:
                self._evaluate_and_checkpoint()
        finally:
            self._call("on_train_end")
        self._restore_best()
        return self.state

    def stop(self, reason: str) -> None:
        """End training after the current step, as early stopping does: how a callback stops a run
        (a pruned trial of ``texttune tune``). The best checkpoint is still restored and evaluated;
        the first reason given is the one recorded."""
        if not self.state.stopped_early:
            self.state.stopped_early, self.state.stop_reason = True, reason

    def _done(self) -> bool:
        return self.state.global_step >= self.total_steps or self.state.stopped_early

    def _fetch(self, indices: np.ndarray) -> tuple[dict[str, torch.Tensor], float]:
        """This process's batch of the global batch ``indices``, and its share of the examples."""
        mine, share = _share(indices, self.accelerator.process_index, self.world_size)
        self._call("on_batch_begin", mine)
        batch = self.task.collate(self.train_data, mine, self.pad_id)
        # No pin_memory(): page-locking a fresh buffer every step cost more than the copy it speeds
        # up (-13% samples/s on an H100, bench/results/2026-11-22-h100-profile.md).
        return {k: v.to(self.accelerator.device, non_blocking=True) for k, v in batch.items()}, share

    def _scaled(self, loss: torch.Tensor, share: float, weight: float) -> torch.Tensor:
        """The loss to back-propagate. DDP averages gradients over processes; weighting each by its
        share of the global batch (× N) makes that the gradient of the global batch's mean loss when
        the shares are unequal (the last batch of an epoch). ``weight``, the micro-batch's share of
        its optimizer step's examples, does the same across accumulated micro-batches."""
        if self.world_size > 1:
            loss = loss * (share * self.world_size)
        return loss * weight

    def _global_loss(self, loss: torch.Tensor, share: float) -> torch.Tensor:
        """The global batch's mean loss, the same on every process (what is logged and checkpointed)."""
        if self.world_size == 1:
            return loss
        return self.accelerator.reduce(loss.detach() * share, reduction="sum")

    def _forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.task.loss(self.model, batch, self.accelerator)

    def _step(self) -> float | None:
        grad_norm = None
        if self.cfg.max_grad_norm is not None:
            grad_norm = self.accelerator.clip_grad_norm_(
                [p for p in self.model.parameters() if p.requires_grad], self.cfg.max_grad_norm
            )
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.state.global_step += 1
        return grad_norm

    def _after_step(self, window: _Window, epoch_end: bool) -> None:
        step = self.state.global_step
        self._call("on_step_end")
        if step % self.cfg.log_every_steps == 0 or step == self.total_steps:
            self._log(window)
        every = self.cfg.eval_every_steps
        if (every is not None and step % every == 0) or (every is None and epoch_end) or step == self.total_steps:
            tic = time.perf_counter()
            self._evaluate_and_checkpoint()
            window.start += time.perf_counter() - tic  # throughput counts training time only

    def _log(self, window: _Window) -> None:
        record = {
            "type": "train", "step": self.state.global_step, "epoch": self._epoch_float(),
            "loss": window.mean_loss(), "lr": self.scheduler.get_last_lr()[0],
            "grad_norm": window.grad_norm_value(), "samples_per_s": window.throughput(),
            "examples_per_step": window.per_step(window.samples),
            "tokens_per_step": window.per_step(window.tokens),  # padded: rows × longest row
            "elapsed_s": round(self.state.train_time_s, 3),
        }
        self._call("on_log", record)
        window.reset()

    def _epoch_float(self) -> float:
        return round(self.state.epoch + self.state.batch_in_epoch / self.batches_per_epoch, 4)

    # ------------------------------------------------------------------ evaluation and checkpoints

    def _evaluate_and_checkpoint(self) -> None:
        self._call("on_evaluate_begin")
        self._evaluate()
        self._call("on_evaluate_end")

    def _evaluate(self) -> None:
        self.state.last_eval_step = self.state.global_step
        if self.validation_data is None or len(self.validation_data) == 0:
            self._save_checkpoint(improved=True)
            return
        metrics = self.task.evaluate(self.model, self.validation_data, self.pad_id, self.cfg.eval_batch_size,
                                     self.accelerator)
        self.model.train()
        record = {"type": "eval", "split": "validation", "step": self.state.global_step,
                  "epoch": self._epoch_float(), **_scalars(metrics)}
        self._call("on_evaluate", record)
        value = metrics[self.cfg.metric]
        improved = self.state.best_value is None or is_better(self.cfg.metric, value, self.state.best_value)
        if improved:
            self.state.best_value, self.state.best_step = value, self.state.global_step
            self.state.evals_without_improvement = 0
        else:
            self.state.evals_without_improvement += 1
            patience = self.cfg.early_stopping_patience
            if patience is not None and self.state.evals_without_improvement >= patience:
                self.stop("early_stopping")
        self._save_checkpoint(improved)

    def _save_checkpoint(self, improved: bool) -> None:
        if self.accelerator.is_main_process:
            self._write_checkpoint(improved)
        self.accelerator.wait_for_everyone()  # every process reads best/ at the end of training

    def _write_checkpoint(self, improved: bool) -> None:
        model = self.accelerator.unwrap_model(self.model)
        if improved:
            (self.checkpoint_dir / BEST).mkdir(parents=True, exist_ok=True)
            save_model_weights(model, self.checkpoint_dir / BEST / "model.safetensors")
        if self.cfg.save_checkpoints:
            self.window.snapshot(self.state)
            save_training_state(self.checkpoint_dir / LAST, model, self.optimizer, self.scheduler,
                                {"loop": asdict(self.state)})

    def _resume(self) -> None:
        folder = self.checkpoint_dir / LAST
        model = self.accelerator.unwrap_model(self.model)
        trainer = load_training_state(folder, model, self.optimizer, self.scheduler)
        with reading(folder / "trainer_state.json", "does not fit the training loop"):
            self.state = LoopState(**trainer["loop"])
        best = self.checkpoint_dir / BEST / "model.safetensors"
        if best.is_file():  # reloaded when training ends: found damaged now, not after the last step
            check_safetensors(best)
        self.resumed = True

    def _restore_best(self) -> None:
        best = self.checkpoint_dir / BEST / "model.safetensors"
        if best.is_file():
            load_model_weights(self.accelerator.unwrap_model(self.model), best)

    # ------------------------------------------------------------------ plumbing

    def _call(self, hook: str, *args: Any) -> None:
        for callback in self.callbacks:
            getattr(callback, hook)(self, *args)


def _share(indices: np.ndarray, rank: int, world_size: int) -> tuple[np.ndarray, float]:
    """Rank ``rank``'s examples of a global batch (every ``world_size``-th: lengths stay balanced in a
    length-grouped batch) and their fraction of it. A rank left with none (a last batch smaller than
    the process count) computes one example with weight 0: DDP needs every process in each backward."""
    if world_size == 1:
        return indices, 1.0
    mine = indices[rank::world_size]
    if len(mine) == 0:
        return indices[:1], 0.0
    return mine, len(mine) / len(indices)


def _step_weight(batches: list[np.ndarray], index: int, accumulation: int) -> float:
    """Micro-batch ``index``'s share of the examples of its optimizer step (the steps of an epoch are
    its batches taken ``accumulation`` at a time, the last one possibly fewer): weighting each
    micro-batch's mean loss by it makes the step's gradient the mean over the step's examples, with
    batches of any size."""
    if accumulation == 1:
        return 1.0
    start = index - index % accumulation
    return len(batches[index]) / sum(len(batch) for batch in batches[start : start + accumulation])


def _scalars(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


class _Window:
    """Running loss, batch sizes and throughput between two log lines. Reading the loss syncs the
    device, so losses are kept as tensors and summed only when a line is written; the mean is over
    examples (each micro-batch's loss weighted by its examples: batch sizes vary with token budgets)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.losses: list[torch.Tensor] = []
        self.counts: list[int] = []
        self.samples = self.tokens = self.steps = 0
        self.start = time.perf_counter()
        self.grad_norm: Any = None

    def snapshot(self, state: LoopState) -> None:
        state.window_losses = [float(loss) for loss in self.losses]
        state.window_counts, state.window_samples = list(self.counts), self.samples
        state.window_tokens, state.window_steps = self.tokens, self.steps

    def restore(self, state: LoopState) -> None:
        self.losses = [torch.tensor(loss) for loss in state.window_losses]
        # A checkpoint from before the counts were kept: its losses weigh the same.
        counts = state.window_counts
        if len(counts) != len(self.losses):
            counts = [1] * len(self.losses)
        self.counts, self.samples = list(counts), state.window_samples
        self.tokens, self.steps = state.window_tokens, state.window_steps

    def add(self, loss: torch.Tensor, n: int, tokens: int = 0) -> None:
        self.losses.append(loss.detach())
        self.counts.append(n)
        self.samples += n
        self.tokens += tokens

    def mean_loss(self) -> float:
        if not self.losses:
            return float("nan")
        losses = torch.stack(self.losses).float()
        counts = torch.tensor(self.counts, dtype=losses.dtype, device=losses.device)
        return float((losses * counts).sum() / counts.sum())

    def per_step(self, total: int) -> float | None:
        return round(total / self.steps, 2) if self.steps else None

    def grad_norm_value(self) -> float | None:
        return float(self.grad_norm) if self.grad_norm is not None else None

    def throughput(self) -> float:
        return round(self.samples / max(time.perf_counter() - self.start, 1e-9), 3)
