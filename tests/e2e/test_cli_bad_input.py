"""Bad input through the real CLI: a non-zero exit code, one message naming the file and the
problem on stderr, and never a traceback."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DATA_ERROR = 2  # TexttuneError / DataError / ConfigError
CHECK_ERROR = 3  # DataCheckError


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """Run in tmp_path: a command that wrote into the current folder unasked would show there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def assert_error(result: tuple[int, str, str], code: int, *parts: str) -> str:
    """The command failed with ``code``, stderr holds every part, and nothing shows a traceback."""
    got, out, err = result
    assert "Traceback" not in out + err
    assert got == code, f"exit {got}\nstdout:\n{out}\nstderr:\n{err}"
    assert err.startswith("error"), err
    for part in parts:
        assert part in err, f"{part!r} not in stderr:\n{err}"
    return err


def assert_ok(result: tuple[int, str, str]) -> str:
    code, out, err = result
    assert "Traceback" not in out + err
    assert code == 0, f"exit {code}\nstdout:\n{out}\nstderr:\n{err}"
    return out


# --------------------------------------------------------------------------- texttune data check FILE


def test_empty_file(run_cli, workdir):
    path = write(workdir / "train.csv", "")
    assert_error(run_cli("data", "check", path), DATA_ERROR, f"{path}: file is empty")


def test_header_only(run_cli, workdir):
    path = write(workdir / "train.csv", "text,label\n")
    assert_error(run_cli("data", "check", path), DATA_ERROR, f"{path}: has a header but no data rows")


def test_missing_text_column(run_cli, workdir):
    path = write(workdir / "train.csv", "sentence,label\nhello,a\n")
    assert_error(
        run_cli("data", "check", path), DATA_ERROR,
        f"{path}: no column 'text' (data.text_column); the columns are: sentence, label",
    )


def test_missing_label_column(run_cli, workdir):
    path = write(workdir / "train.csv", "text,category\nhello,a\n")
    assert_error(
        run_cli("data", "check", path), DATA_ERROR,
        f"{path}: no column 'label' (data.label_column); the columns are: text, category",
    )


def test_renamed_columns_through_set(run_cli, workdir):
    path = write(workdir / "train.csv", "sentence,category\nhello,a\nbye,b\n")
    assert_ok(run_cli("data", "check", path, "--set", "data.text_column=sentence",
                      "--set", "data.label_column=category"))


def test_missing_labels_are_reported_by_the_checks(run_cli, workdir):
    path = write(workdir / "train.csv", "text,label\nhello,a\nbye,\nfoo,b\nbar,\n")
    err = assert_error(
        run_cli("data", "check", path, "--output", "report.json"), CHECK_ERROR,
        "missing_label", f"{path}: column 'label': 2 rows", "rows 1, 3", "data.checks.policy=drop",
        "Row numbers are 0-based data rows",
    )
    assert "(policy warn)" in err
    # The report is saved before the policy stops the command.
    report = json.loads((workdir / "report.json").read_text())
    assert [f["check"] for f in report["findings"] if f["severity"] == "error"] == ["missing_label"]


def test_missing_labels_with_policy_drop_exit_0(run_cli, workdir):
    path = write(workdir / "train.csv", "text,label\nhello,a\nbye,\nfoo,b\nbar,\n")
    out = assert_ok(run_cli("data", "check", path, "--policy", "drop", "-o", workdir / "report.json"))
    assert re.search(r'"missing_label":\s+2\b', out)
    assert json.loads((workdir / "report.json").read_text())["policy"] == "drop"


def test_unknown_label_against_labels_txt(run_cli, workdir):
    path = write(workdir / "train.csv", "text,label\nhello,pos\nbye,neutral\nfoo,neg\n")
    write(workdir / "labels.txt", "pos\nneg\n")
    err = assert_error(
        run_cli("data", "check", path), CHECK_ERROR,
        "unknown_label", f"{path}: column 'label'", "'neutral'", "[pos, neg]",
    )
    assert re.search(r"rows? 1\b", err)


def test_validation_label_the_train_file_lacks(run_cli, workdir):
    train = write(workdir / "train.csv", "text,label\na,x\nb,y\n")
    dev = write(workdir / "dev.csv", "text,label\nc,x\nd,z\n")
    assert_error(
        run_cli("data", "check", train, "--set", f"data.validation_file={dev}"), CHECK_ERROR,
        f"unknown_label: {dev}: column 'label'", "'z'",
    )


