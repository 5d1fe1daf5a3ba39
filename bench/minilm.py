"""Fine-tuning MiniLM three ways on identical data, one variant per process (clean memory peaks,
no global state such as TF32 flags or compile caches leaking between variants):

- ``notebook``: what the notebooks do: pad every example to max_length, fp32, a plain PyTorch loop
  (``loss.item()`` every step), ``AutoModelForSequenceClassification``.
- ``trainer``: transformers' Trainer, tuned: ``DataCollatorWithPadding``, length-grouped sampling,
  fused AdamW (its default), bf16 on a GPU.
- ``texttune``: texttune's own loop with its defaults (dynamic padding, length grouping, bf16
  autocast on a GPU); ``texttune-compile`` adds ``train.compile``.

Two modes: ``throughput`` (W untimed warm-up steps, then T timed steps; the suite repeats it and
takes the median) and ``epochs`` (whole epochs, validation accuracy after each, for time-to-accuracy
and evaluation throughput). Every variant sees the same train/validation split (texttune's carve).

    python -m bench.minilm --variant texttune --task imdb --mode throughput --json out.json
"""

from __future__ import annotations

import argparse
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
    warmup_steps: int = 10  # untimed steps before a throughput window
    timed_steps: int = 100
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

    In ``throughput`` mode the training set is cut to exactly the examples of the W + T steps, so that
    every variant trains on the same examples once (one epoch, in its own order and batching): the
    samples/s of two variants then count the same texts, not whichever their samplers drew."""
    from texttune.config import DataConfig
    from texttune.data.load import load_dataset

    name, _ = TASKS[opts.task]
    max_train = opts.max_train
    if opts.mode == "throughput":
        window = (opts.warmup_steps + opts.timed_steps) * opts.batch_size
        max_train = window if max_train is None else min(max_train, window)
    cfg = DataConfig(dataset=name, max_train_samples=max_train, max_validation_samples=opts.max_validation)
    ds = load_dataset(cfg)
    return ds.splits["train"], ds.splits["validation"], ds.label_names


def total_steps(opts: Options, n_train: int) -> int:
    if opts.mode == "throughput":
        return opts.warmup_steps + opts.timed_steps
    return opts.epochs * math.ceil(n_train / opts.batch_size)


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
    train_tokens: int = 0  # real (non-pad) tokens in the timed part
    tensor_tokens: int = 0  # tokens including padding
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


def run_notebook(opts: Options, train_df, val_df, labels) -> Result:
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
        return TensorDataset(enc["input_ids"], enc["attention_mask"], torch.tensor(df["label"].to_numpy()))

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
            for ids, mask, _ in DataLoader(val_set, batch_size=opts.eval_batch_size):
                out.append(model(input_ids=ids.to(dev), attention_mask=mask.to(dev)).logits.float().cpu())
        return torch.cat(out)

    def evaluate() -> float:
        model.eval()
        logits, res.eval_time_s = warm_timed(predict)
        res.eval_samples = len(val_set)
        model.train()
        return accuracy(logits, val_df["label"].to_numpy())

    clock, step, curve = Clock(), 0, []
    model.train()
    for epoch in range(opts.epochs if opts.mode == "epochs" else 10**6):
        timed = opts.mode == "epochs"
        if timed:
            clock.start()
        for ids, mask, y in loader:
            if opts.mode == "throughput" and step == opts.warmup_steps:
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
            if opts.mode == "epochs" or step > opts.warmup_steps:
                res.train_samples += len(y)
                res.train_tokens += int(mask.sum())
                res.tensor_tokens += mask.numel()
            if step >= steps:
                break
        clock.stop()
        if opts.mode == "epochs":
            curve.append({"epoch": epoch + 1, "train_time_s": round(clock.elapsed, 2), "val_accuracy": evaluate()})
        if step >= steps:
            break
    res.train_time_s = round(clock.elapsed, 3)
    res.window_samples_per_s, res.windows = clock.window_median(), len(clock.windows)
    if opts.mode == "epochs":
        res.curve, res.val_accuracy = curve, curve[-1]["val_accuracy"]
    else:
        res.val_accuracy = evaluate()
    res.peak_memory_mb = peak_memory_mb()
    return res


# ---------------------------------------------------------------------------- (b) tuned Trainer


def run_trainer(opts: Options, train_df, val_df, labels) -> Result:
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
        def __init__(self, df):
            enc = tokenizer(df["text"].tolist(), truncation=True, max_length=max_length)
            self.items = [{"input_ids": ids, "attention_mask": m, "labels": int(y)}
                          for ids, m, y in zip(enc["input_ids"], enc["attention_mask"], df["label"])]

        def __len__(self):
            return len(self.items)

        def __getitem__(self, i):
            return self.items[i]

    train_set, val_set = ListDataset(train_df), ListDataset(val_df)
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
    )
    clock, curve = Clock(), []

    class Timing(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            if opts.mode == "epochs":
                clock.start()

        def on_step_begin(self, args, state, control, **kw):
            if opts.mode == "throughput" and state.global_step == opts.warmup_steps:
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

    trainer = Trainer(model=model, args=args, train_dataset=train_set, eval_dataset=val_set,
                      data_collator=DataCollatorWithPadding(tokenizer), compute_metrics=compute_metrics,
                      callbacks=[Timing()])
    counter = TokenCounter(trainer, opts)
    trainer.train()
    res.train_time_s = round(clock.elapsed, 3)
    res.window_samples_per_s, res.windows = clock.window_median(), len(clock.windows)
    res.train_samples, res.train_tokens, res.tensor_tokens = counter.samples, counter.tokens, counter.tensor
    pred, res.eval_time_s = warm_timed(lambda: trainer.predict(val_set))
    res.eval_samples = len(val_set)
    res.val_accuracy = float((pred.predictions.argmax(-1) == pred.label_ids).mean())
    if opts.mode == "epochs":
        res.curve = curve
    res.peak_memory_mb = peak_memory_mb()
    return res


class TokenCounter:
    """Counts the examples and tokens the Trainer trains on in the timed part (wraps compute_loss)."""

    def __init__(self, trainer, opts: Options) -> None:
        self.samples = self.tokens = self.tensor = 0
        self.calls = 0
        original = trainer.compute_loss

        def counted(model, inputs, *args, **kwargs):
            if not model.training:  # prediction_step also computes the loss
                return original(model, inputs, *args, **kwargs)
            self.calls += 1
            if opts.mode == "epochs" or self.calls > opts.warmup_steps:
                mask = inputs["attention_mask"]
                self.samples += mask.shape[0]
                self.tokens += int(mask.sum())  # a sync, but only on the Trainer's own tensors
                self.tensor += mask.numel()
            return original(model, inputs, *args, **kwargs)

        trainer.compute_loss = counted


# ---------------------------------------------------------------------------- (c) texttune


def run_texttune(opts: Options, train_df, val_df, labels) -> Result:
    from texttune.tasks.classify import load_config
    from texttune.data.dataset import TextDataset
    from texttune.evaluation.evaluate import evaluate
    from texttune import runs
    from texttune.tasks.classify import ClassificationObjective, build, tokenize
    from texttune.training.callbacks import Callback
    from texttune.training.loop import Trainer

    dev, max_length = device(), TASKS[opts.task][1]
    res = Result(opts.variant, opts.task, opts.mode, str(dev))
    steps = total_steps(opts, len(train_df))
    overrides = [f"model.path={opts.model_path}", f"model.max_length={max_length}",
                 f"train.per_device_batch_size={opts.batch_size}", f"train.eval_batch_size={opts.eval_batch_size}",
                 f"train.lr={opts.lr}", f"train.max_steps={steps}", f"seed={opts.seed}",
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
    clock, curve = Clock(), []
    train = encoded["train"]

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
            if opts.profile and self.steps == opts.warmup_steps:
                from torch.profiler import ProfilerActivity, profile

                activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
                self.profiler = profile(activities=activities)
                self.profiler.__enter__()
            if self.profiler is not None and self.steps == opts.warmup_steps + 20:
                sync()
                self.profiler.__exit__(None, None, None)
                for key in ("self_cpu_time_total", "self_cuda_time_total"):
                    print(self.profiler.key_averages().table(sort_by=key, row_limit=22), flush=True)
                self.profiler = None
            if opts.mode == "throughput" and self.steps == opts.warmup_steps:
                clock.start()

    class Counting(Callback):
        """Through the loop's public hooks: tokens of every batch, the clock stopped while evaluating."""

        def on_batch_begin(self, trainer, indices) -> None:
            if opts.mode == "epochs" or trainer.state.global_step >= opts.warmup_steps:
                lengths = train.lengths[indices]
                res.train_samples += len(indices)
                res.train_tokens += int(lengths.sum())
                res.tensor_tokens += int(lengths.max()) * len(indices)

        def on_evaluate_begin(self, trainer) -> None:
            clock.stop()

        def on_evaluate(self, trainer, record) -> None:
            if opts.mode == "epochs":
                curve.append({"epoch": round(trainer.state.epoch + trainer.state.batch_in_epoch / trainer.batches_per_epoch),
                              "train_time_s": round(clock.elapsed, 2), "val_accuracy": record.get("accuracy")})

        def on_evaluate_end(self, trainer) -> None:
            clock.start()

    run_dir = Path(tempfile.mkdtemp(prefix="bench-texttune-"))
    validation = encoded["validation"] if opts.mode == "epochs" else None
    trainer = Trainer(model, train, validation, config.train, objective=ClassificationObjective(labels),
                      checkpoint_dir=run_dir / runs.CHECKPOINTS, metrics_path=run_dir / runs.METRICS_LOG,
                      pad_id=tokenizer.pad_token_id, seed=opts.seed, callbacks=[Counting(), Timing()])
    trainer.fit()
    clock.stop()
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
    res = RUNNERS[opts.variant](opts, train_df, val_df, labels)
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
    for field in ("batch_size", "eval_batch_size", "epochs", "warmup_steps", "timed_steps", "max_train",
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
