"""Charts and the one-file HTML page of ``texttune compare``.

Input is the leaderboard dict (the content of ``leaderboard.json``): ``name``, ``metric``, ``split``,
``baseline`` (a cell name or ``None``), ``rows`` (one per cell, best first) and ``curves`` (validation
points per run of each cell). ``draw_charts`` writes four PNGs; ``render_comparison`` writes
``comparison.html`` beside them: inline CSS, PNGs as base64 data URIs, no scripts, no external URL.
Any number may be ``None`` (a failed cell): it becomes a gap in a chart and "—" in the table.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import quote

import matplotlib

matplotlib.use("Agg")  # headless: no display on training machines; must precede the pyplot import

import matplotlib.pyplot as plt  # noqa: E402

from texttune import runs
from texttune.io import atomic_write_text  # noqa: E402
from texttune.reports.html import CSS, _duration, _image  # noqa: E402
from texttune.reports.leaderboard import shared_caveats, vs_baseline_parts  # noqa: E402
from texttune.reports.plots import _note, _save  # noqa: E402

Board = dict[str, Any]

CELL_COLOR, BASELINE_COLOR = "#1f77b4", "#ff7f0e"
LABEL_MAX_CHARS = 28
CHART_FILES = {
    "scores": "scores.png", "params_vs_score": "params_vs_score.png",
    "validation_curves": "validation_curves.png", "time_vs_score": "time_vs_score.png",
}
EXTRA_CSS = """
.scroll { overflow-x: auto; } #leaderboard { font-size: 0.85rem; }
#leaderboard td.num, #leaderboard td:last-child { white-space: nowrap; }
tr.baseline td { background: #fff4e5; }
.tag { font-size: 0.75rem; color: #8a5a00; border: 1px solid #e0a800; border-radius: 3px; padding: 0 0.3rem; }
.warn { color: #8a5a00; }
figure { margin: 1rem 0 2rem; } figcaption { color: #666; font-size: 0.9rem; margin-top: 0.3rem; }
"""


# ---------------------------------------------------------------- reading the board


def _num(value: Any) -> float | None:
    """A finite number as float, else ``None``: failed cells and malformed fields read as missing."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _rows(board: Board) -> list[dict[str, Any]]:
    return [row for row in board.get("rows") or [] if isinstance(row, dict)]


def _cell(row: dict[str, Any]) -> str:
    return str(row.get("cell", "?"))


def _score_label(board: Board) -> str:
    return f"{board.get('split') or 'test'} {board.get('metric') or 'score'}"


def _is_baseline(board: Board, row: dict[str, Any]) -> bool:
    return board.get("baseline") is not None and _cell(row) == str(board["baseline"])


def _ci_error(row: dict[str, Any]) -> tuple[float, float] | None:
    """(below, above) the mean for an error bar; ``None`` when the mean or either CI bound is missing."""
    mean, low, high = _num(row.get("mean")), _num(row.get("ci_low")), _num(row.get("ci_high"))
    if mean is None or low is None or high is None:
        return None
    # The CI is over test examples and the mean over seeds, so the mean can fall outside it.
    return max(mean - low, 0.0), max(high - mean, 0.0)


# ---------------------------------------------------------------- charts


def _label(name: str) -> str:
    """A chart label: shortened, with ``$`` escaped so matplotlib never parses a name as mathtext."""
    name = name if len(name) <= LABEL_MAX_CHARS else name[: LABEL_MAX_CHARS - 1] + "…"
    return name.replace("$", r"\$")


def _draw_bars(ax: plt.Axes, board: Board, rows: list[dict[str, Any]]) -> None:
    means = [_num(row.get("mean")) for row in rows]
    colors = [BASELINE_COLOR if _is_baseline(board, row) else CELL_COLOR for row in rows]
    ax.barh(range(len(rows)), [m if m is not None else 0.0 for m in means], color=colors, height=0.6)
    ends = []
    for y, (row, mean) in enumerate(zip(rows, means)):
        error = _ci_error(row)
        if error is not None:
            ax.errorbar(mean, y, xerr=[[error[0]], [error[1]]], fmt="none", ecolor="black", capsize=3)
        end = 0.0 if mean is None else mean + (error[1] if error else 0.0)
        ends.append(end)
        text, color = ("no score", "gray") if mean is None else (f"{mean:.4f}", "black")
        ax.annotate(text, (max(end, 0.0), y), xytext=(4, 0), textcoords="offset points", va="center",
                    fontsize=8, color=color)
    if ends:  # room on the right for the value labels
        low, high = min(0.0, *ends), max(0.0, *ends)
        ax.set_xlim(low, high + 0.15 * ((high - low) or 1.0))


def plot_scores(board: Board, path: str | Path) -> Path:
    """Bars of each cell's mean score (row order, best on top) with 95% CI error bars; baseline in orange."""
    rows, title = _rows(board), "Mean over seeds, 95% CI"
    fig, ax = plt.subplots(figsize=(8, max(2.5, 0.45 * len(rows) + 1.2)))
    if any(_num(row.get("mean")) is not None for row in rows):
        _draw_bars(ax, board, rows)
        baseline = next((_num(r.get("mean")) for r in rows if _is_baseline(board, r)), None)
        if baseline is not None:  # a line, not a legend: a legend box would cover some bar's label
            ax.axvline(baseline, color=BASELINE_COLOR, ls="--", lw=1)
            title += " (dashed line: baseline mean)"
    else:
        _note(ax, "no data")
    ax.set_yticks(range(len(rows)), [_label(_cell(row)) for row in rows])
    ax.invert_yaxis()  # best first, as in the leaderboard
    ax.set_xlabel(_score_label(board))
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def _scatter(board: Board, path: str | Path, x_key: str, xlabel: str, title: str, log_x: bool) -> Path:
    """Mean score against ``row[x_key]``, one labelled point per cell; cells missing either are listed."""
    fig, ax = plt.subplots(figsize=(7, 5))
    shown, missing = 0, []
    for row in _rows(board):
        x, y = _num(row.get(x_key)), _num(row.get("mean"))
        if x is None or y is None or (log_x and x <= 0):
            missing.append(_cell(row))
            continue
        color = BASELINE_COLOR if _is_baseline(board, row) else CELL_COLOR
        error = _ci_error(row)
        yerr = None if error is None else [[error[0]], [error[1]]]
        ax.errorbar(x, y, yerr=yerr, fmt="o", color=color, ecolor="gray", capsize=3, ms=6)
        ax.annotate(_label(_cell(row)), (x, y), xytext=(5, 4), textcoords="offset points", fontsize=8)
        shown += 1
    if shown and log_x:
        ax.set_xscale("log")
    if not shown:
        _note(ax, "no data")
    elif missing:
        title += f"\n(not shown, no data: {_label(', '.join(missing))})"
    ax.set_xlabel(xlabel)
    ax.set_ylabel(_score_label(board))
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_params_vs_score(board: Board, path: str | Path) -> Path:
    """Scatter of mean score against trainable parameters (log scale), each point named by its cell."""
    return _scatter(board, path, "trainable", "trainable parameters (log scale)",
                    "Score against trainable parameters", log_x=True)


def plot_time_vs_score(board: Board, path: str | Path) -> Path:
    """Scatter of mean score against wall time in seconds, each point named by its cell."""
    return _scatter(board, path, "wall_time_s", "wall time (s)", "Score against wall time", log_x=False)


def _points(run: Any) -> tuple[list[float], list[float]]:
    """A run's (steps, values), sorted by step, without points where either is missing."""
    raw = run.get("points") if isinstance(run, dict) else None
    pairs = [(_num(p[0]), _num(p[1])) for p in raw or [] if isinstance(p, list | tuple) and len(p) >= 2]
    pairs = sorted((s, v) for s, v in pairs if s is not None and v is not None)
    return [s for s, _ in pairs], [v for _, v in pairs]


def plot_curves(board: Board, path: str | Path) -> Path:
    """Validation curves of every run, one colour per cell (its seeds share it), legend by cell."""
    curves = board.get("curves") if isinstance(board.get("curves"), dict) else {}
    # Leaderboard order first, so colours follow the table; then any cell only the curves know.
    cells = list(dict.fromkeys([_cell(row) for row in _rows(board)] + [str(c) for c in curves]))
    cmap = plt.get_cmap("tab10" if len(cells) <= 10 else "tab20")
    fig, ax = plt.subplots(figsize=(8, 5))
    drawn = 0
    for i, cell in enumerate(cells):
        label = _label(cell)
        for run in curves.get(cell) or []:
            steps, values = _points(run)
            if steps:
                ax.plot(steps, values, color=cmap(i % cmap.N), lw=1.5, alpha=0.85, label=label,
                        marker="o" if len(steps) <= 20 else None, ms=3)
                label, drawn = None, drawn + 1  # one legend entry per cell, not per seed
    if drawn:
        outside = len(cells) > 8  # a long legend would cover the curves
        ax.legend(fontsize=8, **({"loc": "upper left", "bbox_to_anchor": (1.02, 1)} if outside else {}))
    else:
        _note(ax, "no data")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(f"validation {board.get('metric') or 'score'}")
    ax.set_title("Validation curves (one colour per cell, one line per seed)")
    ax.grid(alpha=0.3)
    return _save(fig, path)


CHARTS: dict[str, Callable[[Board, Path], Path]] = {
    "scores": plot_scores, "params_vs_score": plot_params_vs_score,
    "validation_curves": plot_curves, "time_vs_score": plot_time_vs_score,
}


def draw_charts(board: Board, out_dir: str | Path) -> dict[str, Path]:
    """Draw the four charts into ``out_dir`` (``<name>.png``); returns name -> path, always all four."""
    out_dir = Path(out_dir)
    return {name: draw(board, out_dir / CHART_FILES[name]) for name, draw in CHARTS.items()}


# ---------------------------------------------------------------- html


def _fixed(value: Any, digits: int = 4, sign: bool = False) -> str:
    number = _num(value)
    return "—" if number is None else f"{number:{'+' if sign else ''},.{digits}f}"


def _report_href(out_dir: Path, run: Any) -> str | None:
    """Relative href to a run's report.html, only when that file exists under ``out_dir``."""
    if not isinstance(run, str) or not run or Path(run).is_absolute():
        return None
    if not (out_dir / run / runs.REPORT).is_file():
        return None
    # Quoted so a ':' can never turn the path into a URL scheme; then escaped for the attribute.
    return escape(quote(f"{Path(run).as_posix()}/report.html"))


def _mean_std(row: dict[str, Any]) -> str:
    mean = _num(row.get("mean"))
    if mean is None:
        return "—"
    std = _num(row.get("std"))
    return f"{mean:.4f}" + ("" if std is None else f" ± {std:.4f}")


def _ci(row: dict[str, Any]) -> str:
    low, high = _num(row.get("ci_low")), _num(row.get("ci_high"))
    return "—" if low is None or high is None else f"[{low:.4f}, {high:.4f}]"


def _p_value(row: dict[str, Any]) -> str:
    p = _num(row.get("p_value"))
    if p is None:
        return "—"
    test = row.get("significance_test")
    text = "&lt;0.001" if p < 0.001 else f"{p:.3f}"
    return f'<span title="{escape(str(test))}">{text}</span>' if test else text


def _params(row: dict[str, Any]) -> str:
    trainable, total = _num(row.get("trainable")), _num(row.get("total"))
    if trainable is None:
        return "—"
    # From the counts when possible: the share then never depends on fraction-vs-percent.
    pct = 100 * trainable / total if total else _num(row.get("trainable_pct"))
    return f"{trainable:,.0f}" + ("" if pct is None else f" ({pct:.2f}%)")


def _mb(value: Any, digits: int) -> str:
    number = _num(value)
    return "—" if number is None else f"{number:,.{digits}f} MB"


def _runs(row: dict[str, Any], out_dir: Path) -> str:
    """Every run of the cell: 'seed N' (or its folder name), linked to its report when one exists."""
    runs, seeds = row.get("runs") or [], row.get("seeds") or []
    items = []
    for i, run in enumerate(runs):
        name = f"seed {seeds[i]}" if len(seeds) == len(runs) else Path(str(run)).name
        href, title = _report_href(out_dir, run), escape(str(run))
        items.append(f'<a href="{href}" title="{title}">{escape(name)}</a>' if href
                     else f'<span title="{title}">{escape(name)}</span>')
    return "<br>".join(items) or "—"


def _cell_link(row: dict[str, Any], out_dir: Path) -> str:
    runs = row.get("runs") or []
    href = _report_href(out_dir, runs[0]) if runs else None
    name, axes = escape(_cell(row)), row.get("axes")
    title = escape(", ".join(f"{k}={v}" for k, v in axes.items())) if isinstance(axes, dict) else ""
    cell = f'<a href="{href}">{name}</a>' if href else name
    return f'<span title="{title}">{cell}</span>' if title else cell


def _leaderboard_cells(board: Board, row: dict[str, Any], rank: str, out_dir: Path,
                       shared: list[str] = ()) -> list[str]:
    """One row's cells in column order, already escaped or formatted."""
    delta = '<span class="tag">baseline</span>' if _is_baseline(board, row) else _fixed(
        row.get("delta"), sign=True)
    return [rank, _cell_link(row, out_dir), _mean_std(row), _ci(row), delta, _p_value(row),
            _vs_classic(row), _params(row),
            _duration(_num(row.get("wall_time_s"))), _mb(row.get("peak_memory_mb"), 0),
            _mb(row.get("checkpoint_size_mb"), 1), _runs(row, out_dir), _caveats(row, shared)]


def _vs_classic(row: dict[str, Any]) -> str:
    """Against the best classic baseline on the same test examples (leaderboard's vs_best_baseline)."""
    verdict, detail = vs_baseline_parts(row)
    if not detail:
        return f'<span class="tag">{verdict}</span>' if verdict else "—"
    shown = verdict if verdict == "better" else f'<strong class="warn">{verdict}</strong>'
    return f"{shown} ({escape(detail)})"


def _caveats(row: dict[str, Any], shared: list[str] = ()) -> str:
    """The data checks' findings that change what the cell's score means (train/test overlap, ...);
    those every cell shares are written once under the table."""
    caveats = [c for c in row.get("data_caveats") or [] if c not in shared]
    return ("<br>".join(f'<span class="warn">{escape(str(c))}</span>' for c in caveats)
            or ("as below" if shared else "—"))


LEADERBOARD_COLUMNS = ("rank", "cell", "mean ± std", "95% CI", "Δ vs baseline", "p-value",
                       "vs best classic baseline", "trainable", "wall time", "peak memory", "checkpoint size",
                       "runs", "data caveats")
TEXT_COLUMNS = {1, 6, 11, 12}  # the others are right-aligned numbers


def _leaderboard(board: Board, out_dir: Path) -> str:
    """``<table id="leaderboard">``, one body row per cell; failed cells (no mean) get no rank."""
    head = "".join(f"<th>{escape(h)}</th>" for h in LEADERBOARD_COLUMNS)
    lines, rank = [], 0
    shared = shared_caveats(_rows(board))
    for row in _rows(board):
        has_mean = _num(row.get("mean")) is not None
        rank += has_mean
        cells = _leaderboard_cells(board, row, str(rank) if has_mean else "—", out_dir, shared)
        tds = "".join(f"<td>{c}</td>" if i in TEXT_COLUMNS else f'<td class="num">{c}</td>'
                      for i, c in enumerate(cells))
        lines.append(f'<tr class="baseline">{tds}</tr>' if _is_baseline(board, row) else f"<tr>{tds}</tr>")
    body = "\n".join(lines)
    # In a scrolling box: eleven columns may be wider than the page on a narrow screen.
    note = ("<p>Data caveats of every cell (the same splits): "
            + "; ".join(f'<span class="warn">{escape(c)}</span>' for c in shared) + ".</p>") if shared else ""
    return (f'<div class="scroll"><table id="leaderboard"><thead><tr>{head}</tr></thead><tbody>\n{body}\n'
            "</tbody></table></div>" + note)


def _description(board: Board) -> str:
    rows = _rows(board)
    n_runs = sum(len(row.get("runs") or []) for row in rows)
    baseline = board.get("baseline")
    against = f"baseline <b>{escape(str(baseline))}</b>" if baseline is not None else "no baseline"
    tests = {str(r["significance_test"]) for r in rows if r.get("significance_test")}
    how = f"; p-value: {escape(', '.join(sorted(tests)))} against the baseline" if tests else ""
    metric, split = escape(str(board.get("metric") or "score")), escape(str(board.get("split") or "test"))
    return (f'<p class="sub"><b>{metric}</b> on the <b>{split}</b> split · {len(rows)} cells, '
            f"{n_runs} runs · {against}</p>\n"
            f"<p>Mean ± std over seeds; 95% CI by bootstrap over examples{how}.</p>")


def _figures(board: Board, charts: dict[str, Path]) -> Iterable[str]:
    """The four charts as ``<figure id="chart-...">`` with embedded PNGs and distinct alt texts."""
    score = _score_label(board)
    specs = (
        ("chart-scores", "scores", f"Bar chart of mean {score} per cell with 95% confidence intervals"),
        ("chart-params", "params_vs_score", f"Scatter of {score} against trainable parameters"),
        ("chart-curves", "validation_curves", "Validation curves of every run, coloured by cell"),
        ("chart-time", "time_vs_score", f"Scatter of {score} against wall time"),
    )
    for figure_id, name, alt in specs:
        yield (f'<figure id="{figure_id}">{_image(charts[name], alt)}'
               f"<figcaption>{escape(alt)}</figcaption></figure>")


def render_comparison(board: Board, out_dir: str | Path) -> Path:
    """Write ``out_dir/comparison.html`` (self-contained) and its four charts; returns the html path."""
    out_dir = Path(out_dir)
    charts = draw_charts(board, out_dir)
    name = escape(str(board.get("name") or "comparison"))
    body = "\n".join([
        f"<h1>{name}</h1>", _description(board),
        "<section>\n<h2>Leaderboard</h2>", _leaderboard(board, out_dir), "</section>",
        "<section>\n<h2>Charts</h2>", *_figures(board, charts), "</section>",
    ])
    page = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{name} — texttune comparison</title>\n<style>{CSS}{EXTRA_CSS}</style>\n</head>\n"
        f"<body>\n{body}\n</body>\n</html>\n"
    )
    return atomic_write_text(out_dir / "comparison.html", page)
