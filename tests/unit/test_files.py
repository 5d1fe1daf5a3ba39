"""Readers for the user's own data files (CSV, TSV, JSONL, Parquet) and label encoding.

Every bad file must fail as one ``DataError`` naming the file and the line, row or column at fault;
rows with a missing or unknown label are kept by the readers and reported by the data checks.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from texttune.config import DataChecksConfig, DataConfig

from texttune.tasks.classify import load_config
from texttune.data.dataset import MISSING_LABEL, UNKNOWN_LABEL
from texttune.data.files import detect_format, load_files, read_table
from texttune.data.load import load_dataset
from texttune.errors import ConfigError, DataCheckError, DataError, TexttuneError


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def write_jsonl(path: Path, records: list[dict]) -> Path:
    lines = [json.dumps(r, ensure_ascii=False) for r in records]
    return write(path, "\n".join(lines) + "\n")


def load(train: Path, **fields) -> object:
    return load_files(DataConfig(train_file=train, **fields))


def check(cfg: DataConfig):
    """What ``texttune data check`` does: the source's own splits, the checks, then the policy."""
    from texttune.data.checks import apply_policy, run_checks

    ds = load_dataset(cfg, carve=False)
    report = run_checks(ds, cfg.checks)
    return (*apply_policy(ds, report, cfg.checks), report)


def labels_of(ds, split: str = "train") -> list[int]:
    return ds.splits[split]["label"].tolist()


def named(ds, split: str = "train") -> list[str]:
    return [ds.label_names[i] for i in labels_of(ds, split)]


# --------------------------------------------------------------------------- positive cases


def test_csv_string_labels_are_sorted_names(tmp_path):
    path = write(tmp_path / "train.csv", "text,label\ngood film,pos\nbad film,neg\nso-so,neutral\nfine,pos\n")
    ds = load(path)
    assert ds.label_names == ["neg", "neutral", "pos"]
    assert labels_of(ds) == [2, 0, 1, 2]
    assert ds.splits["train"]["text"].tolist() == ["good film", "bad film", "so-so", "fine"]
    assert ds.name == "train"
    assert ds.task == "classification"
    assert ds.files == {"train": str(path)}
    assert "label names from the distinct values of 'label'" in ds.notes[0]


def test_integer_labels_are_sorted_numerically(tmp_path):
    # Sorted as numbers: "10" after "2", not before it.
    path = write(tmp_path / "train.csv", "text,label\na,10\nb,2\nc,0\nd,2\n")
    ds = load(path)
    assert ds.label_names == ["0", "2", "10"]
    assert named(ds) == ["10", "2", "0", "2"]


def test_index_is_the_zero_based_data_row(tmp_path):
    path = write(tmp_path / "train.csv", "text,label\na,x\nb,y\nc,x\n")
    assert load(path).splits["train"].index.tolist() == [0, 1, 2]


def test_tsv_by_extension(tmp_path):
    path = write(tmp_path / "train.tsv", "text\tlabel\nhello, world\tgreeting\nbye; now\tfarewell\n")
    ds = load(path)
    assert ds.splits["train"]["text"].tolist() == ["hello, world", "bye; now"]
    assert named(ds) == ["greeting", "farewell"]


@pytest.mark.parametrize(
    ("name", "fmt"),
    [("a.csv", "csv"), ("a.TSV", "tsv"), ("a.tab", "tsv"), ("a.jsonl", "jsonl"),
     ("a.ndjson", "jsonl"), ("a.parquet", "parquet"), ("a.pq", "parquet"), ("a.v2.csv", "csv")],
)
def test_detect_format_from_extension(name, fmt):
    assert detect_format(Path(name)) == fmt


def test_unknown_extension_names_the_file_and_data_file_format(tmp_path):
    with pytest.raises(DataError, match=r"notes\.txt: cannot tell the format .*'\.txt'.*data\.file_format"):
        detect_format(tmp_path / "notes.txt")


def test_file_format_overrides_the_extension(tmp_path):
    path = write(tmp_path / "train.txt", "text,label\na,x\nb,y\n")
    ds = load(path, file_format="csv")
    assert named(ds) == ["x", "y"]


def test_jsonl_with_blank_lines_and_integer_labels(tmp_path):
    path = write(
        tmp_path / "train.jsonl",
        '{"text": "a", "label": 1}\n\n{"text": "b", "label": 0}\n   \n{"text": "c", "label": 1}\n',
    )
    ds = load(path)
    assert ds.label_names == ["0", "1"]
    assert labels_of(ds) == [1, 0, 1]
    assert ds.splits["train"]["text"].tolist() == ["a", "b", "c"]


