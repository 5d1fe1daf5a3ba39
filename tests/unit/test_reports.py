"""Plots and the one-file HTML report, on a hand-written run directory (no training involved)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from texttune.errors import TexttuneError
from texttune.reports.html import render_report
from texttune.reports.plots import plot_confusion_matrix, plot_learning_curves, plot_reliability

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
XSS = "<script>alert(1)</script>"
SECTIONS = [
    "Summary", "Configuration", "Environment", "Data", "Data checks", "Learning curves", "Metrics",
    "Per-class metrics", "Confusion matrix", "Calibration", "Most confidently wrong validation examples",
]
PLOTS = ("learning_curves.png", "confusion_matrix.png", "reliability.png")


def assert_png(path: Path, min_bytes: int = 5_000) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, path
    assert len(data) > min_bytes, (path, len(data))


def records(steps: int = 120, eval_every: int = 30) -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    out: list[dict[str, Any]] = []
    for step in range(1, steps + 1):
        loss = 1.6 * np.exp(-step / 40) + 0.2 + 0.1 * rng.random()
        out.append({"type": "train", "step": step, "epoch": step / 60, "loss": float(loss), "lr": 3e-4,
                    "grad_norm": 1.0, "samples_per_s": 850.0, "elapsed_s": step * 0.04})
        if step % eval_every == 0:
            acc = 0.5 + 0.4 * (1 - np.exp(-step / 50))
            out.append({"type": "eval", "split": "validation", "step": step, "epoch": step / 60,
                        "loss": float(1.2 - acc), "accuracy": float(acc), "f1_macro": float(acc - 0.03)})
    return out


def split_metrics(labels: list[str], accuracy: float, worst: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(labels)
    matrix = (np.eye(n, dtype=int) * 40 + np.random.default_rng(n).integers(0, 4, (n, n))).tolist()
    edges = np.linspace(0, 1, 11).tolist()
    return {
        "accuracy": accuracy, "f1_macro": accuracy - 0.02, "f1_micro": accuracy,
        "f1_weighted": accuracy - 0.01,
        "per_class": {lb: {"precision": 0.9, "recall": 0.88, "f1": 0.89, "support": 44} for lb in labels},
        "confusion_matrix": matrix, "log_loss": 0.3512, "ece": 0.0427,
        "reliability": {"bin_edges": edges,
                        "accuracy": [None, 0, 0.2, 0.35, 0.4, 0.52, 0.61, 0.7, 0.83, 0.95],
                        "confidence": [None, 0.18, 0.25, 0.35, 0.45, 0.55, 0.65, 0.75, 0.85, 0.97],
                        "count": [0, 1, 4, 9, 15, 22, 30, 48, 90, 281]},
        "num_examples": 500, "loss": 0.3498, "worst": worst,
    }


def write_run(run_dir: Path, labels: list[str], with_test: bool = True) -> Path:
    worst = [
        {"text": f"Click here {XSS} & win", "label": labels[0], "predicted": labels[1], "confidence": 0.9987},
        {"text": "What is the capital of Peru?", "text_pair": "Lima <b>", "label": labels[1],
         "predicted": labels[0], "confidence": 0.9712},
    ]
    metrics = {
        "validation": split_metrics(labels, 0.8871, worst),
        "best": {"step": 90, "metric": "accuracy", "value": 0.8871},
        "params": {"trainable": 12_345, "total": 4_400_000, "trainable_pct": 0.28},
        "wall_time_s": 4321.5, "peak_memory_mb": 1843.2, "train_samples_per_s": 850.3, "temperature": 1.37,
    }
    metrics["validation"]["calibrated"] = {"temperature": 1.37, "log_loss": 0.2988, "ece": 0.0198}
    if with_test:
        metrics["test"] = split_metrics(labels, 0.9134, [])
        metrics["test"]["calibrated"] = {"temperature": 1.37, "log_loss": 0.3101, "ece": 0.0211}
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    lines = [json.dumps(r) for r in records()] + ['{"type": "train", "st']  # torn last line: a killed run
    (run_dir / "metrics.jsonl").write_text("\n".join(lines))
    (run_dir / "config.yaml").write_text(f"name: trec-lora\nseed: 42\ndata:\n  dataset: trec  # {XSS}\n"
                                         "model:\n  name: pretrained\n  path: minilm\nstrategy:\n  name: lora\n")
    (run_dir / "environment.json").write_text(json.dumps(
        {"texttune": "0.1.0", "python": "3.11.2", "torch": "2.13.0", "transformers": "5.0.0",
         "git_commit": "abc1234+dirty", "device": "cpu"}))
    classes = {lb: 100 + 10 * i for i, lb in enumerate(labels)}
    (run_dir / "data.json").write_text(json.dumps({
        "name": "trec", "task": "single_label", "labels": labels, "fingerprint": "sha256:0f3c",
        "splits": {"train": {"rows": sum(classes.values()), "provenance": "train.parquet",
                             "classes": classes},
                   "validation": {"rows": 500, "provenance": "10% of train, stratified, seed 42",
                                  "classes": {lb: 500 // len(labels) for lb in labels}}},
    }))
    (run_dir / "data_checks.json").write_text(json.dumps({"policy": "warn", "findings": [
        {"check": "duplicates", "split": "train", "severity": "warning", "count": 7,
         "message": "7 duplicate texts <dup>"},
        {"check": "overlap", "split": "train/test", "severity": "error", "count": 2,
         "message": "2 texts leak"},
    ]}))
    return run_dir


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[Path, str]:
    run_dir = tmp_path_factory.mktemp("runs") / "trec-lora-20250101-120000"
    write_run(run_dir, ["ABBR", "DESC", "ENTY"])
    path = render_report(run_dir)
    return path, path.read_text(encoding="utf-8")


def test_report_is_one_self_contained_file(report):
    path, html = report
    assert path == path.parent / "report.html" and path.is_file()
    assert "http://" not in html and "https://" not in html
    sources = re.findall(r'(?:src|href)\s*=\s*["\']?([^"\'\s>]*)', html, flags=re.IGNORECASE)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "<script" not in html.lower() and "<link" not in html.lower() and "@import" not in html


def test_report_has_every_section_and_the_headline(report):
    _, html = report
    for title in SECTIONS:
        assert f"<h2>{title}</h2>" in html
    assert "trec-lora" in html and "trec-lora-20250101-120000" in html
    assert "0.9134" in html  # test accuracy is the headline when test was evaluated
    assert "1h 12m 02s" in html and "1.37" in html and "12,345 / 4,400,000" in html


def test_report_escapes_record_strings(report):
    _, html = report
    assert html.count("&lt;script&gt;alert(1)&lt;/script&gt;") == 2  # worst example + config
    assert "Lima &lt;b&gt;" in html and "&lt;dup&gt;" in html


def test_report_draws_its_plots(report):
    path, html = report
    for name in PLOTS:
        assert_png(path.parent / name)
    assert html.count('src="data:image/png;base64,') == len(PLOTS)


def test_report_reuses_existing_plots(tmp_path):
    run_dir = write_run(tmp_path / "run", ["a", "b"])
    (run_dir / "reliability.png").write_bytes(PNG_MAGIC + b"kept")
    render_report(run_dir)
    assert (run_dir / "reliability.png").read_bytes() == PNG_MAGIC + b"kept"


def test_report_with_only_metrics_json_shows_notes(tmp_path):
    run_dir = write_run(tmp_path / "bare", ["a", "b"], with_test=False)
    for name in ("metrics.jsonl", "config.yaml", "environment.json", "data.json", "data_checks.json"):
        (run_dir / name).unlink()
    html = render_report(run_dir).read_text(encoding="utf-8")
    for title in SECTIONS:
        assert f"<h2>{title}</h2>" in html
    for name in ("metrics.jsonl", "config.yaml", "environment.json", "data.json", "data_checks.json"):
        assert f"{name} not found" in html
    assert "0.8871" in html and "No test metrics" in html
    assert not (run_dir / "learning_curves.png").exists()


def test_report_without_metrics_json_names_the_file(tmp_path):
    with pytest.raises(TexttuneError, match="metrics.json"):
        render_report(tmp_path)


def test_confusion_matrix_with_50_classes(tmp_path):
    labels = [f"class_{i:02d}_with_a_rather_long_name" for i in range(50)]
    matrix = split_metrics(labels, 0.9, [])["confusion_matrix"]
    path = plot_confusion_matrix(matrix, labels, tmp_path / "cm50.png")
    assert_png(path, min_bytes=20_000)


def test_confusion_matrix_with_an_empty_row(tmp_path):
    path = plot_confusion_matrix([[5, 1], [0, 0]], ["yes", "no"], tmp_path / "cm.png", normalize=False)
    assert_png(path)


@pytest.mark.parametrize("kind", ["no_eval", "single_point", "empty"])
def test_learning_curves_edge_cases(tmp_path, kind):
    data = {
        "no_eval": [r for r in records(20) if r["type"] == "train"],
        "single_point": records(1, eval_every=1),
        "empty": [],
    }[kind]
    assert_png(plot_learning_curves(data, tmp_path / f"{kind}.png"))


def test_reliability_without_ece(tmp_path):
    reliability = split_metrics(["a", "b"], 0.9, [])["reliability"]
    assert_png(plot_reliability(reliability, tmp_path / "rel.png"))


def test_the_strategy_is_in_the_title_and_the_summary(report):
    _, html = report
    assert "<title>trec-lora: minilm, strategy lora — texttune report</title>" in html
    assert "<h1>trec-lora: minilm, strategy lora</h1>" in html
    summary = html.split("<h2>Summary</h2>")[1].split("</section>")[0]
    assert '<div class="k">model / strategy</div><div class="v">minilm / lora</div>' in summary


def test_the_resolved_config_is_folded_away(report):
    _, html = report
    section = html.split("<h2>Configuration</h2>")[1].split("</section>")[0]
    assert section.lstrip().startswith("<details><summary>resolved config (config.yaml")
    assert "<pre>" in section and section.index("<pre>") > section.index("<details>")
    assert section.rstrip().endswith("</details>")


def test_calibrated_ece_and_log_loss_stand_beside_the_uncalibrated_ones(report):
    _, html = report
    summary = html.split("<h2>Summary</h2>")[1].split("</section>")[0]
    # The headline split is test: its raw scores with the temperature-scaled ones predict returns.
    ece_card = summary.split("test ECE")[1].split('<div class="card">')[0]
    assert "0.0427" in ece_card and "calibrated 0.0211" in ece_card
    log_loss_card = summary.split("test log-loss")[1].split('<div class="card">')[0]
    assert "0.3512" in log_loss_card and "calibrated 0.3101" in log_loss_card
    calibration = html.split("<h2>Calibration</h2>")[1].split("</section>")[0]
    assert "<th>uncalibrated</th><th>calibrated</th>" in calibration
    assert re.search(r"<td>ECE</td><td class=\"num\">0.0427</td><td class=\"num\">0.0211</td>", calibration)
    metrics = html.split("<h2>Metrics</h2>")[1].split("</section>")[0]
    assert re.search(r"<td>ece \(calibrated\)</td><td class=\"num\">0.0198</td><td class=\"num\">0.0211</td>",
                     metrics)


def test_learning_curve_legends_sit_outside_the_plotted_data():
    from texttune.reports.plots import learning_curves_figure

    # Scores that end top right and losses that end bottom right: the corners a legend would take.
    fig = learning_curves_figure(records())
    try:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        for ax in fig.axes:
            legend = ax.get_legend()
            assert legend is not None
            box, area = legend.get_window_extent(renderer), ax.get_window_extent(renderer)
            assert box.x0 >= area.x1  # right of the axes: no point can be under it
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)
