"""Charts and the one-file HTML page of ``texttune compare``, on a hand-written leaderboard (no training)."""

from __future__ import annotations

import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from texttune.reports.comparison import draw_charts, render_comparison

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CHARTS = {"scores.png", "params_vs_score.png", "validation_curves.png", "time_vs_score.png"}
FIGURE_IDS = ("chart-scores", "chart-params", "chart-curves", "chart-time")
ODD = "lora<b>"  # a cell name that must come out escaped
FULL_RUNS = ["cells/full-seed1/run-a", "cells/full-seed2/run-b"]
LORA_RUNS = ["cells/lora-seed1/run-c", "cells/lora-seed2/run-d"]
PREFIX_RUNS = ["cells/prefix-seed1/run-e"]


def row(cell: str, runs: list[str], mean: float | None, **fields: Any) -> dict[str, Any]:
    base = {"cell": cell, "axes": {"strategy.name": cell}, "stage": 1, "runs": runs,
            "seeds": list(range(1, len(runs) + 1)), "n": len(runs), "mean": mean, "std": 0.004,
            "ci_low": None if mean is None else mean - 0.02, "ci_high": None if mean is None else mean + 0.01,
            "p_value": 0.21, "significance_test": "paired bootstrap", "delta": -0.006,
            "trainable": 223_878, "total": 22_789_254, "trainable_pct": 0.98, "wall_time_s": 211.2,
            "train_time_s": 191.1, "peak_memory_mb": 1020.8, "checkpoint_size_mb": 1.5}
    return base | fields


def make_board() -> dict[str, Any]:
    curve = [[10, 0.5], [20, 0.8], [30, None], [40, 0.9]]  # a None point must be skipped, not fatal
    return {
        "name": "trec <strategies>", "metric": "accuracy", "split": "test", "baseline": "full",
        "rows": [
            row("full", FULL_RUNS, 0.968, p_value=None, delta=None, significance_test=None,
                trainable=22_789_254, trainable_pct=100.0, checkpoint_size_mb=87.0,
                vs_best_baseline={"cell": "tfidf_lr", "delta": 0.037, "p_value": 0.0005, "significantly_better": True}),
            row(ODD, LORA_RUNS, 0.962,
                vs_best_baseline={"cell": "tfidf_lr", "delta": -0.002, "p_value": 0.4, "significantly_better": False}),
            row("prefix", PREFIX_RUNS, 0.931, std=0.0, ci_low=None, ci_high=None, trainable=None,
                p_value=0.0004, delta=-0.037, wall_time_s=None, classic_baseline=True),
        ],
        "curves": {
            "full": [{"run": r, "points": curve} for r in FULL_RUNS],
            ODD: [{"run": r, "points": curve[:2]} for r in LORA_RUNS],
            "prefix": [],
        },
    }


