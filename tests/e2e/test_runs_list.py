"""``texttune runs list``: one line per run at 80 columns, ``--sort COLUMN``, ``--json``; on hand-written
run directories (the command reads only their records)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

# (directory, config, metrics or None for a run that never finished)
RUNS = [
    ("20261122-210501-quickstart-trec-minilm",
     {"kind": "classify", "name": "quickstart-trec-minilm", "data": {"dataset": "trec"},
      "model": {"name": "pretrained", "path": "minilm"}, "strategy": {"name": "lora"}},
     {"test": {"accuracy": 0.968}, "params": {"trainable_pct": 1.4}, "wall_time_s": 320.0}),
    ("20261123-090000-trec-cnn-glove",
     {"kind": "classify", "name": "trec-cnn-glove", "data": {"dataset": "trec"}, "model": {"name": "cnn"},
      "strategy": {"name": "full"}},
     {"test": {"accuracy": 0.912}, "params": {"trainable_pct": 100.0}, "wall_time_s": 50.3}),
    ("20261121-120000-ag-news-bag-of-ngrams",
     {"kind": "classify", "name": "ag-news-bag-of-ngrams", "data": {"dataset": "ag_news"},
      "model": {"name": "bag_of_ngrams"}, "strategy": {"name": "full"}},
     None),
    ("20261124-080000-lima-smollm2-sft",
     {"kind": "sft", "name": "lima-smollm2-sft", "data": {"dataset": "lima"}, "model": {"path": "smollm2"},
      "lora": {"rank": 8}},
     {"validation": {"loss": 1.2345}, "params": {"trainable_pct": 0.3}, "wall_time_s": 660.0}),
]


@pytest.fixture
def folder(tmp_path) -> Path:
    root = tmp_path / "runs"
    for name, config, metrics in RUNS:
        run = root / name
        run.mkdir(parents=True)
        (run / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
        (run / "environment.json").write_text(json.dumps({"texttune": "0.1.0"}), encoding="utf-8")
        if metrics is not None:
            (run / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    return root


def listed(run_cli, folder: Path, *args: str) -> list[str]:
    code, out, err = run_cli("runs", "list", folder, *args)
    assert code == 0 and "Traceback" not in out + err, err
    return out.splitlines()


def details(lines: list[str]) -> dict[str, list[str]]:
    """Each run's fields by its folder, in either layout (one line per run, or the folder then its details)."""
    out, previous = {}, None
    for line in lines:
        if line[:8].isdigit():
            head, *rest = line.split()
            out[head], previous = rest, head
        elif previous is not None and line.startswith("  ") and not out[previous]:
            out[previous] = line.split()
    return out


EXPECTED = {
    "20261122-210501-quickstart-trec-minilm": ["classify", "minilm", "lora", "trec", "test", "0.9680", "finished",
                                               "1.40%"],
    "20261123-090000-trec-cnn-glove": ["classify", "cnn", "trec", "test", "0.9120", "finished", "100.00%"],
    "20261121-120000-ag-news-bag-of-ngrams": ["classify", "bag_of_ngrams", "ag_news", "—", "unfinished", "—"],
    "20261124-080000-lima-smollm2-sft": ["sft", "smollm2", "lora", "lima", "val", "loss", "1.2345", "finished",
                                         "0.30%"],
}


def test_at_80_columns_each_run_takes_two_whole_lines(run_cli, folder, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.chdir(folder.parent)  # `texttune runs list runs`, as from a project folder
    lines = listed(run_cli, Path("runs"))
    assert lines[0] == "4 runs under runs, by date"
    assert max(map(len, lines)) <= 80
    assert len(lines) == 3 + 2 * len(RUNS)  # title, two header lines, then folder + details per run
    assert details(lines) == EXPECTED  # every folder whole on its own line (what predict/compare take)


def test_a_wide_screen_gets_one_line_per_run(run_cli, folder, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    lines = listed(run_cli, folder)
    assert len(lines) == 2 + len(RUNS) and max(map(len, lines)) <= 200
    assert details(lines) == EXPECTED


def order(run_cli, folder: Path, *args: str) -> list[str]:
    return [line.split()[0] for line in listed(run_cli, folder, *args) if line[:8].isdigit()]


def test_sort_by_date_name_or_metric(run_cli, folder, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    dates = [name for name, _, _ in sorted(RUNS)]
    assert order(run_cli, folder) == dates  # by date: the default, oldest first
    assert order(run_cli, folder, "--sort", "date") == dates
    assert order(run_cli, folder, "--sort", "name") == [
        "20261121-120000-ag-news-bag-of-ngrams", "20261124-080000-lima-smollm2-sft",
        "20261122-210501-quickstart-trec-minilm", "20261123-090000-trec-cnn-glove"]
    # Best first, each by its metric's direction; runs without a score last.
    assert order(run_cli, folder, "--sort", "metric") == [
        "20261122-210501-quickstart-trec-minilm", "20261123-090000-trec-cnn-glove",
        "20261124-080000-lima-smollm2-sft", "20261121-120000-ag-news-bag-of-ngrams"]


def test_an_unknown_sort_column_is_one_clear_error(run_cli, folder):
    code, out, err = run_cli("runs", "list", folder, "--sort", "nmae")
    assert code == 2 and "Traceback" not in out + err
    assert err.startswith("error: --sort: unknown column 'nmae' (did you mean 'name'?); sort by one of: date, name")


def test_json_is_one_list_of_every_field(run_cli, folder):
    code, out, err = run_cli("runs", "list", folder, "--json", "--sort", "metric")
    assert code == 0, err
    rows = json.loads(out)
    assert isinstance(rows, list) and len(rows) == len(RUNS)
    first = rows[0]
    assert first["run"] == str(folder / "20261122-210501-quickstart-trec-minilm")
    assert (first["date"], first["name"], first["model"], first["model_path"], first["strategy"]) == (
        "2026-11-22 21:05:01", "quickstart-trec-minilm", "pretrained", "minilm", "lora")
    assert (first["split"], first["metric"], first["score"], first["status"]) == ("test", "accuracy", 0.968,
                                                                                  "finished")
    assert rows[-1]["status"] == "unfinished" and "score" not in rows[-1]  # no score: last