def test_parquet(tmp_path):
    path = tmp_path / "train.parquet"
    pd.DataFrame({"text": ["a", "b", "c"], "label": ["spam", "ham", "spam"]}).to_parquet(path)
    ds = load(path)
    assert ds.label_names == ["ham", "spam"]
    assert labels_of(ds) == [1, 0, 1]


def test_sentence_pairs_with_text_pair_column(tmp_path):
    path = write(
        tmp_path / "train.csv",
        "sentence1,sentence2,same\nA cat sat.,A cat was sitting.,1\nIt rains.,Stocks fell.,0\n",
    )
    ds = load(path, text_column="sentence1", text_pair_column="sentence2", label_column="same")
    frame = ds.splits["train"]
    assert ds.task == "pair_classification"
    assert ds.has_pairs
    assert frame["text"].tolist() == ["A cat sat.", "It rains."]
    assert frame["text_pair"].tolist() == ["A cat was sitting.", "Stocks fell."]
    assert named(ds) == ["1", "0"]


def test_missing_text_pair_column_names_the_key(tmp_path):
    path = write(tmp_path / "train.csv", "text,label\na,x\n")
    with pytest.raises(DataError, match=r"train\.csv: no column 'second' \(data\.text_pair_column\)"):
        load(path, text_pair_column="second")


def test_label_names_from_config_fix_the_order(tmp_path):
    # Strings are looked up by name; integers index into the list.
    path = write(tmp_path / "train.csv", "text,label\na,pos\nb,neg\nc,0\nd,1\n")
    ds = load(path, label_names=["pos", "neg"])
    assert ds.label_names == ["pos", "neg"]
    assert labels_of(ds) == [0, 1, 0, 1]
    assert ds.notes == ["label names from data.label_names"]


def test_labels_txt_beside_the_train_file_wins_over_sorting(tmp_path):
    path = write(tmp_path / "train.csv", "text,label\na,neg\nb,pos\nc,neutral\n")
    write(tmp_path / "labels.txt", "\ufeffpos\nneutral\n\nneg\n")  # a BOM and a blank line are fine
    ds = load(path)
    assert ds.label_names == ["pos", "neutral", "neg"]
    assert labels_of(ds) == [2, 0, 1]
    assert str(tmp_path / "labels.txt") in ds.notes[0]


def test_config_label_names_win_over_labels_txt(tmp_path):
    path = write(tmp_path / "train.csv", "text,label\na,x\nb,y\n")
    write(tmp_path / "labels.txt", "x\ny\n")
    assert load(path, label_names=["y", "x"]).label_names == ["y", "x"]


def test_integer_labels_index_into_labels_txt(tmp_path):
    path = write(tmp_path / "train.csv", "text,label\na,0\nb,1\nc,5\n")
    write(tmp_path / "labels.txt", "neg\npos\n")
    ds = load(path)
    assert labels_of(ds) == [0, 1, UNKNOWN_LABEL]


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "parquet"])
def test_texts_that_look_like_na_stay_texts(tmp_path, fmt):
    texts = ["NA", "null", "None", "nan", "N/A", "NaN", "#N/A", "-", ""]
    frame = pd.DataFrame({"text": texts, "label": ["x", "y"] * 4 + ["x"]})
    path = tmp_path / f"train.{fmt}"
    if fmt == "parquet":
        frame.to_parquet(path)
    elif fmt == "jsonl":
        write_jsonl(path, frame.to_dict("records"))
    else:
        frame.to_csv(path, sep="\t" if fmt == "tsv" else ",", index=False)
    got = load(path).splits["train"]["text"].tolist()
    assert got == texts
    assert all(isinstance(t, str) for t in got)


def test_missing_labels_are_kept_for_the_checks(tmp_path):
    path = write(tmp_path / "train.csv", "text,label\na,x\nb,\nc,y\nd,  \n")
    ds = load(path)
    assert ds.label_names == ["x", "y"]
    assert labels_of(ds) == [0, MISSING_LABEL, 1, MISSING_LABEL]


def test_jsonl_null_or_absent_label_is_missing(tmp_path):
    path = write_jsonl(
        tmp_path / "train.jsonl",
        [{"text": "a", "label": "x"}, {"text": "b", "label": None}, {"text": "c"},
         {"text": "d", "label": "y"}],
    )
    assert labels_of(load(path)) == [0, MISSING_LABEL, MISSING_LABEL, 1]


