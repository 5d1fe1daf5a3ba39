"""Terminal rendering of dataset summaries and of run lists."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table


def _short(text: str, width: int = 110) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def render_summary(console: Console, summary: dict[str, Any]) -> None:
    console.print(f"[bold]{summary['name']}[/bold] ({summary['task']})")
    if summary.get("labels"):
        console.print(f"labels ({len(summary['labels'])}): {escape(', '.join(summary['labels']))}")
    for note in summary.get("notes", []):
        console.print(f"[yellow]note:[/yellow] {escape(note)}")

    splits = Table(title="Splits")
    for column in ("split", "rows", "how it was formed", "file"):
        splits.add_column(column)
    for name, info in summary["splits"].items():
        splits.add_row(name, f"{info['rows']:,}", escape(info["provenance"]), escape(info["file"]))
    console.print(splits)

    lengths = Table(title=f"Text lengths (characters; tokens with '{summary['tokenizer']}')")
    lengths.add_column("split")
    lengths.add_column("unit")
    keys = ["p5", "p50", "p90", "p95", "p99", "max"]
    for key in keys:
        lengths.add_column(key, justify="right")
    for name, info in summary["splits"].items():
        for unit in ("chars", "tokens"):
            label = unit + (" (sample)" if unit == "tokens" and info["tokens_sampled"] else "")
            lengths.add_row(name, label, *[str(info[unit].get(k, "")) for k in keys])
    console.print(lengths)

    if summary.get("labels"):
        balance = Table(title="Class balance")
        balance.add_column("label")
        names = list(summary["splits"])
        for name in names:
            balance.add_column(name, justify="right")
        for label in summary["labels"]:
            cells = []
            for name in names:
                classes = summary["splits"][name].get("classes", {})
                count, total = classes.get(label, 0), max(summary["splits"][name]["rows"], 1)
                cells.append(f"{count:,} ({100 * count / total:.1f}%)")
            balance.add_row(escape(label), *cells)
        console.print(balance)

    for name, info in summary["splits"].items():
        for example in info["examples"]:
            label = f"[{escape(example['label'])}] " if "label" in example else ""
            pair = f"  ||  {escape(_short(example['text_pair']))}" if "text_pair" in example else ""
            console.print(f"{name}: {label}{escape(_short(example['text']))}{pair}")


# The headline's split in few characters: a run's details fit 80 columns.
_SHORT = {"validation": "val", "held_out": "held-out"}
# The columns of a run's details and the most characters each shows: indented under the run's folder
# they fit 80 columns (--json has every field in full, wall time too).
RUN_COLUMNS = (("kind", 8), ("model", 15), ("data", 10), ("score", 16), ("status", 10), ("trainable", 9))
GAP = "  "


def _clip(text: Any, width: int) -> str:
    text = str(text)
    return text if len(text) <= width else text[: width - 1] + "…"


def _model_of(row: dict[str, Any]) -> str:
    """``cnn``, ``minilm lora``: the model (a folder's last part) and a strategy that is not full."""
    model = str(row.get("model_path") or row.get("model") or "—").rstrip("/").rsplit("/", 1)[-1]
    strategy = row.get("strategy")
    return model if strategy in (None, "—", "full") else f"{model} {strategy}"


def _score_of(row: dict[str, Any]) -> str:
    """``test 0.9120`` (accuracy, the usual headline), ``val loss 1.2345`` (any other metric)."""
    if row.get("score") is None:
        return "—"
    split = _SHORT.get(row.get("split"), row.get("split"))
    metric = "" if row.get("metric") == "accuracy" else f" {row.get('metric')}"
    return f"{split}{metric} {row['score']:.4f}"


def _details(row: dict[str, Any]) -> list[str]:
    pct = row.get("trainable_pct")
    values = [row.get("kind"), _model_of(row), row.get("dataset"), _score_of(row), row["status"],
              "—" if pct is None else f"{pct:.2f}%"]
    return [_clip(value, limit) for value, (_, limit) in zip(values, RUN_COLUMNS)]


def runs_lines(rows: list[dict[str, Any]], folder: Path, width: int) -> list[str]:
    """``texttune runs list``: a line per run when the screen is wide enough for its folder and details,
    else the folder on one line (whole: it is what other commands take) and the details under it."""
    paths = [str(Path(row["run"]).relative_to(folder)) if Path(row["run"]).is_relative_to(folder)
             else row["run"] for row in rows]
    cells = [_details(row) for row in rows]
    header = [name for name, _ in RUN_COLUMNS]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(header)]

    def line(values: list[str]) -> str:
        return GAP.join(v.ljust(w) for v, w in zip(values, widths)).rstrip()

    run_width = max([len("run"), *map(len, paths)])
    if run_width + len(GAP) + len(line(header)) <= width:
        return [f"{'run'.ljust(run_width)}{GAP}{line(header)}",
                *(f"{path.ljust(run_width)}{GAP}{line(c)}" for path, c in zip(paths, cells))]
    out = ["run", GAP + line(header)]
    for path, c in zip(paths, cells):
        out += [path, GAP + line(c)]
    return out
