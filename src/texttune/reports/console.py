"""Terminal rendering of dataset summaries."""

from __future__ import annotations

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