def test_non_utf8_bytes_give_the_line(run_cli, workdir):
    path = workdir / "train.csv"
    path.write_bytes(b"text,label\nhello,a\ncaf\xe9,b\n")
    assert_error(run_cli("data", "check", path), DATA_ERROR,
                 f"{path}: not valid UTF-8: byte b'\\xe9' at line 3", "UTF-8")


def test_utf8_bom_is_accepted(run_cli, workdir):
    path = workdir / "train.csv"
    path.write_bytes("\ufefftext,label\ncafé,a\nbye,b\n".encode())
    assert_ok(run_cli("data", "check", path, "-o", "report.json"))
    report = json.loads((workdir / "report.json").read_text())
    assert report["rows"] == {"train": 2}
    assert not [f for f in report["findings"] if f["severity"] != "info"]


def test_wrong_delimiter_then_data_delimiter(run_cli, workdir):
    path = write(workdir / "train.csv", "text;label\nhello, world;a\nbye;b\n")
    assert_error(
        run_cli("data", "check", path), DATA_ERROR,
        f"{path}: wrong delimiter", "semicolon", "data.delimiter=';'",
    )
    assert_ok(run_cli("data", "check", path, "--set", "data.delimiter=;"))
    assert_ok(run_cli("data", "check", path, "--set", "data.delimiter=';'"))


def test_malformed_jsonl_line(run_cli, workdir):
    path = write(workdir / "train.jsonl", '{"text": "a", "label": "x"}\n{"text": "b", "label": "y"\n')
    assert_error(run_cli("data", "check", path), DATA_ERROR, f"{path}: line 2 is not valid JSON")


def test_ragged_csv(run_cli, workdir):
    path = write(workdir / "train.csv", "text,label\nok,a\nnot, ok,b\n")
    assert_error(run_cli("data", "check", path), DATA_ERROR,
                 f"{path}: malformed comma-separated file", "line 3")


def test_parquet_that_is_not_parquet(run_cli, workdir):
    path = write(workdir / "train.parquet", "text,label\na,x\n")
    assert_error(run_cli("data", "check", path), DATA_ERROR, f"{path}: not a readable Parquet file")


def test_unknown_extension(run_cli, workdir):
    path = write(workdir / "train.txt", "text,label\na,x\n")
    assert_error(run_cli("data", "check", path), DATA_ERROR,
                 f"{path}: cannot tell the format", "data.file_format")


def test_unknown_builtin_dataset(run_cli, workdir):
    err = assert_error(run_cli("data", "check", "treq"), DATA_ERROR,
                       "unknown dataset 'treq' (did you mean 'trec'?)", "known: ")
    for name in ("ag_news", "imdb", "mrpc", "sst2", "trec"):
        assert name in err


@pytest.mark.parametrize("target", ["missing.csv", "sub/missing.jsonl"])
def test_data_file_not_found(run_cli, workdir, target):
    assert_error(run_cli("data", "check", target), DATA_ERROR, f"{target}: file not found")


def test_data_file_not_found_in_inspect(run_cli, workdir):
    assert_error(run_cli("data", "inspect", "nope.csv"), DATA_ERROR, "nope.csv: file not found")


def test_missing_validation_file(run_cli, workdir):
    train = write(workdir / "train.csv", "text,label\na,x\n")
    assert_error(run_cli("data", "check", train, "--set", "data.validation_file=gone.csv"),
                 DATA_ERROR, "gone.csv: file not found")


def test_clean_data_does_not_mention_drops(run_cli, workdir):
    path = write(workdir / "train.csv", "text,label\nhello,a\nbye,b\n")
    out = assert_ok(run_cli("data", "check", path))
    assert "would remove" not in out


# --------------------------------------------------------------------------- texttune config


@pytest.mark.parametrize("command", ["validate", "show"])
def test_config_unknown_key(run_cli, workdir, command):
    path = write(workdir / "exp.yaml", "data:\n  max_train_sample: 500\n")
    assert_error(
        run_cli("config", command, path), DATA_ERROR,
        f"data.max_train_sample: unknown field (did you mean 'max_train_samples'?) in {path}",
    )


