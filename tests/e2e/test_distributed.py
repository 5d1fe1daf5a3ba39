"""Data-parallel runs through two real CPU processes (``torchrun --nproc_per_node 2``, gloo): one run
directory written once, evaluation identical to one process on the same weights (odd split sizes),
training that tracks one process with the global batch size, and kill -9 + resume under two
processes. Tiny BERT without dropout, so one and two processes compute the same function."""

from __future__ import annotations

import itertools
import json
import math
import os
import random
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch.distributed as dist

from texttune import runs

pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="torch.distributed with the gloo backend is not available")

PER_DEVICE, STEPS, EVERY = 2, 20, 5  # 40 training rows, global batch 4: two epochs
KILL_AT = 10


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Distinct sentences: 40 to train on, 9 for validation and 11 for test (neither divides by 2)."""
    words = [(w, "pos") for w in ("wonderful", "great", "moving", "delightful", "superb", "charming")] + \
            [(w, "neg") for w in ("dull", "boring", "awful", "terrible", "clumsy", "tedious")]
    nouns = ("film", "story", "script", "cast", "ending", "score", "plot")
    rows = [(f"a {word} {noun}" + " indeed" * (i % 3), label)
            for i, ((word, label), noun) in enumerate(itertools.product(words, nouns))]
    random.Random(0).shuffle(rows)
    folder = tmp_path_factory.mktemp("dp-data")
    out = {}
    for name, part in (("train", rows[:40]), ("validation", rows[40:49]), ("test", rows[49:60])):
        out[name] = folder / f"{name}.csv"
        out[name].write_text("text,label\n" + "".join(f"{t},{label}\n" for t, label in part), encoding="utf-8")
    return out


def overrides(tiny_model_dir: Path, files: dict[str, Path], batch_size: int, output: Path) -> list[str]:
    return [f"model.path={tiny_model_dir}", "model.pooling=mean", "model.hidden_dropout=0",
            "model.attention_dropout=0", "model.head.dropout=0", f"data.train_file={files['train']}",
            f"data.validation_file={files['validation']}", f"data.test_file={files['test']}",
            f"train.max_steps={STEPS}", f"train.eval_every_steps={EVERY}", "train.log_every_steps=1",
            f"train.per_device_batch_size={batch_size}", "train.eval_batch_size=2", "train.num_threads=1",
            "train.lr=1e-2", f"output_dir={output}"]


def torchrun(*args: str) -> subprocess.CompletedProcess:
    """Two processes on this machine, on a free loopback port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_addr", "127.0.0.1", "--master_port", str(port), *args],
                          env=env, capture_output=True, text=True, timeout=240)


def cli_args(items: list[str]) -> list[str]:
    return ["-m", "texttune.cli", "run", *itertools.chain.from_iterable(("--set", item) for item in items)]