class Page(HTMLParser):
    """What the tests look at: leaderboard body rows (as cell texts), figures' img srcs, hrefs, scripts."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.figures: dict[str, list[str]] = {}
        self.hrefs: list[str] = []
        self.scripts = 0
        self._table = self._body = self._td = False
        self._figure: str | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attr = dict(attrs)
        if tag == "table":
            self._table = attr.get("id") == "leaderboard"
        elif tag == "tbody" and self._table:
            self._body = True
        elif tag == "tr" and self._body:
            self.rows.append([])
        elif tag == "td" and self._body:
            self.rows[-1].append("")
            self._td = True
        elif tag == "figure":
            self._figure = attr.get("id") or ""
            self.figures[self._figure] = []
        elif tag == "img" and self._figure is not None:
            self.figures[self._figure].append(attr.get("src") or "")
        elif tag == "a":
            self.hrefs.append(attr.get("href") or "")
        self.scripts += tag == "script"

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._table = self._body = False
        elif tag == "td":
            self._td = False
        elif tag == "figure":
            self._figure = None

    def handle_data(self, data: str) -> None:
        if self._td:
            self.rows[-1][-1] += data


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> tuple[Path, str]:
    out_dir = tmp_path_factory.mktemp("comparison")
    report = out_dir / LORA_RUNS[0] / "report.html"  # only this run has a report
    report.parent.mkdir(parents=True)
    report.write_text("<html></html>")
    path = render_comparison(make_board(), out_dir)
    return path, path.read_text(encoding="utf-8")


def test_draw_charts_writes_exactly_four_pngs(tmp_path):
    charts = draw_charts(make_board(), tmp_path)
    assert {p.name for p in charts.values()} == CHARTS
    assert {p.name for p in tmp_path.iterdir()} == CHARTS  # no temporary files left behind
    for path in charts.values():
        assert path.read_bytes()[:8] == PNG_MAGIC, path
        assert path.stat().st_size > 5_000, path


def test_all_missing_data_still_draws_every_chart(tmp_path):
    empty = row("failed", [], None, std=None, p_value=None, delta=None, trainable=None, total=None,
                trainable_pct=None, wall_time_s=None, peak_memory_mb=None, checkpoint_size_mb=None)
    board = {"name": "x", "metric": "f1_macro", "split": "validation", "baseline": None,
             "rows": [empty], "curves": {"failed": [{"run": "r", "points": []}]}}
    html = render_comparison(board, tmp_path).read_text(encoding="utf-8")
    assert {p.name for p in tmp_path.glob("*.png")} == CHARTS
    parsed = Page(html)
    assert parsed.rows == [["—", "failed", *["—"] * 11]]
    assert "no baseline" in html


def test_page_is_self_contained(page):
    path, html = page
    assert path.name == "comparison.html"
    assert "http://" not in html and "https://" not in html
    assert "<script" not in html.lower() and Page(html).scripts == 0


def test_leaderboard_rows_and_values(page):
    _, html = page
    rows = Page(html).rows
    assert [r[1] for r in rows] == ["full", ODD, "prefix"]  # one body row per cell, leaderboard order
    full, lora, prefix = rows
    assert full[:5] == ["1", "full", "0.9680 ± 0.0040", "[0.9480, 0.9780]", "baseline"]
    assert lora[4:8] == ["-0.0060", "0.210", "not significantly better (-0.0020 vs tfidf_lr, p 0.400)",
                         "223,878 (0.98%)"]
    assert prefix[3] == "—" and prefix[5] == "<0.001" and prefix[6] == "classic baseline" and prefix[7] == "—"
    assert full[6] == "better (+0.0370 vs tfidf_lr, p <0.001)"
    assert full[8:11] == ["3m 31.2s", "1,021 MB", "87.0 MB"]
    assert '<tr class="baseline">' in html and '<strong class="warn">not significantly better</strong>' in html


def test_record_strings_are_escaped(page):
    _, html = page
    assert "lora&lt;b&gt;" in html and "lora<b>" not in html
    assert "trec &lt;strategies&gt;" in html and "<strategies>" not in html


def test_four_embedded_charts_with_distinct_alts(page):
    _, html = page
    figures = Page(html).figures
    assert list(figures) == list(FIGURE_IDS)
    for srcs in figures.values():
        assert len(srcs) == 1 and srcs[0].startswith("data:image/png;base64,")
    assert html.count('<img src="data:image/png;base64,') == 4
    alts = [part.split('"', 1)[0] for part in html.split(' alt="')[1:]]
    assert len(alts) == 4 and len(set(alts)) == 4


def test_links_only_to_existing_run_reports(page):
    _, html = page
    hrefs = Page(html).hrefs
    target = f"{LORA_RUNS[0]}/report.html"
    assert hrefs.count(target) == 2  # the cell name and its seed-1 entry in the runs column
    for run in FULL_RUNS + LORA_RUNS[1:] + PREFIX_RUNS:
        assert not any(run in href for href in hrefs), run
    assert Page(html).rows[1][11] == "seed 1seed 2"  # both listed, seed 2 unlinked


def test_chromium_renders_the_page(page, tmp_path):
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium not installed")
    path, _ = page
    command = [chromium, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path}",
               "--dump-dom", path.resolve().as_uri()]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    dom = Page(result.stdout)
    assert 'id="leaderboard"' in result.stdout, result.stderr[-2000:]
    assert [r[1] for r in dom.rows] == ["full", ODD, "prefix"]
    assert list(dom.figures) == list(FIGURE_IDS)
    for srcs in dom.figures.values():
        assert len(srcs) == 1 and srcs[0].startswith("data:image/png;base64,")


def test_markdown_states_caveats_shared_by_every_cell_once_under_the_table():
    from texttune.reports.leaderboard import markdown

    board = make_board()
    shared = ["train∩test: 9 distinct texts in both train and test"]
    for r in board["rows"]:
        r["data_caveats"] = list(shared)
    for rank, r in enumerate(board["rows"], 1):
        r["rank"] = rank
    board["rows"][1]["data_caveats"].append("train: 3 empty texts")
    text = markdown(board)
    assert text.count(shared[0]) == 1
    assert text.rstrip().endswith(f"Data caveats of every cell (the same splits): {shared[0]}.")
    lines = {line.split(" | ")[1]: line for line in text.splitlines() if line.startswith("| ") and " | " in line}
    assert lines["full"].endswith("| as below |") and lines[ODD].endswith("| train: 3 empty texts |")
    board["rows"] = board["rows"][:1]  # one cell: its caveats stay in its row
    assert markdown(board).count(shared[0]) == 1 and "Data caveats of every cell" not in markdown(board)
