"""Fine-tuning MiniLM three ways on identical data, one variant per process (clean memory peaks,
no global state such as TF32 flags or compile caches leaking between variants):

- ``notebook``: what the notebooks do: pad every example to max_length, fp32, a plain PyTorch loop
  (``loss.item()`` every step), ``AutoModelForSequenceClassification``.
- ``trainer``: transformers' Trainer, tuned: ``DataCollatorWithPadding``, length-grouped sampling,
  fused AdamW (its default), bf16 on a GPU.
- ``texttune``: texttune's own loop with its defaults (dynamic padding, length grouping, bf16
  autocast on a GPU); ``texttune-compile`` adds ``train.compile``.

Two modes: ``throughput`` (T × batch examples; one untimed warm-up epoch over them, then one timed
epoch) and ``epochs`` (whole epochs, all timed, validation accuracy after each, for time-to-accuracy
and evaluation throughput). Every variant sees the same train/validation split (texttune's carve) and
times whole epochs over it, so every variant's timed examples are the same set, whatever its order and
batching: each records which examples it timed (``timed_fingerprint``), and ``bench.run`` refuses to
compare variants whose sets differ. Real tokens are counted one way for all of them: the non-pad
tokens of the timed examples, from one tokenization of the shared example list (``real_lengths``);
each variant's padded tensor size is counted apart (``tensor_tokens``).

    python -m bench.minilm --variant texttune --task imdb --mode throughput --json out.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from texttune.runs import peak_memory_mb  # GPU: max allocated; CPU: process RSS peak

TASKS = {  # dataset, max_length
    "imdb": ("imdb", 256),
    "sst2": ("sst2", 66),
    "trec": ("trec", 64),
}
VARIANTS = ("notebook", "trainer", "texttune", "texttune-compile")


@dataclass
class Options:
    variant: str
    task: str
    mode: str  # throughput | epochs
    model_path: str
    batch_size: int = 32
    eval_batch_size: int = 128
    lr: float = 5e-5
    epochs: int = 1
    timed_steps: int = 100  # throughput: T × batch_size examples, one untimed epoch then one timed
    max_train: int | None = None  # subset of the train split (quick mode)
    max_validation: int | None = None
    seed: int = 42
    threads: int | None = None
    overrides: tuple[str, ...] = ()  # extra texttune --set overrides (experiments)
    profile: bool = False  # texttune: print a torch.profiler table of 20 steps after warm-up


# ---------------------------------------------------------------------------- shared plumbing


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def load_splits(opts: Options):
    """The train/validation frames every variant uses: texttune's carve of the built-in dataset.

    In ``throughput`` mode the training set is cut to the examples of T steps; every variant trains two
    epochs over them in its own order and batching, the first untimed (warm-up), the second timed: the
    timed part is then the same texts for every variant, not whichever its sampler drew after W steps."""
    from texttune.config import DataConfig
    from texttune.data.load import load_dataset

    name, _ = TASKS[opts.task]
    max_train = opts.max_train
    if opts.mode == "throughput":
        window = opts.timed_steps * opts.batch_size
        max_train = window if max_train is None else min(max_train, window)
    cfg = DataConfig(dataset=name, max_train_samples=max_train, max_validation_samples=opts.max_validation)
    ds = load_dataset(cfg)
    return ds.splits["train"], ds.splits["validation"], ds.label_names


def train_epochs(opts: Options) -> int:
    return 2 if opts.mode == "throughput" else opts.epochs  # throughput: a warm-up epoch, a timed one


def warmup_steps(opts: Options, n_train: int) -> int:
    """Untimed steps before the clock starts: the warm-up epoch in throughput mode, none in epochs mode."""
    return math.ceil(n_train / opts.batch_size) if opts.mode == "throughput" else 0


def total_steps(opts: Options, n_train: int) -> int:
    return train_epochs(opts) * math.ceil(n_train / opts.batch_size)


def real_lengths(opts: Options, train_df) -> np.ndarray:
    """Non-pad tokens of each shared training example, from one tokenization (the MiniLM tokenizer,
    truncated to the task's max_length, special tokens included): the one count every variant's real
    tokens come from."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(opts.model_path)
    ids = tokenizer(train_df["text"].tolist(), truncation=True, max_length=TASKS[opts.task][1])["input_ids"]
    return np.array([len(x) for x in ids], dtype=np.int64)


class TimedExamples:
    """Which shared examples (positions in the train frame) a variant trained on while its clock ran."""

    def __init__(self) -> None:
        self.ids: list[int] = []

    def add(self, ids) -> None:
        self.ids.extend(int(i) for i in ids)

    def record(self, res: Result, lengths: np.ndarray, epochs_timed: int) -> None:
        """Real tokens and the fingerprint of the timed set; each example must come ``epochs_timed``
        times (whole epochs), or the variant's figures would count other work than the others'."""
        counts = np.bincount(np.asarray(self.ids, dtype=np.int64), minlength=len(lengths))
        if len(counts) != len(lengths) or not np.all(counts == epochs_timed):
            raise SystemExit(f"{res.variant}: the timed part did not train every one of the {len(lengths)} "
                             f"examples {epochs_timed} time(s): {int((counts == 0).sum())} missing, "
                             f"{int((counts > epochs_timed).sum())} repeated")
        res.train_samples = len(self.ids)
        res.train_tokens = int(lengths[self.ids].sum())
        ordered = np.sort(np.asarray(self.ids, np.int64))
        res.timed_fingerprint = hashlib.sha256(ordered.tobytes()).hexdigest()[:16]


class Clock:
    """Training time with evaluation pauses taken out; the device is synchronised at each edge.

    ``step(samples)`` after every optimizer step also measures windows of ``WINDOW_STEPS`` steps
    (one device sync per window), whose median throughput is robust to one-off stalls."""

    WINDOW_STEPS = 25

    def __init__(self) -> None:
        self.elapsed = 0.0
        self.started: float | None = None
        self.windows: list[float] = []
        self._reset_window()

    def _reset_window(self) -> None:
        self.window_start, self.window_samples, self.window_steps = time.perf_counter(), 0, 0

    def start(self) -> None:
        sync()
        self.started = time.perf_counter()
        self._reset_window()

    def stop(self) -> None:
        sync()
        if self.started is not None:
            self.elapsed += time.perf_counter() - self.started
        self.started = None

    def step(self, samples: int) -> None:
        if self.started is None:
            return
        self.window_samples += samples
        self.window_steps += 1
        if self.window_steps == self.WINDOW_STEPS:
            sync()
            self.windows.append(self.window_samples / (time.perf_counter() - self.window_start))
            self._reset_window()

    def window_median(self) -> float | None:
        return round(float(np.median(self.windows)), 2) if self.windows else None


def warm_timed(fn):
    """(result, seconds) of ``fn``'s second call: the first one, untimed, pays the one-off costs of new
    shapes (oneDNN primitives, CUDA kernels), which one batch of a small validation set would
    otherwise be dominated by."""
    fn()
    clock = Clock()
    clock.start()
    result = fn()
    clock.stop()
    return result, round(clock.elapsed, 3)


@dataclass
class Result:
    variant: str
    task: str
    mode: str
    device: str
    train_samples: int = 0  # examples trained on in the timed part
    train_tokens: int = 0  # real (non-pad) tokens of the timed examples, from the shared count (real_lengths)
    tensor_tokens: int = 0  # tokens including padding: what this variant's tensors held
    timed_fingerprint: str = ""  # sha256 of the sorted positions of the timed examples (bench.run compares)
    train_time_s: float = 0.0
    prep_time_s: float = 0.0  # tokenization + model load
    eval_samples: int = 0
    eval_time_s: float = 0.0
    peak_memory_mb: float = 0.0
    curve: list | None = None  # epochs mode: [{epoch, train_time_s, val_accuracy}]
    window_samples_per_s: float | None = None  # median over windows of Clock.WINDOW_STEPS steps
    windows: int = 0
    val_accuracy: float | None = None
    compile_time_s: float | None = None

    def finish(self) -> dict[str, Any]:
        out = asdict(self)
        if self.train_time_s:
            out["train_samples_per_s"] = round(self.train_samples / self.train_time_s, 2)
            out["real_tokens_per_s"] = round(self.train_tokens / self.train_time_s, 1)
            out["padding_share"] = round(1 - self.train_tokens / max(self.tensor_tokens, 1), 3)
        if self.eval_time_s:
            out["eval_samples_per_s"] = round(self.eval_samples / self.eval_time_s, 2)
        return out


def accuracy(logits: torch.Tensor, labels) -> float:
    return float((logits.argmax(-1).cpu().numpy() == np.asarray(labels)).mean())


# ---------------------------------------------------------------------------- (a) notebook loop


def run_notebook(opts: Options, train_df, val_df, labels, lengths: np.ndarray) -> Result:
    from torch.utils.data import DataLoader, TensorDataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, get_linear_schedule_with_warmup

    torch.backends.cuda.matmul.allow_tf32 = False  # PyTorch's default, what a notebook runs with
    torch.backends.cudnn.allow_tf32 = True
    dev, max_length = device(), TASKS[opts.task][1]
    res = Result(opts.variant, opts.task, opts.mode, str(dev))
    tic = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(opts.model_path)

    def encode(df):
        enc = tokenizer(df["text"].tolist(), padding="max_length", truncation=True, max_length=max_length,
                        return_tensors="pt")
        positions = torch.arange(len(df))  # which shared example: only the bench reads it
        return TensorDataset(enc["input_ids"], enc["attention_mask"], torch.tensor(df["label"].to_numpy()),
                             positions)

    train_set, val_set = encode(train_df), encode(val_df)
    model = AutoModelForSequenceClassification.from_pretrained(
        opts.model_path, num_labels=len(labels), dtype=torch.float32).to(dev)
    res.prep_time_s = round(time.perf_counter() - tic, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=opts.lr, weight_decay=0.01)
    steps = total_steps(opts, len(train_set))
    scheduler = get_linear_schedule_with_warmup(optimizer, int(0.06 * steps), steps)
    generator = torch.Generator().manual_seed(opts.seed)
    loader = DataLoader(train_set, batch_size=opts.batch_size, shuffle=True, generator=generator)

    def predict() -> torch.Tensor:
        out = []
        with torch.no_grad():
            for ids, mask, _, _ in DataLoader(val_set, batch_size=opts.eval_batch_size):
                out.append(model(input_ids=ids.to(dev), attention_mask=mask.to(dev)).logits.float().cpu())
        return torch.cat(out)

    def evaluate() -> float:
        model.eval()
        logits, res.eval_time_s = warm_timed(predict)
        res.eval_samples = len(val_set)
        model.train()
        return accuracy(logits, val_df["label"].to_numpy())

    clock, step, curve, timed = Clock(), 0, [], TimedExamples()
    warmup = warmup_steps(opts, len(train_set))
    model.train()
    for epoch in range(train_epochs(opts)):
        if opts.mode == "epochs":
            clock.start()
        for ids, mask, y, positions in loader:
            if opts.mode == "throughput" and step == warmup:
                clock.start()
            ids, mask, y = ids.to(dev), mask.to(dev), y.to(dev)
            loss = model(input_ids=ids, attention_mask=mask, labels=y).loss
            loss.backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            _ = loss.item()  # the notebooks' running loss
            step += 1
            clock.step(len(y))
            if step > warmup:
                timed.add(positions.tolist())
                res.tensor_tokens += mask.numel()
        clock.stop()
        if opts.mode == "epochs":
            curve.append({"epoch": epoch + 1, "train_time_s": round(clock.elapsed, 2), "val_accuracy": evaluate()})
    timed.record(res, lengths, epochs_timed=train_epochs(opts) - (opts.mode == "throughput"))
    res.train_time_s = round(clock.elapsed, 3)
    res.window_samples_per_s, res.windows = clock.window_median(), len(clock.windows)
    if opts.mode == "epochs":
        res.curve, res.val_accuracy = curve, curve[-1]["val_accuracy"]
    else:
        res.val_accuracy = evaluate()
    res.peak_memory_mb = peak_memory_mb()
    return res


# ---------------------------------------------------------------------------- (b) tuned Trainer


def run_trainer(opts: Options, train_df, val_df, labels, lengths: np.ndarray) -> Result:
    import inspect

    from transformers import (
        AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer, TrainerCallback,
        TrainingArguments,
    )

    torch.backends.cuda.matmul.allow_tf32 = False
    dev, max_length = device(), TASKS[opts.task][1]
    res = Result(opts.variant, opts.task, opts.mode, str(dev))
    tic = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(opts.model_path)

    class ListDataset(torch.utils.data.Dataset):
        def __init__(self, df, positions: bool = False):
            enc = tokenizer(df["text"].tolist(), truncation=True, max_length=max_length)
            self.items = [{"input_ids": ids, "attention_mask": m, "labels": int(y)}
                          for ids, m, y in zip(enc["input_ids"], enc["attention_mask"], df["label"])]
            if positions:  # which shared example: the collator takes it out before padding
                for i, item in enumerate(self.items):
                    item["position"] = i

        def __len__(self):
            return len(self.items)

        def __getitem__(self, i):
            return self.items[i]

    train_set, val_set = ListDataset(train_df, positions=True), ListDataset(val_df)
    model = AutoModelForSequenceClassification.from_pretrained(
        opts.model_path, num_labels=len(labels), dtype=torch.float32)
    res.prep_time_s = round(time.perf_counter() - tic, 2)
    steps = total_steps(opts, len(train_set))
    params = inspect.signature(TrainingArguments).parameters
    grouping = ({"train_sampling_strategy": "group_by_length"} if "train_sampling_strategy" in params
                else {"group_by_length": True})
    out_dir = tempfile.mkdtemp(prefix="bench-trainer-")
    args = TrainingArguments(
        output_dir=out_dir, per_device_train_batch_size=opts.batch_size,
        per_device_eval_batch_size=opts.eval_batch_size, learning_rate=opts.lr, weight_decay=0.01,
        warmup_steps=int(0.06 * steps), lr_scheduler_type="linear", max_steps=steps,
        bf16=dev.type == "cuda", eval_strategy="epoch" if opts.mode == "epochs" else "no",
        save_strategy="no", logging_steps=50, report_to="none", seed=opts.seed,
        disable_tqdm=True, use_cpu=dev.type == "cpu", **grouping,
        remove_unused_columns=False,  # it would drop `position` before the collator (no effect on speed)
    )
    clock, curve = Clock(), []

    class Timing(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            if opts.mode == "epochs":
                clock.start()

        def on_step_begin(self, args, state, control, **kw):
            if opts.mode == "throughput" and state.global_step == warmup:
                clock.start()

        def on_step_end(self, args, state, control, **kw):
            clock.step(counter.samples - self.seen)
            self.seen = counter.samples

        seen = 0

        def on_epoch_end(self, args, state, control, **kw):
            clock.stop()  # the evaluation that follows is not training time

        def on_evaluate(self, args, state, control, metrics=None, **kw):
            curve.append({"epoch": round(state.epoch), "train_time_s": round(clock.elapsed, 2),
                          "val_accuracy": metrics.get("eval_accuracy")})
            clock.start()

        def on_train_end(self, args, state, control, **kw):
            clock.stop()

    def compute_metrics(pred):
        return {"accuracy": float((pred.predictions.argmax(-1) == pred.label_ids).mean())}

    warmup = warmup_steps(opts, len(train_set))
    trainer = Trainer(model=model, args=args, train_dataset=train_set, eval_dataset=val_set,
                      data_collator=PositionsApart(DataCollatorWithPadding(tokenizer)),
                      compute_metrics=compute_metrics, callbacks=[Timing()])
    counter = TokenCounter(trainer, warmup)
    trainer.train()
    res.train_time_s = round(clock.elapsed, 3)
    res.window_samples_per_s, res.windows = clock.window_median(), len(clock.windows)
    counter.timed.record(res, lengths, epochs_timed=train_epochs(opts) - (opts.mode == "throughput"))
    res.tensor_tokens = counter.tensor
    pred, res.eval_time_s = warm_timed(lambda: trainer.predict(val_set))
    res.eval_samples = len(val_set)
    res.val_accuracy = float((pred.predictions.argmax(-1) == pred.label_ids).mean())
    if opts.mode == "epochs":
        res.curve = curve
    res.peak_memory_mb = peak_memory_mb()
    return res


class PositionsApart:
    """The Trainer's collator, with each example's ``position`` taken out before padding and put back
    as one tensor (``TokenCounter`` removes it before the model sees the batch)."""

    def __init__(self, collator) -> None:
        self.collator = collator

    def __call__(self, features):
        positions = [f["position"] for f in features if "position" in f]
        batch = self.collator([{k: v for k, v in f.items() if k != "position"} for f in features])
        if positions:
            batch["position"] = torch.tensor(positions)
        return batch


class TokenCounter:
    """Which examples the Trainer trains on after ``warmup`` steps, and its padded tensor sizes
    (wraps compute_loss, which sees every training batch once, as the model gets it)."""

    def __init__(self, trainer, warmup: int) -> None:
        self.tensor = self.calls = 0
        self.timed = TimedExamples()
        original = trainer.compute_loss

        def counted(model, inputs, *args, **kwargs):
            positions = inputs.pop("position", None)
            if not model.training:  # prediction_step also computes the loss
                return original(model, inputs, *args, **kwargs)
            self.calls += 1
            if self.calls > warmup:
                self.timed.add(positions.tolist())
                self.tensor += inputs["attention_mask"].numel()
            return original(model, inputs, *args, **kwargs)

        trainer.compute_loss = counted

    @property
    def samples(self) -> int:
        return len(self.timed.ids)  # examples timed so far (Timing's windows)


# ---------------------------------------------------------------------------- (c) texttune


def run_texttune(opts: Options, train_df, val_df, labels, lengths: np.ndarray) -> Result:
    from texttune.tasks.classify import load_config
    from texttune.data.dataset import TextDataset
    from texttune.evaluation.evaluate import evaluate
    from texttune import runs
    from texttune.tasks.classify import ClassificationObjective, build, tokenize
    from texttune.training.callbacks import Callback
    from texttune.training.loop import Trainer

    dev, max_length = device(), TASKS[opts.task][1]
    res = Result(opts.variant, opts.task, opts.mode, str(dev))
    # Epochs, not steps: an override such as train.batch_tokens changes the batches of an epoch.
    overrides = [f"model.path={opts.model_path}", f"model.max_length={max_length}",
                 f"train.per_device_batch_size={opts.batch_size}", f"train.eval_batch_size={opts.eval_batch_size}",
                 f"train.lr={opts.lr}", f"train.epochs={train_epochs(opts)}", f"seed={opts.seed}",
                 "train.save_checkpoints=false", "train.calibrate=false"]
    if opts.variant == "texttune-compile":
        overrides.append("train.compile=true")
    if opts.threads:
        overrides.append(f"train.num_threads={opts.threads}")
    overrides += list(opts.overrides)
    config = load_config(None, overrides, base={"data": {"dataset": TASKS[opts.task][0]}})
    tic = time.perf_counter()
    ds = TextDataset(name=opts.task, splits={"train": train_df, "validation": val_df}, label_names=labels)
    model, tokenizer = build(config, ds)
    encoded, _ = tokenize(ds, tokenizer, max_length)
    res.prep_time_s = round(time.perf_counter() - tic, 2)
    clock, curve, timed = Clock(), [], TimedExamples()
    warmup = warmup_steps(opts, len(train_df))  # the profile's start (the clock starts at the epoch's end)
    train = encoded["train"]
    if not np.array_equal(train.lengths, lengths):
        raise SystemExit("texttune's tokenization of the training examples differs from the shared count")

    class Timing(Callback):
        def __init__(self) -> None:
            self.steps = 0

        def on_train_begin(self, trainer) -> None:
            if opts.mode == "epochs":
                clock.start()

        seen = 0
        profiler = None

        def on_step_end(self, trainer) -> None:
            clock.step(res.train_samples - self.seen)
            self.seen = res.train_samples
            self.steps += 1
            if opts.profile and self.steps == warmup:
                from torch.profiler import ProfilerActivity, profile

                activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
                self.profiler = profile(activities=activities)
                self.profiler.__enter__()
            if self.profiler is not None and self.steps == warmup + 20:
                sync()
                self.profiler.__exit__(None, None, None)
                for key in ("self_cpu_time_total", "self_cuda_time_total"):
                    print(self.profiler.key_averages().table(sort_by=key, row_limit=22), flush=True)
                self.profiler = None
            if opts.mode == "throughput" and trainer.state.epoch == 0 \
                    and trainer.state.batch_in_epoch == trainer.batches_per_epoch:
                clock.start()  # the warm-up epoch's last step is done; the timed epoch begins

    class Counting(Callback):
        """Through the loop's public hooks: tokens of every batch, the clock stopped while evaluating."""

        def on_batch_begin(self, trainer, indices) -> None:
            if opts.mode == "epochs" or trainer.state.epoch >= 1:
                timed.add(indices.tolist())
                res.train_samples += len(indices)  # Timing's window counts read it
                res.tensor_tokens += int(train.lengths[indices].max()) * len(indices)

        running = False

        def on_evaluate_begin(self, trainer) -> None:
            self.running = clock.started is not None
            clock.stop()

        def on_evaluate(self, trainer, record) -> None:
            if opts.mode == "epochs":
                curve.append({"epoch": round(trainer.state.epoch + trainer.state.batch_in_epoch / trainer.batches_per_epoch),
                              "train_time_s": round(clock.elapsed, 2), "val_accuracy": record.get("accuracy")})

        def on_evaluate_end(self, trainer) -> None:
            if self.running and trainer.state.global_step < trainer.total_steps:
                clock.start()  # not after the last step: restoring the best weights is no training time

    run_dir = Path(tempfile.mkdtemp(prefix="bench-texttune-"))
    validation = encoded["validation"] if opts.mode == "epochs" else None
    trainer = Trainer(model, train, validation, config.train, objective=ClassificationObjective(labels),
                      checkpoint_dir=run_dir / runs.CHECKPOINTS, metrics_path=run_dir / runs.METRICS_LOG,
                      pad_id=tokenizer.pad_token_id, seed=opts.seed, callbacks=[Counting(), Timing()])
    trainer.fit()
    clock.stop()
    timed.record(res, lengths, epochs_timed=train_epochs(opts) - (opts.mode == "throughput"))
    res.train_time_s = round(clock.elapsed, 3)
    res.window_samples_per_s, res.windows = clock.window_median(), len(clock.windows)
    (metrics, _), res.eval_time_s = warm_timed(lambda: evaluate(
        trainer.model, encoded["validation"], labels, tokenizer.pad_token_id, opts.eval_batch_size,
        trainer.accelerator))
    res.eval_samples = len(val_df)
    res.val_accuracy = metrics["accuracy"]
    if opts.mode == "epochs":
        res.curve = curve
    res.peak_memory_mb = peak_memory_mb()
    return res


RUNNERS = {"notebook": run_notebook, "trainer": run_trainer, "texttune": run_texttune,
           "texttune-compile": run_texttune}


def run(opts: Options) -> dict[str, Any]:
    if opts.threads:
        torch.set_num_threads(opts.threads)
    torch.manual_seed(opts.seed)
    train_df, val_df, labels = load_splits(opts)
    res = RUNNERS[opts.variant](opts, train_df, val_df, labels, real_lengths(opts, train_df))
    out = res.finish()
    out["options"] = asdict(opts)
    if torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", choices=VARIANTS, required=True)
    parser.add_argument("--task", choices=list(TASKS), default="imdb")
    parser.add_argument("--mode", choices=["throughput", "epochs"], default="throughput")
    parser.add_argument("--model-path", default=os.environ.get("BENCH_MINILM", "minilm"))
    parser.add_argument("--json", required=True, help="where to write the result")
    for field in ("batch_size", "eval_batch_size", "epochs", "timed_steps", "max_train",
                  "max_validation", "seed", "threads"):
        parser.add_argument("--" + field.replace("_", "-"), type=int, default=None)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--set", dest="overrides", action="append", default=None, help="texttune override")
    parser.add_argument("--profile", action="store_true", default=None)
    args = parser.parse_args(argv)
    model_path = args.model_path
    if model_path == "minilm":
        from texttune.resources import resolve_model_path

        model_path = str(resolve_model_path("minilm"))
    opts = Options(variant=args.variant, task=args.task, mode=args.mode, model_path=model_path)
    for key, value in vars(args).items():
        if value is not None and hasattr(opts, key) and key not in ("variant", "task", "mode", "model_path"):
            setattr(opts, key, tuple(value) if isinstance(value, list) else value)
    result = run(opts)
    Path(args.json).write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "options"}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
