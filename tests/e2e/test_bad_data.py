"""Bad data through the real CLI (``texttune data check`` and ``texttune run``): each case is a file,
a command, the exit code and the message fragments expected on stderr -- which must start with
"error", name the file, and never show a traceback. A refused run leaves no run directory behind.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest


DATA_ERROR, CHECK_ERROR = 2, 3


def parquet(table: pa.Table) -> Callable[[Path], None]:
    return lambda path: pq.write_table(table, path)


def rows(labels: list[str]) -> str:
    return "text,label\n" + "".join(f"sentence number {i},{label}\n" for i, label in enumerate(labels))


# (case id, {file name: content (str, bytes, or a writer of the path)}, extra args, exit code,
# fragments of stderr; "{train}" is the train file's path, "{dir}" its folder).
CHECK_CASES = [
    ("lone-surrogate",
     {"train.jsonl": '{"text": "ok", "label": "a"}\n{"text": "cut \\ud83d", "label": "b"}\n'},
     (), DATA_ERROR, ["{train}: line 2: field 'text' holds the lone surrogate '\\ud83d'", "UTF-16 pair"]),
    ("surrogate-in-a-key", {"train.jsonl": '{"text": "a", "label": "b", "\\udc00": 1}\n'},
     (), DATA_ERROR, ["{train}: line 1: a key holds the lone surrogate '\\udc00'"]),
    ("object-as-text", {"train.jsonl": '{"text": "fine", "label": "a"}\n{"text": {"a": 1}, "label": "b"}\n'},
     (), DATA_ERROR, ["{train}: column 'text' holds an object at row 1 (line 2), where one text belongs"]),
    ("list-as-text", {"train.jsonl": '{"text": ["x"], "label": "a"}\n'},
     (), DATA_ERROR, ["{train}: column 'text' holds a list at row 0 (line 1)"]),
    ("list-as-label", {"train.jsonl": '{"text": "x", "label": ["a", "b"]}\n'},
     (), DATA_ERROR, ["{train}: column 'label' holds a list at row 0 (line 1), where one label belongs"]),
    ("parquet-list-column",
     {"train.parquet": parquet(pa.table({"text": [["a"], ["b"]], "label": ["x", "y"]}))},
     (), DATA_ERROR, ["{train}: column 'text' holds a list at row 0, where one text belongs"]),
    ("duplicate-csv-column", {"train.csv": "text,text,label\na,b,x\nc,d,y\n"},
     (), DATA_ERROR, ["{train}: the column name 'text' appears more than once; rename one"]),
    ("duplicate-jsonl-key", {"train.jsonl": '{"text": "a", "label": "x", "label": "y"}\n'},
     (), DATA_ERROR, ["{train}: line 1: the key 'label' appears twice"]),
    ("duplicate-parquet-column", {"train.parquet": parquet(pa.Table.from_arrays(
        [pa.array(["a"]), pa.array(["b"]), pa.array(["x"])], names=["text", "label", "text"]))},
     (), DATA_ERROR, ["{train}: the column name 'text' appears more than once"]),
    # pandas used to take the first column as the index here, shifting every column by one
    ("one-field-too-many-in-row-1", {"train.csv": "text,label\nhello,world,a\nbye,b\n"},
     (), DATA_ERROR, ["{train}: malformed comma-separated file: Expected 2 fields in line 2, saw 3"]),
    ("labels-txt-not-covering", {"train.csv": "text,label\ngood,pos\nbad,neg\n", "labels.txt": "yes\nno\n"},
     (), CHECK_ERROR,
     ["unknown_label: {train}: column 'label'", "[yes, no] (2 labels) from {dir}/labels.txt"]),
]

RUN_CASES = [
    ("one-label", {"train.csv": rows(["x"] * 20)}, (), DATA_ERROR,
     ["{train}: the training split has only one label ('x'); a classifier needs at least two"]),
    # 'y' only on texts that also carry 'x': the drop policy removes them as conflicting labels
    ("one-label-left-by-the-drop-policy",
     {"train.csv": rows(["x"] * 20) + "sentence number 0,y\nsentence number 1,y\n"},
     ("data.checks.policy=drop",), DATA_ERROR, ["{train}: the training split has only one label ('x')"]),
    ("a-label-per-row", {"train.csv": rows([f"id-{i}" for i in range(40)])}, (), DATA_ERROR,
     ["{train}: 40 labels for 32 training rows, fewer than 2 rows per label on average: is the label column "
      "('label') an id or free text? Set data.min_rows_per_label=0 to train anyway"]),
    ("lone-surrogate", {"train.jsonl": '{"text": "\\ud800", "label": "a"}\n'}, (), DATA_ERROR,
     ["{train}: line 1: field 'text' holds the lone surrogate '\\ud800'"]),
    ("nested-text", {"train.jsonl": '{"text": {"t": "a"}, "label": "a"}\n{"text": "b", "label": "b"}\n'},
     (), DATA_ERROR, ["{train}: column 'text' holds an object at row 0 (line 1)"]),
]


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)  # data check saves its report in the current folder
    return tmp_path


def write_files(folder: Path, files: dict[str, str | bytes | Callable[[Path], None]]) -> Path:
    """Write the case's files; returns the first (the train file)."""
    for name, content in files.items():
        path = folder / name
        if callable(content):
            content(path)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return folder / next(iter(files))


