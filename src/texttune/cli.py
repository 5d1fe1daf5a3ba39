"""The ``texttune`` command line: a thin Typer shell over the library.

Each command parses its arguments, calls the library and prints. A ``TexttuneError`` (bad config,
bad data, missing files) is printed as one message with a non-zero exit code and no traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import click
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from texttune import __version__
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

out = Console(highlight=False)
err = Console(stderr=True, highlight=False, soft_wrap=True)

SetOption = Annotated[
    Optional[list[str]],
    typer.Option("--set", "-s", help="Override a config key: --set data.max_train_samples=500 (repeatable)."),
]


@app.command()
def version() -> None:
    """Print the versions of texttune and its main libraries."""
    from texttune.record import environment

    for key, value in environment().items():
        out.print(f"{key}: {value}")


# --------------------------------------------------------------------------- config


@config_app.command("show")
def config_show(
    file: Annotated[Optional[Path], typer.Argument(help="Experiment YAML (omit for the defaults).")] = None,
    set_: SetOption = None,
    comments: Annotated[bool, typer.Option(help="Show each field's description.")] = True,
) -> None:
    """Print the resolved config: defaults ← FILE (and its extends) ← --set overrides."""
    from texttune.config import dump_yaml, load_config

    config = load_config(file, set_ or [])
    typer.echo(dump_yaml(config, comments=comments), nl=False)


@config_app.command("validate")
def config_validate(
    files: Annotated[list[Path], typer.Argument(help="Config files to check.")],
) -> None:
    """Check config files; report every invalid one."""
    from texttune.config import load_config

    failed = 0
    for file in files:
        try:
            load_config(file)
            out.print(f"[green]ok[/green]    {file}")
        except TexttuneError as error:
            failed += 1
            err.print(f"[red]error[/red] {escape(str(error))}", soft_wrap=True)
    if failed:
        raise TexttuneError(f"{failed} of {len(files)} config files are invalid")


# --------------------------------------------------------------------------- data


def _data_config(target: str | None, config: Path | None, overrides: list[str] | None):
    """The DataConfig for a command: a config file's data section, then NAME|FILE, then --set."""
    from texttune.config import load_config
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
    from texttune.reports.console import render_summary

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
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Where to save the JSON report (default: a new data-check-<name>.json here).")] = None,
) -> None:
    """Empty texts, bad labels, duplicates, conflicting labels, split overlap, class imbalance."""
    from texttune.data.checks import apply_policy, run_checks
    from texttune.data.load import load_dataset
    from texttune.io import unique_path

    overrides = list(set_ or []) + ([f"data.checks.policy={policy}"] if policy else [])
    cfg = _data_config(target, config, overrides)
    ds = load_dataset(cfg, carve=carved)
    report = run_checks(ds, cfg.checks)
    out.print(report.render_table())
    path = output if output is not None else unique_path(Path(f"data-check-{ds.name}.json"))
    report.write_json(path)
    out.print(f"report saved to {path}")
    _, dropped = apply_policy(ds, report, cfg.checks)  # raises under 'fail' or on unusable labels
    if any(counts.get("total", 0) for counts in dropped.values()):
        out.print(f"policy 'drop' would remove: {json.dumps(dropped)}")


# --------------------------------------------------------------------------- entry point


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (the console script exits with it)."""
    try:
        result = app(args=argv, prog_name="texttune", standalone_mode=False)
    except TexttuneError as error:
        err.print(f"[red]error:[/red] {escape(str(error))}", soft_wrap=True)
        return error.exit_code
    except click.exceptions.Abort:
        err.print("aborted")
        return 130
    except click.exceptions.ClickException as error:
        error.show()
        return error.exit_code
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