@pytest.mark.parametrize("command", ["validate", "show"])
def test_config_wrong_type(run_cli, workdir, command):
    path = write(workdir / "exp.yaml", "data:\n  max_train_samples: lots\n")
    err = assert_error(
        run_cli("config", command, path), DATA_ERROR, "data.max_train_samples: ", f" in {path}"
    )
    assert "'lots'" in err


@pytest.mark.parametrize("command", ["validate", "show"])
def test_config_broken_yaml(run_cli, workdir, command):
    path = write(workdir / "exp.yaml", "data:\n  dataset: trec\n   split_seed: 3\n")
    assert_error(run_cli("config", command, path), DATA_ERROR, f"{path}: line 3, column 14: invalid YAML")


@pytest.mark.parametrize("command", ["validate", "show"])
def test_config_not_found(run_cli, workdir, command):
    assert_error(run_cli("config", command, "nope.yaml"), DATA_ERROR, "nope.yaml: config file not found")


def test_config_validate_reports_every_bad_file(run_cli, workdir):
    good = write(workdir / "good.yaml", "data:\n  max_train_samples: 500\n")
    bad1 = write(workdir / "bad1.yaml", "data:\n  max_train_sample: 500\n")
    bad2 = write(workdir / "bad2.yaml", "seed: [1, 2\n")
    code, out, err = run_cli("config", "validate", good, bad1, bad2)
    assert code == DATA_ERROR
    assert "Traceback" not in out + err
    assert f"ok    {good}" in out
    assert f"data.max_train_sample: unknown field (did you mean 'max_train_samples'?) in {bad1}" in err
    assert f"{bad2}: line 2, column 1: invalid YAML" in err
    assert "error: 2 of 3 config files are invalid" in err


def test_config_show_set_wrong_type_names_the_override(run_cli, workdir):
    assert_error(run_cli("config", "show", "--set", "data.max_train_samples=lots"), DATA_ERROR,
                 "data.max_train_samples: ", "in --set data.max_train_samples=lots")


def test_config_show_set_unknown_key_suggests(run_cli, workdir):
    assert_error(run_cli("config", "show", "--set", "data.chekcs.policy=drop"), DATA_ERROR,
                 "data.chekcs: unknown field (did you mean 'checks'?) in --set data.chekcs.policy=drop")


def test_data_check_with_bad_policy_names_the_key(run_cli, workdir):
    path = write(workdir / "train.csv", "text,label\na,x\n")
    assert_error(run_cli("data", "check", path, "--policy", "explode"), DATA_ERROR,
                 "data.checks.policy: ", "'explode'")


# --------------------------------------------------------------------------- the console script