def test_validation_label_missing_from_train_is_unknown(tmp_path):
    train = write(tmp_path / "train.csv", "text,label\na,x\nb,y\n")
    validation = write(tmp_path / "dev.csv", "text,label\nc,x\nd,z\n")
    test = write(tmp_path / "test.csv", "text,label\ne,y\n")
    ds = load(train, validation_file=validation, test_file=test)
    assert ds.split_names() == ["train", "validation", "test"]
    assert labels_of(ds, "validation") == [0, UNKNOWN_LABEL]
    assert ds.splits["validation"]["label_raw"].tolist() == ["x", "z"]
    assert ds.files["validation"] == str(validation)

    with pytest.raises(DataCheckError) as info:
        check(DataConfig(train_file=train, validation_file=validation, test_file=test))
    message = str(info.value)
    assert f"unknown_label: {validation}: column 'label'" in message
    assert "'z'" in message
    assert re.search(r"rows? 1\b", message)


def test_load_dataset_with_files_uses_the_same_reader(tmp_path):
    path = write(tmp_path / "train.csv", "text,label\n" + "".join(f"t{i},{'ab'[i % 2]}\n" for i in range(20)))
    ds = load_dataset(DataConfig(train_file=path), carve=False)
    assert ds.split_names() == ["train"]
    assert ds.provenance == {"train": "your file"}


# --------------------------------------------------------------------------- bad files


def test_file_not_found(tmp_path):
    with pytest.raises(DataError, match=re.escape(f"{tmp_path / 'nope.csv'}: file not found")):
        load(tmp_path / "nope.csv")


def test_folder_instead_of_file(tmp_path):
    (tmp_path / "data.csv").mkdir()
    with pytest.raises(DataError, match=r"data\.csv: is a folder, not a data file"):
        read_table(tmp_path / "data.csv", "csv")


@pytest.mark.parametrize("name", ["train.csv", "train.tsv", "train.jsonl", "train.parquet"])
def test_empty_file(tmp_path, name):
    path = write(tmp_path / name, "")
    with pytest.raises(DataError, match=re.escape(f"{path}: file is empty")):
        load(path)


@pytest.mark.parametrize("content", ["  \n\n\t\n", "\ufeff\n"])
def test_whitespace_only_file_is_empty(tmp_path, content):
    path = write(tmp_path / "train.csv", content)
    with pytest.raises(DataError, match=re.escape(f"{path}: file is empty (only whitespace)")):
        load(path)


@pytest.mark.parametrize(("name", "content"), [("train.csv", "text,label\n"), ("train.tsv", "text\tlabel\n")])
def test_header_only(tmp_path, name, content):
    path = write(tmp_path / name, content)
    with pytest.raises(DataError, match=re.escape(f"{path}: has a header but no data rows")):
        load(path)


def test_parquet_without_rows(tmp_path):
    path = tmp_path / "train.parquet"
    pd.DataFrame({"text": pd.Series([], dtype=str), "label": pd.Series([], dtype=str)}).to_parquet(path)
    with pytest.raises(DataError, match=re.escape(f"{path}: has a header but no data rows")):
        load(path)


def test_missing_text_column_lists_the_columns(tmp_path):
    path = write(tmp_path / "train.csv", "sentence,label\nhello,a\n")
    expected = f"{path}: no column 'text' (data.text_column); the columns are: sentence, label"
    with pytest.raises(DataError, match=re.escape(expected)):
        load(path)


def test_missing_label_column_lists_the_columns(tmp_path):
    path = write(tmp_path / "train.csv", "text,category\nhello,a\n")
    expected = f"{path}: no column 'label' (data.label_column); the columns are: text, category"
    with pytest.raises(DataError, match=re.escape(expected)):
        load(path)


def test_renamed_columns_are_used(tmp_path):
    path = write(tmp_path / "train.csv", "sentence,category\nhello,a\n")
    ds = load(path, text_column="sentence", label_column="category")
    assert ds.splits["train"]["text"].tolist() == ["hello"]
    assert named(ds) == ["a"]


def test_missing_column_in_the_validation_file_names_that_file(tmp_path):
    train = write(tmp_path / "train.csv", "text,label\na,x\n")
    dev = write(tmp_path / "dev.csv", "txt,label\nb,x\n")
    with pytest.raises(DataError, match=re.escape(f"{dev}: no column 'text' (data.text_column)")):
        load(train, validation_file=dev)


def test_non_utf8_bytes_give_the_line(tmp_path):
    path = tmp_path / "train.csv"
    path.write_bytes(b"text,label\nhello,a\ncaf\xe9 au lait,b\n")  # Latin-1 e-acute
    expected = f"{path}: not valid UTF-8: byte b'\\xe9' at line 3"
    with pytest.raises(DataError, match=re.escape(expected)) as info:
        load(path)
    assert "re-save the file as UTF-8" in str(info.value)


