"""Property-based fuzzing of every data reader: CSV, TSV, JSONL and Parquet files and labels files.

The promise under test: *any* input gives either a valid dataset or a ``TexttuneError`` whose one-line
message starts with the file at fault, never another exception, and quickly. Inputs are arbitrary
bytes, arbitrary text, and structured-but-wrong content (random column names and values, nested JSON,
lone surrogates escaped in JSON, Parquet columns of every type, duplicate names).

Budget: every test runs a fixed, derandomized number of examples (``EXAMPLES``), inputs are at most
``MAX_BYTES`` bytes, and each call must return within ``CALL_SECONDS``; the file runs in ~15 s on one
CPU core. The regression tests at the end are the crashes the fuzzer found, kept as plain examples.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, currently_in_test_context, event, given, settings
from hypothesis import strategies as st

from texttune.config import DataConfig
from texttune.data.dataset import MISSING_LABEL, UNKNOWN_LABEL, TextDataset
from texttune.data.files import load_files, read_labels_file, read_table
from texttune.data.load import prepare_data
from texttune.errors import DataCheckError, DataError, TexttuneError

MAX_BYTES = 64 * 1024
CALL_SECONDS = 10.0  # generous for a loaded CI machine; the blow-ups it guards against took minutes
EXAMPLES = 200


def fuzz(examples: int = EXAMPLES) -> Callable:
    # derandomize: the same examples on every run (a failure reproduces); no example database on disk.
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


@contextmanager
def folder():
    path = Path(tempfile.mkdtemp(prefix="texttune-fuzz-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def outcome(call: Callable[[], object], *paths: Path) -> object | None:
    """Run ``call``: its result, or None for a TexttuneError that names one of ``paths`` first."""
    tic = time.perf_counter()
    try:
        result = call()
    except DataCheckError as err:  # the checks' report: several lines, each naming its file
        assert any(str(p) in str(err) for p in paths), str(err)
        result = None
        note("data checks failed")
    except TexttuneError as err:
        message = str(err)
        assert any(message.startswith(f"{p}:") for p in paths), message
        assert "\n" not in message and "\r" not in message, message
        result = None
        note("error: " + " ".join(message.split(": ", 1)[1].split()[:3]))
    else:
        if isinstance(result, TextDataset):
            assert_valid(result)
        note("read")
    message_ok(result)
    assert time.perf_counter() - tic < CALL_SECONDS
    return result


def note(kind: str) -> None:
    """Count outcomes (pytest --hypothesis-show-statistics): which errors the inputs reached."""
    if currently_in_test_context():
        event(kind)


def message_ok(result: object) -> None:
    """Everything a user is shown must be printable as UTF-8 (no lone surrogates survive a reader)."""
    if isinstance(result, TextDataset):
        for df in result.splits.values():
            for column in ("text", "text_pair"):
                if column in df.columns:
                    "".join(df[column]).encode("utf-8")
        "".join(result.label_names or []).encode("utf-8")


def assert_valid(ds: TextDataset) -> None:
    assert ds.label_names and len(set(ds.label_names)) == len(ds.label_names)
    assert all(isinstance(name, str) for name in ds.label_names)
    for split, df in ds.splits.items():
        assert len(df) > 0 or split == "test"  # only a test split may be left empty (by the drop policy)
        assert all(isinstance(t, str) for t in df["text"])
        labels = df["label"].to_numpy()
        valid = (labels >= 0) & (labels < ds.num_labels)
        assert (valid | (labels == MISSING_LABEL) | (labels == UNKNOWN_LABEL)).all()


# --------------------------------------------------------------------------- strategies

EXTENSIONS = (".csv", ".tsv", ".jsonl", ".parquet")
COLUMN_NAMES = st.one_of(st.sampled_from(["text", "label", "text.1", "", " text", "Unnamed: 0"]),
                         st.text(max_size=8))
# Every kind of character, lone surrogates included (they can only reach a file escaped in JSON).
SURROGATE_TEXT = st.tuples(st.text(max_size=6), st.characters(categories=["Cs"]), st.text(max_size=6)).map(
    "".join)
ANY_TEXT = st.one_of(*[st.text(max_size=30)] * 5, SURROGATE_TEXT)
CELL = st.one_of(st.sampled_from(["", "a", "b", "NA", "null", "0", "1", "-1", "--1", "²", "1.0", '"', "\\"]),
                 st.text(st.characters(blacklist_categories=["Cs"]), max_size=12))
LABEL = st.one_of(st.sampled_from(["a", "b", "c"]), CELL)  # mostly a few labels, so files can load
JSON_SCALAR = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                        st.floats(allow_nan=True, allow_infinity=True), ANY_TEXT)
JSON_VALUE = st.recursive(JSON_SCALAR, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(ANY_TEXT, inner, max_size=3)), max_leaves=6)


@st.composite
def delimited(draw, min_rows: int = 0, cell: st.SearchStrategy = LABEL, well_formed: bool = False
              ) -> tuple[str, str, str | None]:
    """(extension, content, data.delimiter) of a CSV/TSV file: a header of text/label and random names,
    rows of random cells, mostly of the header's width; csv-quoted or joined raw; and a delimiter
    setting that is mostly, but not always, the one the file uses. ``well_formed``: a text,label
    header, rows of its width, csv-quoted, the right delimiter (only the values are random)."""
    sep = draw(st.sampled_from([",", "\t", ";"]))
    ext = ".tsv" if sep == "\t" else ".csv"
    right = sep if sep == ";" else None
    if well_formed:
        header, delimiter, quoted = ["text", "label"], right, True
    else:
        usual = st.sampled_from([["text", "label"], ["label", "text"], ["text", "label", "id"]])
        header = draw(st.one_of(usual, st.lists(COLUMN_NAMES, min_size=1, max_size=5)))
        widths = st.sampled_from([len(header)] * 8 + [max(len(header) - 1, 1), len(header) + 1])
        delimiter = draw(st.sampled_from([right] * 4 + [",", "\t", ";", "|"]))
        quoted = draw(st.booleans())
    row = st.tuples(cell, st.sampled_from(["a", "b", "c", "a", "b", "", "d"])) if well_formed else (
        widths.flatmap(lambda n: st.tuples(*[cell] * n)))
    rows = draw(st.lists(row, min_size=min_rows, max_size=30))
    if quoted:
        buffer = io.StringIO()
        csv.writer(buffer, delimiter=sep, lineterminator=draw(st.sampled_from(["\n", "\r\n"]))).writerows(
            [header, *rows])
        return ext, buffer.getvalue(), delimiter
    lines = "\n".join(sep.join(row) for row in [header, *rows])
    return ext, lines + draw(st.sampled_from(["", "\n"])), delimiter


@st.composite
def jsonl(draw) -> tuple[bytes, bool]:
    """(content, escaped) of a JSONL file of random objects (often with text/label keys) and junk lines.
    With ``escaped`` every non-ASCII character (lone surrogates too) is a \\u escape; without it they
    are written raw, and a surrogate then makes invalid UTF-8 bytes."""
    keys = st.one_of(st.sampled_from(["text", "label", "text_pair"]), ANY_TEXT)
    record = st.dictionaries(keys, JSON_VALUE, max_size=4)
    good = st.fixed_dictionaries({"text": JSON_VALUE, "label": JSON_VALUE})
    line = st.one_of(record.map(lambda r: ("json", r)), good.map(lambda r: ("json", r)),
                     JSON_VALUE.map(lambda v: ("json", v)), st.text(max_size=30).map(lambda t: ("raw", t)))
    escaped = draw(st.sampled_from([True, True, True, False]))
    lines = []
    for kind, value in draw(st.lists(line, max_size=10)):
        lines.append(json.dumps(value, ensure_ascii=escaped) if kind == "json" else value)
    text = "\n".join(lines) + "\n"
    return text.encode("utf-8", errors="surrogatepass"), escaped


ARROW_COLUMNS = {
    "string": st.lists(st.one_of(st.none(), st.text(st.characters(blacklist_categories=["Cs"]), max_size=8)),
                       min_size=1, max_size=6).map(lambda v: pa.array(v, pa.string())),
    "int": st.lists(st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)), min_size=1, max_size=6).map(
        lambda v: pa.array(v, pa.int64())),
    "float": st.lists(st.floats(), min_size=1, max_size=6).map(lambda v: pa.array(v, pa.float64())),
    "bool": st.lists(st.booleans(), min_size=1, max_size=6).map(lambda v: pa.array(v, pa.bool_())),
    "binary": st.lists(st.binary(max_size=6), min_size=1, max_size=6).map(lambda v: pa.array(v, pa.binary())),
    "list": st.lists(st.lists(st.text(max_size=3), max_size=2),
                     min_size=1, max_size=6).map(lambda v: pa.array(v, pa.list_(pa.string()))),
    "struct": st.lists(st.fixed_dictionaries({"a": st.integers(0, 9)}), min_size=1, max_size=6).map(pa.array),
    "null": st.integers(1, 6).map(lambda n: pa.nulls(n)),
}


@st.composite
def parquet_table(draw) -> pa.Table:
    """A table of 1-4 columns of random Arrow types, mostly named text, label, ...; names repeat now
    and then."""
    kinds = draw(st.lists(st.sampled_from(sorted(ARROW_COLUMNS)), min_size=1, max_size=4))
    arrays = [draw(ARROW_COLUMNS[kind]) for kind in kinds]
    rows = min(len(a) for a in arrays)
    names = ["text", "label", "x", "y"][: len(kinds)]
    if draw(st.integers(0, 4)) == 0:
        names = draw(st.lists(st.sampled_from(["text", "label", "x"]), min_size=len(kinds),
                              max_size=len(kinds)))
    elif draw(st.booleans()):
        names = draw(st.permutations(names))
    return pa.Table.from_arrays([a.slice(0, rows) for a in arrays], names=names)


# --------------------------------------------------------------------------- properties


@fuzz(examples=300)
@given(content=st.one_of(st.binary(max_size=2048), st.text(max_size=2048).map(
    lambda t: t.encode("utf-8", errors="surrogatepass"))), ext=st.sampled_from(EXTENSIONS))
def test_arbitrary_bytes_in_any_format(content, ext):
    with folder() as tmp:
        path = tmp / f"train{ext}"
        path.write_bytes(content)
        outcome(lambda: load_files(DataConfig(train_file=path)), path)


@fuzz()
@given(file=delimited(),
       columns=st.sampled_from([("text", "label")] * 4 + [("label", "text"), ("text", "text")]))
def test_structured_delimited_files(file, columns):
    ext, content, delimiter = file
    with folder() as tmp:
        path = tmp / f"train{ext}"
        path.write_text(content, encoding="utf-8")
        cfg = DataConfig(train_file=path, delimiter=delimiter, text_column=columns[0],
                         label_column=columns[1])
        outcome(lambda: load_files(cfg), path)


@fuzz()
@given(file=jsonl())
def test_structured_jsonl_files(file):
    content, _ = file
    with folder() as tmp:
        path = tmp / "train.jsonl"
        path.write_bytes(content)
        ds = outcome(lambda: load_files(DataConfig(train_file=path)), path)
        outcome(lambda: read_table(path, "jsonl"), path)
        if ds is not None:  # what was read can be written back as JSON and UTF-8 (records, caches)
            json.dumps(ds.splits["train"][["text"]].to_dict("records"), ensure_ascii=False).encode("utf-8")


@fuzz()
@given(table=parquet_table(), label_names=st.one_of(st.none(), st.just(["a", "b"])))
def test_parquet_columns_of_every_type(table, label_names):
    with folder() as tmp:
        path = tmp / "train.parquet"
        pq.write_table(table, path)
        outcome(lambda: load_files(DataConfig(train_file=path, label_names=label_names)), path)


@fuzz()
@given(content=st.one_of(st.binary(max_size=512), st.lists(CELL, max_size=8).map(
    lambda names: "\n".join(names).encode())), beside=st.booleans())
def test_labels_files(content, beside):
    with folder() as tmp:
        labels = tmp / "labels.txt"
        labels.write_bytes(content)
        outcome(lambda: read_labels_file(labels), labels)
        if beside:  # picked up beside a good train file: errors name labels.txt, unknown labels the checks
            train = tmp / "train.csv"
            train.write_text("text,label\nhello,a\nbye,b\nso so,0\n", encoding="utf-8")
            outcome(lambda: load_files(DataConfig(train_file=train)), labels, train)


@fuzz(examples=120)
@given(file=delimited(min_rows=20, well_formed=True,
                      cell=st.one_of(st.just(""), st.text("abcdefghij ,.\"", min_size=1, max_size=12))),
       policy=st.sampled_from(["warn", "drop"]))
def test_the_whole_run_data_path(file, policy):
    """load → carve → subsets → checks → policy → trainable: ``texttune run`` before it trains."""
    ext, content, delimiter = file
    with folder() as tmp:
        path = tmp / f"train{ext}"
        path.write_text(content, encoding="utf-8")
        cfg = DataConfig(train_file=path, delimiter=delimiter, checks={"policy": policy},
                         max_train_samples=16)
        outcome(lambda: prepare_data(cfg)[0], path)


# --------------------------------------------------------------------------- bounds and regressions


@pytest.mark.parametrize(("name", "content", "loads"), [
    ("train.jsonl", "[" * 60_000 + "]" * 60_000, False),  # nesting deeper than Python's stack
    ("train.jsonl", '{"text": ' + "[" * 30_000 + "]" * 30_000 + ', "label": "a"}', False),
    ("train.csv", ",".join(f"c{i}" for i in range(6_000)) + "\n" + "," * 5_999 + "\n", False),  # 6k columns
    ("train.csv", "text,label\n" + "x,a\n" * 14_000, True),  # many tiny rows
    ("train.jsonl", '{"text": "' + "\\ud83d" * 10_000 + '", "label": "a"}\n', False),
    ("train.jsonl", '{"label": ' + "9" * 60_000 + "}\n", False),  # an integer past Python's 4,300 digits
])
def test_large_adversarial_inputs_stay_within_time_and_memory(tmp_path, name, content, loads):
    assert len(content.encode()) <= 2 * MAX_BYTES
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    assert (outcome(lambda: load_files(DataConfig(train_file=path)), path) is not None) == loads  # timed
    tracemalloc.start()  # measured apart: tracing makes a call several times slower
    try:
        with nullcontext() if loads else pytest.raises(DataError):
            load_files(DataConfig(train_file=path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 256 * 2**20, f"{peak / 2**20:.0f} MiB for {len(content):,} characters"


@pytest.mark.parametrize(("name", "content", "message"), [
    # 1: lone surrogates, escaped, inside valid JSON
    ("train.jsonl", '{"text": "\\ud800", "label": "a"}\n',
     "line 1: field 'text' holds the lone surrogate '\\ud800'"),
    ("train.jsonl", '{"text": "ok", "label": "a"}\n\n{"text": "x", "label": ["\\udfff"]}\n',
     "line 3: field 'label' holds the lone surrogate '\\udfff'"),
    ("train.jsonl", '{"text": "a", "label": "b", "meta": {"\\udc80": 1}}\n', "line 1: field 'meta'"),
    ("train.jsonl", '{"\\ud800x": "a", "text": "a", "label": "b"}\n',
     "line 1: a key holds the lone surrogate"),
    # 5a: nested values where a text or a label belongs
    ("train.jsonl", '{"text": "ok", "label": "a"}\n{"text": {"a": 1}, "label": "b"}\n',
     "column 'text' holds an object at row 1 (line 2), where one text belongs"),
    ("train.jsonl", '{"text": ["x"], "label": "a"}\n', "column 'text' holds a list at row 0 (line 1)"),
    ("train.jsonl", '{"text": "x", "label": [1]}\n',
     "column 'label' holds a list at row 0 (line 1), where one label"),
    # 5b: duplicate names
    ("train.csv", "text,text,label\na,b,x\n", "the column name 'text' appears more than once"),
    ("train.jsonl", '{"text": "a", "text": "b", "label": "x"}\n', "line 1: the key 'text' appears twice"),
    # found by the fuzzer
    ("train.jsonl", "[" * 60_000, "line 1: JSON nested too deeply"),
    ("train.jsonl", '{"label": ' + "9" * 5_000 + "}\n", "line 1: unreadable JSON value"),
])
def test_bad_values_name_file_line_and_column(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError) as caught:
        load_files(DataConfig(train_file=path))
    assert str(caught.value).startswith(f"{path}: ")
    assert message in str(caught.value)


def test_parquet_list_and_duplicate_columns_are_refused(tmp_path):
    lists = tmp_path / "lists.parquet"
    pq.write_table(pa.table({"text": pa.array([["a"], ["b"]]), "label": ["x", "y"]}), lists)
    with pytest.raises(DataError, match=r"column 'text' holds a list at row 0, where one text belongs"):
        load_files(DataConfig(train_file=lists))
    twice = tmp_path / "twice.parquet"
    pq.write_table(pa.Table.from_arrays([pa.array(["a"]), pa.array(["b"]), pa.array(["x"])],
                                        names=["text", "text", "label"]), twice)
    with pytest.raises(DataError, match=r"twice\.parquet: the column name 'text' appears more than once"):
        load_files(DataConfig(train_file=twice))


def test_integer_like_labels_that_int_refuses_are_names(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("text,label\na,--1\nb,²\nc,1\n", encoding="utf-8")
    assert sorted(load_files(DataConfig(train_file=path)).label_names) == ["--1", "1", "²"]


def test_labels_file_that_is_a_folder(tmp_path):
    with pytest.raises(DataError, match=f"^{tmp_path}: cannot read the label names"):
        read_labels_file(tmp_path)


def test_a_repeated_label_name_is_named(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text("pos\nneg\npos\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"labels\.txt: a label name appears twice: 'pos'"):
        read_labels_file(path)


def test_columns_with_line_breaks_keep_the_message_on_one_line(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text('"te\nxt",label\na,b\n', encoding="utf-8")
    with pytest.raises(DataError) as caught:
        load_files(DataConfig(train_file=path))
    assert "\n" not in str(caught.value) and "'te\\nxt'" in str(caught.value)


def test_many_columns_are_listed_briefly(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text(",".join(f"c{i}" for i in range(500)) + "\n" + "," * 499 + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"the columns are: c0, c1, .*c19, … \(500 columns\)$"):
        load_files(DataConfig(train_file=path))


def test_surrogate_free_jsonl_is_read_as_before(tmp_path):
    path = tmp_path / "train.jsonl"
    records = [{"text": "caf\u00e9 \U0001f600 \\u00e9", "label": "a"},
               {"text": "b", "label": "b", "x": {"y": [1]}}]
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    ds = load_files(DataConfig(train_file=path))
    assert ds.splits["train"]["text"].tolist() == ["caf\u00e9 \U0001f600 \\u00e9", "b"]
    assert np.array_equal(ds.splits["train"]["label"].to_numpy(), [0, 1])