def assert_refused(result: tuple[int, str, str], code: int, fragments: list[str], **names: Path) -> str:
    got, out, err = result
    assert "Traceback" not in out + err
    assert got == code, f"exit {got}\nstdout:\n{out}\nstderr:\n{err}"
    assert err.startswith("error"), err
    for fragment in fragments:
        expected = fragment.format(**names)
        assert expected in err, f"{expected!r} not in stderr:\n{err}"
    return err


def run_args(model_dir: Path, output_dir: Path, *extra: str) -> list[str]:
    """--set items of a tiny run (2 steps of a tiny BERT on one thread), should the data pass."""
    items = [f"model.path={model_dir}", "model.pooling=mean", f"output_dir={output_dir}",
             "train.num_threads=1", "train.max_steps=2", "train.per_device_batch_size=8", *extra]
    return [arg for item in items for arg in ("--set", item)]


@pytest.mark.parametrize(("files", "extra", "code", "fragments"),
                         [pytest.param(*case[1:], id=case[0]) for case in CHECK_CASES])
def test_data_check_refuses(run_cli, workdir, files, extra, code, fragments):
    train = write_files(workdir, files)
    assert_refused(run_cli("data", "check", train, *extra), code, fragments, train=train, dir=workdir)


@pytest.mark.parametrize(("files", "extra", "code", "fragments"),
                         [pytest.param(*case[1:], id=case[0]) for case in RUN_CASES])
def test_run_refuses_before_training(run_cli, workdir, tiny_model_dir, files, extra, code, fragments):
    train = write_files(workdir, files)
    runs = workdir / "runs"
    result = run_cli("run", *run_args(tiny_model_dir, runs, f"data.train_file={train}", *extra))
    err = assert_refused(result, code, fragments, train=train, dir=workdir)
    assert len(err.strip().splitlines()) == 1
    assert not runs.exists() or not any(runs.iterdir()), "a refused run left a run directory"


@pytest.mark.parametrize(("limit", "fragment"), [
    (1, "the training split has only one label ("),
    (5, "6 labels for 5 training rows (after data.max_train_samples=5), fewer than 2 rows per label on "
        "average: raise data.max_train_samples, or set data.min_rows_per_label=0 to train anyway"),
])
def test_builtin_subset_too_small_to_train(run_cli, workdir, tiny_model_dir, shared_data, limit, fragment):
    args = run_args(tiny_model_dir, workdir / "runs", "data.dataset=trec", f"data.data_dir={shared_data}",
                    f"data.max_train_samples={limit}")
    result = run_cli("run", *args)
    train = shared_data / "trec" / "train.parquet"
    assert_refused(result, DATA_ERROR, [f"{train}: ", fragment, f"(after data.max_train_samples={limit})"])


def test_labels_txt_beside_the_train_file_is_announced(run_cli, workdir):
    train = write_files(workdir, {"train.csv": "text,label\ngood,pos\nbad,neg\n", "labels.txt": "pos\nneg\n"})
    code, out, err = run_cli("data", "check", train)
    assert code == 0, err
    assert f"labels: taken from {workdir / 'labels.txt'} (2 names)" in out


def test_many_labels_train_with_the_cap_overridden(run_cli, workdir, tiny_model_dir):
    """150 labels, one row each: the cap lifted, the run completes with a sparse confusion matrix, a
    confusion plot of the most confused classes, and a report."""
    train = write_files(workdir, {"train.csv": rows([f"label-{i:03d}" for i in range(150)])})
    args = run_args(tiny_model_dir, workdir / "runs", f"data.train_file={train}", "data.min_rows_per_label=0")
    code, out, err = run_cli("run", *args)
    assert code == 0, f"stdout:\n{out}\nstderr:\n{err}"
    (run_dir,) = (workdir / "runs").iterdir()
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    for split in ("validation", "test"):
        matrix = metrics[split]["confusion_matrix"]
        assert matrix["format"] == "sparse" and matrix["shape"] == [150, 150]
        assert sum(matrix["counts"]) == metrics[split]["num_examples"]
    assert (run_dir / "confusion_matrix.png").stat().st_size > 10_000
    report = (run_dir / "report.html").read_text(encoding="utf-8")
    assert "confusion matrix could not be drawn" not in report
    assert report.count("The 100 largest of ") >= 1  # the page lists 100 of the 150 classes per split