def test_non_utf8_in_jsonl_gives_the_line(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_bytes(b'{"text": "a", "label": "x"}\n{"text": "\x92b", "label": "y"}\n')
    with pytest.raises(DataError, match=re.escape(f"{path}: not valid UTF-8: byte b'\\x92' at line 2")):
        load(path)


def test_non_utf8_after_a_bom_gives_the_right_line(tmp_path):
    path = tmp_path / "train.csv"
    path.write_bytes(b"\xef\xbb\xbftext,label\n\xffhello,a\n")
    with pytest.raises(DataError, match=re.escape("byte b'\\xff' at line 2 (byte offset 14)")):
        load(path)


def test_utf8_bom_is_accepted(tmp_path):
    path = tmp_path / "train.csv"
    path.write_bytes("\ufefftext,label\ncafé,a\nbye,b\n".encode())
    ds = load(path)
    assert ds.splits["train"]["text"].tolist() == ["café", "bye"]
    assert named(ds) == ["a", "b"]


def test_utf8_bom_in_jsonl_is_accepted(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"text": "a", "label": "x"}\n')
    assert named(load(path)) == ["x"]


def test_semicolon_csv_names_the_delimiter_and_data_delimiter(tmp_path):
    path = write(tmp_path / "train.csv", "text;label\nhello;a\nbye;b\n")
    expected = (
        f"{path}: wrong delimiter: the header 'text;label' is one column when split on comma but "
        "contains semicolon; set data.delimiter=';'"
    )
    with pytest.raises(DataError, match=re.escape(expected)):
        load(path)
    assert named(load(path, delimiter=";")) == ["a", "b"]


def test_semicolon_csv_with_commas_in_texts_is_still_a_wrong_delimiter(tmp_path):
    path = write(tmp_path / "train.csv", "text;label\nhello, world;a\nbye;b\n")
    with pytest.raises(DataError, match=r"wrong delimiter.*semicolon.*data\.delimiter=';'"):
        load(path)


def test_tab_separated_csv_names_the_tab(tmp_path):
    path = write(tmp_path / "train.csv", "text\tlabel\nhello\ta\n")
    expected = r"train\.csv: wrong delimiter: .*contains tab; set data\.delimiter='\\t'"
    with pytest.raises(DataError, match=expected):
        load(path)


def test_comma_separated_tsv_names_the_comma(tmp_path):
    path = write(tmp_path / "train.tsv", "text,label\nhello,a\n")
    with pytest.raises(DataError, match=r"split on tab but contains comma; set data\.delimiter=','"):
        load(path)


def test_ragged_csv_gives_the_line(tmp_path):
    path = write(tmp_path / "train.csv", "text,label\nok,a\nnot, ok,b\n")
    with pytest.raises(DataError, match=re.escape(f"{path}: malformed comma-separated file: ")) as info:
        load(path)
    assert "line 3" in str(info.value)


def test_malformed_jsonl_line_gives_the_line(tmp_path):
    path = write(tmp_path / "train.jsonl", '{"text": "a", "label": "x"}\n\n{"text": "b", label: "y"}\n')
    with pytest.raises(DataError, match=re.escape(f"{path}: line 3 is not valid JSON: ")):
        load(path)


def test_jsonl_line_that_is_not_an_object(tmp_path):
    path = write(tmp_path / "train.jsonl", '{"text": "a", "label": "x"}\n["b", "y"]\n')
    with pytest.raises(DataError, match=re.escape(f"{path}: line 2 is a JSON list, expected an object")):
        load(path)


def test_jsonl_with_unicode_line_separator_inside_a_string(tmp_path):
    records = [{"text": "one\u2028two", "label": "x"}, {"text": "c", "label": "y"}]
    path = write_jsonl(tmp_path / "train.jsonl", records)
    ds = load(path)
    assert ds.splits["train"]["text"].tolist() == ["one\u2028two", "c"]


def test_jsonl_integer_labels_with_a_null_keep_their_names(tmp_path):
    path = write_jsonl(
        tmp_path / "train.jsonl",
        [{"text": "a", "label": 1}, {"text": "b", "label": 2}, {"text": "c", "label": None},
         {"text": "d", "label": 2}],
    )
    ds = load(path)
    assert ds.label_names == ["1", "2"]
    assert labels_of(ds) == [0, 1, MISSING_LABEL, 1]


def test_parquet_that_is_not_parquet(tmp_path):
    path = write(tmp_path / "train.parquet", "text,label\na,x\n")
    with pytest.raises(DataError, match=re.escape(f"{path}: not a readable Parquet file (")):
        load(path)


def test_labels_txt_with_a_duplicate_name(tmp_path):
    path = write(tmp_path / "train.csv", "text,label\na,x\n")
    labels = write(tmp_path / "labels.txt", "x\ny\nx\n")
    with pytest.raises(DataError, match=re.escape(f"{labels}: a label name appears twice")):
        load(path)


def test_empty_labels_txt(tmp_path):
    path = write(tmp_path / "train.csv", "text,label\na,x\n")
    labels = write(tmp_path / "labels.txt", "\n \n")
    with pytest.raises(DataError, match=re.escape(f"{labels}: no label names in the file")):
        load(path)


def test_duplicate_config_label_names(tmp_path):
    path = write(tmp_path / "train.csv", "text,label\na,x\n")
    with pytest.raises(DataError, match=r"data\.label_names: a label name appears twice"):
        load(path, label_names=["x", "x"])


def test_all_labels_empty(tmp_path):
    path = write(tmp_path / "train.csv", "text,label\na,\nb,\n")
    with pytest.raises(DataError, match=re.escape(f"{path}: column 'label' has no labels (all empty)")):
        load(path)


# --------------------------------------------------------------------------- through the checks


def test_missing_labels_fail_the_checks_under_warn(tmp_path):
    path = write(tmp_path / "train.csv", "text,label\nhello,a\nbye,\nfoo,b\nbar,\n")
    with pytest.raises(DataCheckError) as info:
        check(DataConfig(train_file=path))
    message = str(info.value)
    assert isinstance(info.value, DataError)
    assert f"missing_label: {path}: column 'label': 2 rows" in message
    assert "rows 1, 3" in message
    assert "data.checks.policy=drop" in message


def test_missing_labels_are_dropped_under_drop(tmp_path):
    path = write(tmp_path / "train.csv", "text,label\nhello,a\nbye,\nfoo,b\nbar,\n")
    ds, dropped, report = check(DataConfig(train_file=path, checks=DataChecksConfig(policy="drop")))
    assert [f.check for f in report.errors] == ["missing_label"]
    assert dropped["train"]["missing_label"] == 2
    assert ds.splits["train"].index.tolist() == [0, 2]


def test_unknown_label_against_labels_txt_is_reported_with_its_raw_value(tmp_path):
    path = write(tmp_path / "train.csv", "text,label\nhello,pos\nbye,neutral\nfoo,neg\n")
    write(tmp_path / "labels.txt", "pos\nneg\n")
    with pytest.raises(DataCheckError) as info:
        check(DataConfig(train_file=path))
    message = str(info.value)
    assert f"unknown_label: {path}: column 'label'" in message
    assert "'neutral'" in message
    assert "[pos, neg]" in message
    assert re.search(r"rows? 1\b", message)


# --------------------------------------------------------------------------- built-ins and config


def test_unknown_builtin_dataset_suggests_the_close_name(tmp_path):
    expected = r"unknown dataset 'treq' \(did you mean 'trec'\?\); known: "
    with pytest.raises(TexttuneError, match=expected) as info:
        load_dataset(DataConfig(dataset="treq", data_dir=tmp_path, hub_fallback=False))
    for name in ("ag_news", "imdb", "mrpc", "sst2", "trec", "trec_fine"):
        assert name in str(info.value)


def test_config_unknown_key_names_path_file_and_suggestion(tmp_path):
    path = write(tmp_path / "exp.yaml", "data:\n  max_train_sample: 500\n")
    expected = f"data.max_train_sample: unknown field (did you mean 'max_train_samples'?) in {path}"
    with pytest.raises(ConfigError, match=re.escape(expected)):
        load_config(path)


def test_config_wrong_type_names_path_value_and_file(tmp_path):
    path = write(tmp_path / "exp.yaml", "data:\n  checks:\n    max_imbalance_ratio: lots\n")
    expected = r"data\.checks\.max_imbalance_ratio: .*'lots'.* in " + re.escape(str(path))
    with pytest.raises(ConfigError, match=expected):
        load_config(path)


def test_config_broken_yaml_gives_the_line(tmp_path):
    path = write(tmp_path / "exp.yaml", "data:\n  dataset: trec\n   split_seed: 3\n")
    with pytest.raises(ConfigError, match=re.escape(f"{path}: line 3, column 14: invalid YAML: ")):
        load_config(path)
