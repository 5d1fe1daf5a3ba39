"""k-fold cross-validation (``data.cv``, issue 20): ``texttune run`` runs one fold as an ordinary run,
``compare`` expands every cell into its folds (an implicit axis, resumable like the seeds) and reports
mean ± std over folds with a t-interval and a paired test over the pooled per-example outcomes; the
data checks run per fold, and ``group_duplicates`` keeps copies of a text out of train∩test."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import pytest
import yaml

from texttune import runs

WORDS = [(w, "pos") for w in ("wonderful", "great", "moving", "delightful", "superb", "charming")] + \
        [(w, "neg") for w in ("dull", "boring", "awful", "terrible", "clumsy", "tedious")]
NOUNS = ("film", "story", "script", "cast", "ending")
CLASSIC = {"tfidf": {"model.name": "tfidf_lr", "model.min_df": 1, "model.cv_folds": 2},
           "nbsvm": {"model.name": "nbsvm", "model.cv_folds": 2}}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """60 labelled rows in one file (no validation, no test): 12 texts appear twice."""
    rows = [(f"a {word} {noun}", label) for (word, label), noun in itertools.product(WORDS, NOUNS)][:48]
    rows += rows[:6] + rows[-6:]  # 6 pos and 6 neg duplicates
    random.Random(0).shuffle(rows)
    path = tmp_path_factory.mktemp("cv-data") / "all.csv"
    path.write_text("text,label\n" + "".join(f"{t},{label}\n" for t, label in rows), encoding="utf-8")
    return path


def run_fold(data: Path, out: Path, *extra: str) -> Path:
    from texttune.cli import main

    code = main(["run", "--set", f"data.train_file={data}", "--set", "data.cv.folds=3", "--set", "data.cv.seed=0",
                 *(a for item in extra for a in ("--set", item)), *("--set", f"output_dir={out}"),
                 "--set", "model.name=tfidf_lr", "--set", "model.min_df=1", "--set", "model.cv_folds=2"])
    assert code == 0
    (run,) = out.iterdir()
    return run


def overlaps(run: Path) -> dict[str, int]:
    report = runs.read_json(run, runs.DATA_CHECKS)
    return {f["split"]: f["count"] for f in report["findings"] if f["check"] in ("overlap", "overlap_normalized")}


def test_a_fold_is_an_ordinary_run_that_records_its_fold(data, tmp_path):
    run = run_fold(data, tmp_path / "a", "data.cv.fold=1")
    record = runs.read_json(run, runs.DATA)
    assert record["cv"] == {"fold": 1, "folds": 3, "seed": 0, "group_duplicates": False}
    sizes = {split: info["rows"] for split, info in record["splits"].items()}
    assert sizes["test"] == 20 and sizes["train"] + sizes["validation"] == 40
    assert "fold 1 of 3" in record["splits"]["test"]["provenance"]
    other = runs.read_json(run_fold(data, tmp_path / "b", "data.cv.fold=2"), runs.DATA)
    assert other["fingerprint"] != record["fingerprint"]
    assert other["splits"]["test"]["fingerprint"] != record["splits"]["test"]["fingerprint"]
    assert "train∩test" in overlaps(run)  # duplicated texts leak from train into the test fold ...


def test_group_duplicates_keeps_copies_of_a_text_in_one_fold(data, tmp_path):
    for fold in range(3):
        run = run_fold(data, tmp_path / str(fold), f"data.cv.fold={fold}", "data.cv.group_duplicates=true")
        assert "train∩test" not in overlaps(run)  # ... and with group_duplicates they no longer do
        assert runs.read_json(run, runs.DATA)["cv"]["group_duplicates"] is True


def write_spec(folder: Path, data: Path, **extra) -> Path:
    spec = {"name": "cv", "output_dir": str(folder / "out"), "seeds": [1], "baseline": "tfidf",
            "set": {"data.train_file": str(data), "data.cv.folds": 3}, "axes": {"model": CLASSIC}, **extra}
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def test_compare_runs_every_fold_and_reports_mean_std_over_folds(data, tmp_path, caplog):
    from texttune.reports.leaderboard import KFOLD_CI, KFOLD_TEST
    from texttune.tasks.compare import run_comparison

    root, board = run_comparison(write_spec(tmp_path, data))
    folders = sorted(p.name for p in (root / "cells" / "main").iterdir())
    assert folders == [f"{cell}-seed1-fold{k}" for cell in ("nbsvm", "tfidf") for k in range(3)]
    rows = {r["cell"]: r for r in board["rows"]}
    for row in rows.values():
        assert row["n"] == 3 and row["folds"] == 3 and len(row["fold_scores"]) == 3
        assert row["ci_low"] <= row["mean"] <= row["ci_high"] and row["ci_method"] == KFOLD_CI
        assert abs(row["mean"] - sum(row["fold_scores"]) / 3) < 1e-9
    assert rows["nbsvm"]["p_value"] is not None and rows["nbsvm"]["significance_test"] == KFOLD_TEST
    assert board["cv"]["paired_test"] == KFOLD_TEST
    # The folds of one cell test every example exactly once.
    tested = [runs.read_json(root / run, runs.TEST_PREDICTIONS)["rows"] for run in rows["tfidf"]["runs"]]
    assert sorted(r for part in tested for r in part) == list(range(60))
    markdown = (root / "leaderboard.md").read_text(encoding="utf-8")
    assert "mean ± std over folds" in markdown and KFOLD_TEST in markdown
    # Rerunning keeps every finished fold; a lost fold is run again, alone.
    lost = root / rows["nbsvm"]["runs"][1]
    import shutil

    shutil.rmtree(lost.parent)
    caplog.clear()
    with caplog.at_level("INFO", logger="texttune"):
        _, again = run_comparison(write_spec(tmp_path, data))
    kept = [r.message for r in caplog.records if "finished earlier, kept" in r.message]
    assert len(kept) == 5 and lost.parent.is_dir()
    assert {r["cell"]: r["folds"] for r in again["rows"]} == {"tfidf": 3, "nbsvm": 3}


def test_seeds_times_folds(data, tmp_path):
    from texttune.tasks.compare import run_comparison

    spec = write_spec(tmp_path, data, seeds=[1, 2], axes={"model": {"tfidf": CLASSIC["tfidf"]}}, baseline=None)
    root, board = run_comparison(spec)
    (row,) = board["rows"]
    assert row["n"] == 6 and row["folds"] == 3 and len(list((root / "cells" / "main").iterdir())) == 6


@pytest.mark.parametrize("settings, message", [
    (["data.cv.folds=1"], "data.cv.folds"),
    (["data.cv.fold=3"], "data.cv.fold: fold 3 is not one of the 3 folds"),
    ([], "data.cv.fold: a run trains on one fold"),
    (["data.cv.fold=0", "data.test_size=0.2"], "data.test_size cannot be set"),
])
def test_bad_cv_settings_are_refused_by_key(settings, message, data, tmp_path, run_cli):
    args = [a for item in ["data.cv.folds=3", *settings] for a in ("--set", item)]
    code, out, err = run_cli("run", "--set", f"data.train_file={data}", *args, "--set", "model.name=tfidf_lr",
                             "--set", f"output_dir={tmp_path}")
    assert code != 0
    assert message in out + err and "Traceback" not in out + err


def test_an_official_test_split_with_cv_is_refused(data, tmp_path, run_cli):
    code, out, err = run_cli("run", "--set", "data.dataset=trec", "--set", "data.cv.folds=3", "--set",
                             "data.cv.fold=0", "--set", "model.name=tfidf_lr", "--set", f"output_dir={tmp_path}")
    assert code != 0
    assert "data.cv:" in out + err and "official test split" in out + err and "Traceback" not in out + err