def test_console_script_bad_input(tmp_path):
    path = write(tmp_path / "train.csv", "text;label\nhello;a\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "COLUMNS": "200"}
    proc = subprocess.run(
        [sys.executable, "-m", "texttune.cli", "data", "check", str(path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert "Traceback" not in proc.stdout + proc.stderr
    assert proc.returncode == DATA_ERROR, proc.stderr
    assert proc.stderr.startswith(f"error: {path}: wrong delimiter"), proc.stderr
    assert "data.delimiter=';'" in proc.stderr


# --------------------------------------------------------------------------- the corpus: one row per bad input
#
# Each case: the files it writes into the working folder (name -> text or bytes), the command, the exit
# code and a regular expression the one-message stderr must match ({dir} is the working folder). A
# case runs through the in-process CLI with the same checks as above: no traceback, stderr starts
# with "error", and it finishes within the time bound below.

ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8)
)
CASE_SECONDS = 30  # every bad input is refused well within this (the alias bomb took 245 s before)
CORPUS = {
    "yaml-alias-bomb": (
        {"bomb.yaml": ALIAS_BOMB}, ("config", "show", "bomb.yaml"), DATA_ERROR,
        r"^error: bomb\.yaml: line \d+: YAML expands to more than 100,000 values"),
    "yaml-alias-bomb-in-set": (
        {}, ("config", "show", "--set", "name=" + ALIAS_BOMB), DATA_ERROR,
        r"^error: --set name=a: &a .*YAML expands to more than 100,000 values"),
    "yaml-deeply-nested": (
        {"deep.yaml": "a: " + "[" * 5000 + "]" * 5000 + "\n"}, ("config", "validate", "deep.yaml"), DATA_ERROR,
        r"deep\.yaml: YAML nested more than 50 levels deep"),
    "yaml-nested-past-the-bound": (
        {"deep.yaml": "a: " + "[" * 60 + "]" * 60 + "\n"}, ("config", "show", "deep.yaml"), DATA_ERROR,
        r"^error: deep\.yaml: line 1: YAML nested more than 50 levels deep"),
    "yaml-duplicate-key": (
        {"dup.yaml": "train:\n  lr: 0.1\n  lr: 0.2\n"}, ("config", "show", "dup.yaml"), DATA_ERROR,
        r"^error: dup\.yaml: line 3: key 'lr' appears twice in one mapping \(first on line 2\)"),
    "yaml-oversized": (
        {"big.yaml": "name: x\n" + "#" * 2_000_000 + "\n"}, ("config", "show", "big.yaml"), DATA_ERROR,
        r"^error: big\.yaml: 2,000,009 bytes; a config file holds at most 1,048,576"),
    "yaml-not-utf8": (
        {"latin.yaml": b"name: caf\xe9\n"}, ("config", "show", "latin.yaml"), DATA_ERROR,
        r"^error: latin\.yaml: not UTF-8 text \(byte 9\)"),
    "set-long-wrong-value": (
        {}, ("config", "show", "--set", "train.lr=" + "x" * 100_000), DATA_ERROR,
        r"^error: train\.lr: Input should be a valid number.*\(100,002 characters\)"),
    "set-both-sources-on-the-command-line": (
        {}, ("config", "show", "--set", "data.train_file=a.csv", "--set", "data.dataset=imdb"), DATA_ERROR,
        r"^error: data: set data\.dataset or data\.train_file, not both"),
    "spec-duplicate-key": (
        {"spec.yaml": "name: x\nname: y\n"}, ("compare", "spec.yaml"), DATA_ERROR,
        r"^error: spec\.yaml: line 2: key 'name' appears twice in one mapping"),
    "spec-alias-bomb": (
        {"spec.yaml": ALIAS_BOMB}, ("compare", "spec.yaml"), DATA_ERROR,
        r"^error: spec\.yaml: line \d+: YAML expands to more than 100,000 values"),
    "output-under-a-file": (
        {"train.csv": "text,label\na b,x\nc d,y\n", "file": "not a folder"},
        ("data", "check", "train.csv", "--output", "file/report.json"), 1,
        r"^error: file: a file is in the way of a folder"),
    "usage-unknown-option": (
        {}, ("run", "cfg.yaml", "--output-dir", "x"), 2, r"No such option:? '?--output-dir"),
}


@pytest.mark.parametrize("case", list(CORPUS))
def test_bad_input_corpus(case, run_cli, workdir):
    import time

    files, args, code, pattern = CORPUS[case]
    for name, content in files.items():
        (workdir / name).write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    start = time.perf_counter()
    got, out, err = run_cli(*args)
    assert time.perf_counter() - start < CASE_SECONDS
    assert "Traceback" not in out + err
    assert got == code, f"exit {got}\nstdout:\n{out[:2000]}\nstderr:\n{err[:2000]}"
    assert len(err) < 2_000, err[:2000]  # one message, not a dump of the input
    if code != 2 or not pattern.startswith("No such"):
        assert err.startswith("error"), err
    assert re.search(pattern, err, flags=re.S), err


def test_data_check_writes_nothing_without_output(run_cli, workdir):
    write(workdir / "train.csv", "text,label\na b,x\nc d,y\na b,x\n")
    out = assert_ok(run_cli("data", "check", "train.csv"))
    assert sorted(p.name for p in workdir.iterdir()) == ["train.csv"]  # no data-check-*.json appeared
    assert "saved" not in out
    # The listed rows are 0-based data rows, and the output says so: row 2 is the file's 4th line.
    assert "rows: 2" in out and "Row numbers are 0-based data rows" in " ".join(out.split())


def test_data_check_output_never_replaces_an_existing_file(run_cli, workdir):
    write(workdir / "train.csv", "text,label\na b,x\nc d,y\n")
    mine = write(workdir / "report.json", "my own notes")
    out = assert_ok(run_cli("data", "check", "train.csv", "--output", "report.json"))
    assert mine.read_text() == "my own notes"
    assert json.loads((workdir / "report-1.json").read_text())["dataset"]
    assert "report saved to report-1.json (report.json exists and was kept)" in out