@pytest.fixture(scope="module")
def two_process_run(tiny_model_dir, files, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    output = tmp_path_factory.mktemp("dp-two")
    proc = torchrun(*cli_args(overrides(tiny_model_dir, files, PER_DEVICE, output)))
    assert proc.returncode == 0, proc.stderr[-4000:]
    dirs = list(output.iterdir())
    assert len(dirs) == 1, f"one run directory, not {sorted(d.name for d in dirs)}"
    return dirs[0], proc


@pytest.fixture(scope="module")
def one_process_run(tiny_model_dir, files, tmp_path_factory) -> Path:
    """The same data and seed in one process, with the global batch size (2 × per device)."""
    from texttune.tasks.classify import CLASSIFY

    output = tmp_path_factory.mktemp("dp-one")
    config = CLASSIFY.load_config(None, overrides(tiny_model_dir, files, 2 * PER_DEVICE, output))
    return runs.run_task(CLASSIFY, config, callbacks=[]).run_dir


def test_two_processes_write_one_complete_run_directory_once(two_process_run, one_process_run):
    run_dir, proc = two_process_run
    said = proc.stdout + proc.stderr
    assert "process 0 of 2" in said and "process 1 of 2" in said  # two ranks really ran
    assert proc.stdout.count(f"report: {run_dir}") == 1  # the result printed once
    assert {p.name for p in run_dir.iterdir()} == {p.name for p in one_process_run.iterdir()}
    metrics = runs.read_json(run_dir, runs.METRICS)
    assert (metrics["world_size"], metrics["global_batch_size"], metrics["steps"]) == (2, 2 * PER_DEVICE, STEPS)
    records = [(r["type"], r["step"]) for r in runs.read_records(run_dir)]
    assert len(records) == len(set(records)) == STEPS + STEPS // EVERY  # no line written twice


def test_two_process_evaluation_equals_one_process_evaluation_of_the_same_weights(two_process_run):
    """The saved model evaluated here in one process: every metric, the fitted temperature and the
    test predictions are the numbers the two processes recorded, exactly."""
    from texttune.data.load import prepare_data
    from texttune.models.loading import load_classifier
    from texttune.models.saving import load_tokenizer_from
    from texttune.tasks.classify import CLASSIFY, final_evaluation, tokenize

    run_dir, _ = two_process_run
    config = CLASSIFY.load_config(run_dir / runs.CONFIG, [])
    ds, _, _ = prepare_data(config.data)
    assert (len(ds.splits["validation"]), len(ds.splits["test"])) == (9, 11)
    model = load_classifier(runs.model_dir_of(run_dir))
    tokenizer = load_tokenizer_from(runs.model_dir_of(run_dir))
    encoded, _ = tokenize(ds, tokenizer, config.model.max_length)
    trainer = SimpleNamespace(model=model, pad_id=tokenizer.pad_token_id or 0, accelerator=None,
                              cfg=config.train)
    here = final_evaluation(trainer, encoded, ds, calibrate=True)
    recorded = runs.read_json(run_dir, runs.METRICS)
    assert here["temperature"] == recorded["temperature"]
    for split in ("validation", "test"):
        assert json.loads(json.dumps(here[split])) == recorded[split], split
    predictions = runs.read_json(run_dir, runs.TEST_PREDICTIONS)
    assert predictions["predicted"] == here["_test_logits"].argmax(dim=-1).tolist()
    assert predictions["rows"] == encoded["test"].rows.tolist()


def test_two_processes_track_one_process_with_the_global_batch(two_process_run, one_process_run):
    """Same batches, same seed: the losses differ only by float rounding (gradients averaged over
    two processes, each batch padded to its own half's length)."""
    run_dir, _ = two_process_run
    train = lambda d: [(r["step"], r["loss"]) for r in runs.read_records(d) if r["type"] == "train"]  # noqa: E731
    two, one = train(run_dir), train(one_process_run)
    assert [s for s, _ in two] == [s for s, _ in one] == list(range(1, STEPS + 1))
    for (step, a), (_, b) in zip(two, one):
        assert a == pytest.approx(b, abs=1e-4), f"step {step}: {a} (2 processes) vs {b} (1 process)"
    m2, m1 = runs.read_json(run_dir, runs.METRICS), runs.read_json(one_process_run, runs.METRICS)
    for split in ("validation", "test"):
        assert m2[split]["accuracy"] == m1[split]["accuracy"]
        assert m2[split]["loss"] == pytest.approx(m1[split]["loss"], abs=1e-4)
    assert m2["best"]["step"] == m1["best"]["step"]


KILLED = r"""
import os, sys
from texttune import runs
from texttune.tasks.classify import CLASSIFY
from texttune.training.callbacks import Callback

class Kill(Callback):
    def on_evaluate_end(self, trainer):  # after the checkpoint (and its barrier)
        if trainer.state.global_step == int(sys.argv[1]) and trainer.accelerator.is_main_process:
            os.kill(os.getpid(), 9)  # no clean-up of any kind, as a power cut

runs.run_task(CLASSIFY, CLASSIFY.load_config(None, sys.argv[2:]), callbacks=[Kill()])
"""


def scores(metrics):
    volatile = {"train_time_s", "train_samples_per_s", "seconds_per_step", "wall_time_s", "peak_memory_mb",
                "tokenization", "elapsed_s", "samples_per_s"}
    if isinstance(metrics, dict):
        return {k: scores(v) for k, v in metrics.items() if k not in volatile}
    return metrics


def test_kill_9_of_a_two_process_run_resumes_under_two_processes(two_process_run, tiny_model_dir, files,
                                                                  tmp_path):
    script = tmp_path / "killed.py"
    script.write_text(KILLED, encoding="utf-8")
    output = tmp_path / "killed"
    proc = torchrun(str(script), str(KILL_AT), *overrides(tiny_model_dir, files, PER_DEVICE, output))
    assert proc.returncode != 0, proc.stderr[-3000:]
    (run_dir,) = output.iterdir()
    assert runs.is_resumable(run_dir) and not runs.is_finished(run_dir)
    proc = torchrun("-m", "texttune.cli", "run", "--resume", str(run_dir))
    assert proc.returncode == 0, proc.stderr[-4000:]
    whole, _ = two_process_run
    assert scores(runs.read_json(run_dir, runs.METRICS)) == scores(runs.read_json(whole, runs.METRICS))
    records = lambda d: [scores(r) for r in runs.read_records(d)]  # noqa: E731
    assert records(run_dir) == records(whole)


def test_two_processes_train_by_token_budget(tiny_model_dir, files, tmp_path):
    """``train.batch_tokens`` under two processes: the global batches of ``epoch_token_batches`` for two
    ranks, each rank's share within the budget, DDP through shares of varying size, and a record of
    the effective batch that says which examples went through."""
    from texttune.data.load import prepare_data
    from texttune.data.tokenize import epoch_token_batches, padded_tokens
    from texttune.models.saving import load_tokenizer_from
    from texttune.tasks.classify import CLASSIFY, tokenize

    budget, output = 24, tmp_path / "tokens"
    items = [*overrides(tiny_model_dir, files, PER_DEVICE, output), f"train.batch_tokens={budget}"]
    proc = torchrun(*cli_args(items))
    assert proc.returncode == 0, proc.stderr[-4000:]
    (run_dir,) = output.iterdir()
    metrics = runs.read_json(run_dir, runs.METRICS)
    assert (metrics["world_size"], metrics["global_batch_size"], metrics["steps"]) == (2, None, STEPS)
    effective = metrics["effective_batch"]
    assert (effective["batch_tokens"], effective["world_size"]) == (budget, 2)
    config = CLASSIFY.load_config(run_dir / runs.CONFIG, [])
    ds, _, _ = prepare_data(config.data)
    encoded, _ = tokenize(ds, load_tokenizer_from(runs.model_dir_of(run_dir)), config.model.max_length)
    lengths = encoded["train"].lengths
    batches = [b for epoch in range(STEPS) for b in epoch_token_batches(lengths, budget, config.seed, epoch,
                                                                         True, ranks=2)][:STEPS]
    assert effective["examples_per_step"] == round(sum(map(len, batches)) / STEPS, 2) > 2
    padded = sum(padded_tokens(lengths, b) for b in batches)
    assert effective["padded_tokens_per_step"] == round(padded / STEPS, 1)
    for batch in batches:
        for rank in range(2):
            assert len(batch) <= 2 or padded_tokens(lengths, batch[rank::2]) <= budget
    losses = [r["loss"] for r in runs.read_records(run_dir) if r["type"] == "train"]
    assert len(losses) == STEPS and all(math.isfinite(loss) for loss in losses)  # every step logged


# --------------------------------------------------------------------------- pre-training and SFT


def contract_tasks():
    """tests/contract/test_tasks.py (the tiny config of each kind, the record files every kind
    writes), loaded by path: the test folders are not packages."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "contract" / "test_tasks.py"
    if "test_tasks" in sys.modules and Path(sys.modules["test_tasks"].__file__).resolve() == path:
        return sys.modules["test_tasks"]
    spec = importlib.util.spec_from_file_location("test_tasks", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["test_tasks"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def lm_files(tmp_path_factory) -> dict[str, Path]:
    """The corpus and the prompt/completion pairs of the contract tests' tiny configs."""
    from conftest import LM_TEXTS

    folder = tmp_path_factory.mktemp("dp-lm-data")
    corpus, pairs = folder / "corpus.txt", folder / "pairs.jsonl"
    corpus.write_text("\n".join(LM_TEXTS[:120]), encoding="utf-8")
    pairs.write_text("".join(json.dumps({"prompt": LM_TEXTS[i], "completion": LM_TEXTS[i + 1]}) + "\n"
                             for i in range(0, 40, 2)), encoding="utf-8")
    return {"toy": folder / "unused.csv", "corpus": corpus, "pairs": pairs}


# Batches of one example: the 3 held-out blocks of 10 tokens (mlm) and the 5 validation conversations
# (sft) fall unevenly on two processes.
LM_EXTRA = {"mlm": ["train.eval_batch_size=1", "mlm.block_size=10"],
            "sft": ["train.eval_batch_size=1", "data.validation_size=0.25"]}
FINAL = {"mlm": "held_out", "sft": "validation"}


@pytest.fixture(scope="module", params=["mlm", "sft"])
def lm_run(request, lm_files, tiny_model_dir, tiny_lm, tmp_path_factory) -> tuple[str, Path]:
    kind = request.param
    contract = contract_tasks()
    output = tmp_path_factory.mktemp(f"dp-{kind}")
    items = [*contract.tiny_overrides(kind, lm_files, tiny_model_dir, tiny_lm), *LM_EXTRA[kind],
             f"output_dir={output}"]
    sets = itertools.chain.from_iterable(("--set", item) for item in items)
    proc = torchrun("-m", "texttune.cli", runs.TASKS.get(kind).command, *sets)
    assert proc.returncode == 0, proc.stderr[-4000:]
    said = proc.stdout + proc.stderr
    assert "process 0 of 2" in said and "process 1 of 2" in said
    dirs = list(output.iterdir())
    assert len(dirs) == 1, f"one run directory, not {sorted(d.name for d in dirs)}"
    return kind, dirs[0]


def test_two_process_language_model_runs_write_one_complete_run_directory(lm_run):
    kind, run_dir = lm_run
    contract = contract_tasks()
    assert {p.name for p in run_dir.iterdir()} == contract.COMMON | contract.OWN[kind]
    metrics = runs.read_json(run_dir, runs.METRICS)
    assert (metrics["world_size"], metrics["global_batch_size"], metrics["steps"]) == (2, 8, contract.STEPS)
    records = [(r["type"], r["step"]) for r in runs.read_records(run_dir)]
    assert len(records) == len(set(records)) == contract.STEPS + contract.STEPS // contract.EVERY


def one_process_evaluation(kind: str, run_dir: Path) -> dict:
    """The saved model evaluated here, in one process, on the run's held-out data."""
    from texttune.models.saving import load_tokenizer_from

    config = runs.TASKS.get(kind).load_config(run_dir / runs.CONFIG, [])
    folder = run_dir / runs.MODEL
    tokenizer = load_tokenizer_from(folder)
    if kind == "mlm":
        from transformers import AutoModelForMaskedLM

        from texttune.models.saving import load_pretrained
        from texttune.tasks.mlm import MaskedLMTask, blocks, corpus_splits

        model = load_pretrained(AutoModelForMaskedLM, folder, strict=True)
        _, texts, _ = corpus_splits(config.corpus, config.seed)
        data = blocks(texts, tokenizer, config.mlm.block_size)
        task = MaskedLMTask(tokenizer, config.mlm, config.seed)
    else:
        from texttune.tasks import sft

        model, tokenizer = sft.load_causal_lm(str(folder))
        _, conversations, _ = sft.load_conversations(config.data, config.seed)
        data = sft.encode_conversations(conversations, tokenizer, config.model.max_length,
                                        sft._template(tokenizer))
        task = sft.SFTTask()
    assert len(data) >= 3, "too few held-out batches to shard unevenly"
    return task.evaluate(model, data, tokenizer.pad_token_id, config.train.eval_batch_size, None)


def test_two_process_language_model_evaluation_equals_one_process_evaluation(lm_run):
    """Held-out loss, accuracy, perplexity and token counts (mlm: the same seeded masks) recorded by the
    two processes are those of one process evaluating the saved weights."""
    kind, run_dir = lm_run
    recorded = runs.read_json(run_dir, runs.METRICS)[FINAL[kind]]
    here = one_process_evaluation(kind, run_dir)
    assert set(here) == set(recorded)
    for key, value in here.items():
        assert recorded[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
