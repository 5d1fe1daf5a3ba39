"""Data checks: each check's count and rows, the three policies, the JSON report, and the README's
duplicate/overlap figures reproduced on the real data."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console

from texttune.config import DataChecksConfig
from texttune.data.checks import CheckReport, Finding, apply_policy, run_checks
from texttune.data.dataset import MISSING_LABEL, UNKNOWN_LABEL, TextDataset
from texttune.errors import DataCheckError

DATA_DIR = Path(os.environ.get("TEXTTUNE_DATA_DIR", Path(__file__).parents[3] / "shared" / "data"))
LABELS = ["neg", "pos"]


def frame(texts: list[str], labels: list[int] | None = None, start: int = 0, **extra: list) -> pd.DataFrame:
    """A split whose index (source row numbers) starts at ``start``, so rows ≠ positions."""
    # Object dtype: pandas' default Arrow-backed str dtype cannot hold lone surrogates.
    index = range(start, start + len(texts))
    columns = {"text": texts, **extra}
    data = {k: pd.Series(v, index=index, dtype=object) for k, v in columns.items()}
    if labels is not None:
        data["label"] = pd.Series(labels, index=index, dtype="int64")
    return pd.DataFrame(data)


def dataset(label_names: list[str] | None = LABELS, **splits: pd.DataFrame) -> TextDataset:
    files = {name: f"/data/toy/{name}.csv" for name in splits}
    return TextDataset("toy", dict(splits), label_names, files=files)


def found(report: CheckReport, check: str, split: str) -> Finding | None:
    hits = [f for f in report.findings if f.check == check and f.split == split]
    assert len(hits) <= 1
    return hits[0] if hits else None


def counts(report: CheckReport) -> dict[tuple[str, str], int]:
    return {(f.check, f.split): f.count for f in report.findings if f.check != "class_imbalance"}


CFG = DataChecksConfig()
EXACT_ONLY = DataChecksConfig(normalized=False)


# --------------------------------------------------------------------------- single checks


def test_empty_text_counts_blank_and_nan_rows_by_source_row() -> None:
    ds = dataset(train=frame(["a", "", " \t\n", None, "b"], [0, 1, 0, 1, 0], start=100))
    f = found(run_checks(ds, CFG), "empty_text", "train")
    assert (f.count, f.rows, f.severity) == (3, [101, 102, 103], "warning")


def test_empty_text_looks_at_text_pair() -> None:
    train = frame(["a", "b", ""], [0, 1, 0], text_pair=["x", " ", "y"])
    f = found(run_checks(dataset(train=train), CFG), "empty_text", "train")
    assert (f.count, f.rows) == (2, [1, 2])
    assert "1 in text, 1 in text_pair" in f.message


def test_non_utf8_finds_replacement_chars_and_lone_surrogates() -> None:
    ds = dataset(train=frame(["ok", "bad \ufffd byte", "lone \udc80", "café ✓"], [0, 1, 0, 1]))
    f = found(run_checks(ds, CFG), "non_utf8", "train")
    assert (f.count, f.rows, f.severity) == (2, [1, 2], "warning")


def test_missing_and_unknown_labels_are_errors_naming_raw_values() -> None:
    labels = [0, MISSING_LABEL, UNKNOWN_LABEL, 1, UNKNOWN_LABEL]
    train = frame(["a", "b", "c", "d", "e"], labels, label_raw=["neg", None, "maybe", "pos", "neutral"])
    report = run_checks(dataset(train=train), CFG)
    missing, unknown = found(report, "missing_label", "train"), found(report, "unknown_label", "train")
    assert (missing.count, missing.rows, missing.severity) == (1, [1], "error")
    assert (unknown.count, unknown.rows, unknown.severity) == (2, [2, 4], "error")
    assert "'maybe'" in unknown.message and "'neutral'" in unknown.message
    assert "neg, pos" in unknown.message
    assert report.errors == [missing, unknown]


def test_unlabelled_corpus_skips_label_checks() -> None:
    ds = dataset(label_names=None, train=frame(["a", "b", "c"]))
    assert run_checks(ds, CFG).findings == []


def test_duplicates_count_rows_that_repeat_an_earlier_row() -> None:
    ds = dataset(train=frame(["a", "b", "a", "a", "c", "b"], [0, 1, 0, 0, 1, 1], start=10))
    f = found(run_checks(ds, CFG), "duplicates", "train")
    assert (f.count, f.rows) == (3, [12, 13, 15])
    assert "2 distinct texts" in f.message
    assert f.examples == ["a", "b"]


def test_normalized_duplicates_count_only_what_exact_matching_missed() -> None:
    texts = ["Hello, World", "hello world", "HELLO   world!", "Hello, World", "...", "?!"]
    ds = dataset(train=frame(texts, [0] * 6))
    report = run_checks(ds, CFG)
    assert found(report, "duplicates", "train").rows == [3]
    # Texts that normalise to nothing ("...", "?!") are not near-duplicates of each other.
    assert found(report, "duplicates_normalized", "train").rows == [1, 2]
    assert found(run_checks(ds, EXACT_ONLY), "duplicates_normalized", "train") is None


def test_empty_texts_are_not_duplicates() -> None:
    report = run_checks(dataset(train=frame(["", "", " ", "x"], [0, 0, 1, 1])), CFG)
    assert counts(report) == {("empty_text", "train"): 3}


def test_conflicting_labels_count_texts_and_list_every_copy() -> None:
    ds = dataset(train=frame(["a", "a", "a", "b", "b", "c"], [0, 1, 0, 1, 1, 0]))
    f = found(run_checks(ds, CFG), "conflicting_labels", "train")
    assert (f.count, f.rows, f.severity) == (1, [0, 1, 2], "warning")


def test_pair_datasets_key_on_both_texts() -> None:
    train = frame(["a", "a", "a"], [0, 1, 0], text_pair=["b", "c", "b"])
    test = frame(["a", "x"], [1, 0], text_pair=["c", "b"])
    report = run_checks(dataset(train=train, test=test), EXACT_ONLY)
    assert counts(report) == {("duplicates", "train"): 1, ("overlap", "train∩test"): 1}
    assert found(report, "duplicates", "train").rows == [2]
    assert found(report, "overlap", "train∩test").rows == [1]


def test_overlap_counts_distinct_texts_and_lists_rows_of_the_first_split() -> None:
    train = frame(["a", "b", "c", "c", "Dog."], [0, 1, 0, 0, 1])
    validation = frame(["b", "e"], [1, 0])
    test = frame(["c", "dog", "e", "zzz"], [0, 1, 1, 0])
    report = run_checks(dataset(train=train, validation=validation, test=test), CFG)
    assert counts(report) == {
        ("duplicates", "train"): 1,
        ("overlap", "train∩validation"): 1,
        ("overlap", "train∩test"): 1,
        ("overlap_normalized", "train∩test"): 1,
        ("overlap", "validation∩test"): 1,
    }
    assert found(report, "overlap", "train∩test").rows == [2, 3]
    assert found(report, "overlap_normalized", "train∩test").rows == [4]
    assert found(report, "overlap", "validation∩test").rows == [1]


def test_class_imbalance_is_always_reported() -> None:
    balanced = dataset(train=frame(list("abcd"), [0, 0, 1, 1]))
    f = found(run_checks(balanced, CFG), "class_imbalance", "train")
    assert (f.severity, f.count) == ("info", 0)
    assert "= 1.0" in f.message

    skewed = dataset(train=frame([str(i) for i in range(22)], [0] * 21 + [1]))
    f = found(run_checks(skewed, CFG), "class_imbalance", "train")
    assert (f.severity, f.count) == ("warning", 1)
    assert "21.0" in f.message and "pos" in f.message


def test_class_with_no_rows_is_flagged_in_train_only() -> None:
    names = ["a", "b", "c"]
    ds = dataset(names, train=frame(["x", "y"], [0, 1]), test=frame(["z", "w"], [0, 1]))
    report = run_checks(ds, CFG)
    train, test = found(report, "class_imbalance", "train"), found(report, "class_imbalance", "test")
    assert (train.severity, train.count) == ("warning", 1)
    assert "no rows: c" in train.message
    assert test.severity == "info"


# --------------------------------------------------------------------------- the report


def test_report_json_round_trip(tmp_path: Path) -> None:
    train = frame(["a", "a", "", "bad \udc80"], [0, MISSING_LABEL, 1, 0])
    report = run_checks(dataset(train=train, test=frame(["a"], [0])), CFG)
    path = report.write_json(tmp_path / "reports" / "data_checks.json")
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data == report.to_dict()
    assert (data["dataset"], data["policy"], data["rows"]) == ("toy", "warn", {"train": 4, "test": 1})
    assert CheckReport.from_dict(data) == report
    assert [p.name for p in path.parent.iterdir()] == ["data_checks.json"]  # no temp file left


def test_render_table_has_the_documented_columns() -> None:
    report = run_checks(dataset(train=frame(["a", "a"], [0, 1])), CFG)
    table = report.render_table()
    assert [c.header for c in table.columns] == ["check", "split", "severity", "count", "details"]
    assert table.row_count == len(report.findings)
    console = Console(width=200, record=True)
    console.print(table)
    assert "conflicting_labels" in console.export_text()


# --------------------------------------------------------------------------- policies


def messy() -> TextDataset:
    """Every droppable problem once: see test_drop_policy for what each row is."""
    train = frame(
        ["keep", "", "nolabel", "badlabel", "dup", "dup", "both", "both", "leak", "Leak 2!", "keep2"],
        [0, 1, MISSING_LABEL, UNKNOWN_LABEL, 0, 0, 0, 1, 1, 0, 1],
        label_raw=["neg", "pos", None, "meh", "neg", "neg", "neg", "pos", "pos", "neg", "pos"],
    )
    validation = frame(["v", "v", "leak"], [0, 0, 1], start=50)
    test = frame(["leak 2", "t"], [0, 1], start=70)
    return dataset(train=train, validation=validation, test=test)


def test_drop_policy_removes_bad_rows_and_train_leakage() -> None:
    ds = messy()
    before = {s: df.copy() for s, df in ds.splits.items()}
    new, summary = apply_policy(ds, run_checks(ds, CFG), DataChecksConfig(policy="drop"))
    assert list(new.splits["train"].index) == [0, 4, 10]
    assert list(new.splits["validation"].index) == [50, 52]  # duplicates go, leakage stays
    assert list(new.splits["test"].index) == [70, 71]
    assert summary["train"] == {
        "empty_text": 1, "missing_label": 1, "unknown_label": 1, "conflicting_labels": 2,
        "duplicates": 1, "overlap": 2, "total": 8,
    }
    assert summary["validation"]["duplicates"] == 1 and summary["test"]["total"] == 0
    for split, df in ds.splits.items():  # the input is untouched
        pd.testing.assert_frame_equal(df, before[split])


def test_drop_policy_without_normalisation_keeps_near_leaks() -> None:
    ds = messy()
    cfg = DataChecksConfig(policy="drop", normalized=False)
    new, summary = apply_policy(ds, run_checks(ds, cfg), cfg)
    assert list(new.splits["train"].index) == [0, 4, 9, 10]
    assert summary["train"]["overlap"] == 1


def test_after_drop_the_checks_find_nothing_to_drop() -> None:
    new, _ = apply_policy(messy(), run_checks(messy(), CFG), DataChecksConfig(policy="drop"))
    left = {check for check, _ in counts(run_checks(new, CFG))}
    assert left == set()


def test_warn_policy_goes_on_despite_warnings() -> None:
    ds = dataset(train=frame(["a", "a", ""], [0, 0, 1]))
    new, summary = apply_policy(ds, run_checks(ds, CFG), CFG)
    assert len(new.splits["train"]) == 3 and summary["train"]["total"] == 0
    assert new is not ds


def test_warn_policy_stops_on_bad_labels_with_file_column_and_rows() -> None:
    ds = messy()
    with pytest.raises(DataCheckError) as err:
        apply_policy(ds, run_checks(ds, CFG), CFG)
    message = str(err.value)
    assert "/data/toy/train.csv" in message and "column 'label'" in message
    assert "1 row without a label" in message and "rows 2" in message
    assert "1 row with a label outside" in message and "rows 3" in message and "'meh'" in message
    assert "--set data.checks.policy=drop" in message
    assert "duplicates" not in message  # warnings do not stop the warn policy


def test_fail_policy_lists_every_error_and_warning() -> None:
    ds = messy()
    report = run_checks(ds, CFG)
    with pytest.raises(DataCheckError) as err:
        apply_policy(ds, report, DataChecksConfig(policy="fail"))
    message = str(err.value)
    for f in report.errors + report.warnings:
        assert f"{f.check}: " in message
    assert "train∩test" in message and "class_imbalance" not in message
    assert f"{len(report.errors)} errors, {len(report.warnings)} warnings" in message


def test_fail_policy_passes_when_only_info_findings() -> None:
    ds = dataset(train=frame(["a", "b"], [0, 1]))
    report = run_checks(ds, CFG)
    assert [f.severity for f in report.findings] == ["info"]
    new, _ = apply_policy(ds, report, DataChecksConfig(policy="fail"))
    assert len(new.splits["train"]) == 2


# --------------------------------------------------------------------------- real data (README figures)


def real(name: str) -> TextDataset:
    folder = DATA_DIR / name
    if not folder.is_dir():
        pytest.skip(f"{folder} not found (set TEXTTUNE_DATA_DIR)")
    splits = {s: pd.read_parquet(folder / f"{s}.parquet")
              for s in ("train", "validation", "test") if (folder / f"{s}.parquet").exists()}
    labels = folder / "labels.txt"
    names = labels.read_text(encoding="utf-8").splitlines() if labels.exists() else None
    return TextDataset(name, splits, names)


def test_real_trec() -> None:
    report = run_checks(real("trec"), EXACT_ONLY)
    assert counts(report) == {("duplicates", "train"): 71, ("overlap", "train∩test"): 10}


def test_real_imdb() -> None:
    report = run_checks(real("imdb"), CFG)  # also the speed check: 50k long texts, normalised
    exact = {k: v for k, v in counts(report).items() if not k[0].endswith("_normalized")}
    assert exact == {
        ("duplicates", "train"): 96, ("duplicates", "test"): 199, ("overlap", "train∩test"): 123,
        # Real remnants: "Alt&#305;oklar", "Samotá&#345;i", "an Agent&#8230; Ankush" (5 train, 2 test rows).
        ("html_entities", "train"): 5, ("html_entities", "test"): 2,
    }


def test_real_sst2() -> None:
    report = run_checks(real("sst2"), EXACT_ONLY)
    assert counts(report) == {("duplicates", "train"): 371, ("conflicting_labels", "train"): 5}
    f = found(report, "conflicting_labels", "train")
    assert sorted(f.examples) == sorted(["laughably ", "the only reason ", "excruciatingly "])


def test_real_mrpc_has_no_duplicate_or_shared_pairs() -> None:
    assert counts(run_checks(real("mrpc"), EXACT_ONLY)) == {}


def test_real_trec_drop_leaves_nothing_to_drop() -> None:
    ds = real("trec")
    new, summary = apply_policy(ds, run_checks(ds, CFG), DataChecksConfig(policy="drop"))
    assert summary["train"]["duplicates"] == 71 and summary["test"]["total"] == 0
    assert len(new.splits["test"]) == 500
    # Near-duplicates within a split are reported but not dropped.
    assert {c for c, _ in counts(run_checks(new, CFG))} == {"duplicates_normalized"}


# --------------------------------------------------------------------------- HTML entities and mojibake

DAMAGED = [  # (text as a pipeline left it, the text it was)
    ("Tiger #39;s putt won #39;t drop", "Tiger's putt won't drop"),
    ("Merck  amp; Co. said  quot;no quot;", 'Merck & Co. said "no"'),
    ("Fish &amp; Chips &lt;b&gt;fresh&lt;/b&gt;", "Fish & Chips <b>fresh</b>"),
    ("the caf\u00c3\u00a9 is open", "the café is open"),
    ("it\u00e2\u20ac\u2122s raining", "it\u2019s raining"),
]
CLEAN = ["a camp; item #3; at AT&T; naïve résumé", "see ?a=1&not=2 here", "a plain sentence"]


def damaged_csv(tmp_path: Path) -> Path:
    rows = [(text, "pos" if i % 2 else "neg") for i, text in enumerate([t for t, _ in DAMAGED] + CLEAN)]
    path = tmp_path / "damaged.csv"
    pd.DataFrame(rows, columns=["text", "label"]).to_csv(path, index=False)
    return path


def test_html_entities_and_mojibake_are_found_with_rows_counts_and_examples(tmp_path) -> None:
    from texttune.config import DataConfig
    from texttune.data.load import load_dataset

    ds = load_dataset(DataConfig(train_file=damaged_csv(tmp_path)), carve=False)
    report = run_checks(ds, CFG)
    entities, mojibake = found(report, "html_entities", "train"), found(report, "mojibake", "train")
    assert (entities.count, entities.rows, entities.severity) == (3, [0, 1, 2], "warning")
    assert "#39; 2" in entities.message and "quot; 2" in entities.message and "data.clean_text" in entities.message
    assert (mojibake.count, mojibake.rows) == (2, [3, 4])
    assert any("#39;" in example for example in entities.examples)


def test_clean_text_repairs_what_the_checks_found(tmp_path) -> None:
    from texttune.config import DataConfig
    from texttune.data.load import load_dataset

    ds = load_dataset(DataConfig(train_file=damaged_csv(tmp_path), clean_text=True), carve=False)
    assert ds.splits["train"]["text"].tolist() == [fixed for _, fixed in DAMAGED] + CLEAN
    assert "data.clean_text repaired HTML entities or mojibake in 5 texts" in ds.notes
    checks = {f.check for f in run_checks(ds, CFG).findings}
    assert not checks & {"html_entities", "mojibake"}


def test_real_ag_news_html_entity_damage_is_counted_and_repaired() -> None:
    from texttune.data.load import repair_texts

    ds = real("ag_news")
    f = found(run_checks(ds, EXACT_ONLY), "html_entities", "test")
    # Rows with any remnant; each form counted where it occurs (the data README: #39; in 1,900 rows).
    assert f.count == 2428
    assert f.message.startswith("2,428 rows with HTML-entity remnants")
    assert "#39; 2,789, &gt; 754, &lt; 753, quot; 595, amp; 105" in f.message
    assert found(run_checks(ds, EXACT_ONLY), "mojibake", "test") is None  # AG News is plain ASCII
    repaired = repair_texts(ds)
    assert found(run_checks(repaired, EXACT_ONLY), "html_entities", "test") is None
    texts = repaired.splits["test"]["text"]
    assert texts.str.contains("doesn't feel any extra pressure", regex=False).any()
