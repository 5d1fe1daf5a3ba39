"""The user's own data files: CSV, TSV, JSONL and Parquet.

Every problem a file can have is reported as one ``DataError`` that names the file, and the line,
row or column at fault. Rows with a missing or unknown label are *kept* (label -1/-2) so that the
data checks report all of them at once; see ``texttune.data.checks``.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pandas as pd

from texttune.config import DataConfig
from texttune.data.dataset import MISSING_LABEL, UNKNOWN_LABEL, TextDataset
from texttune.errors import DataError

FORMATS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl",
           ".parquet": "parquet", ".pq": "parquet"}


def detect_format(path: Path, file_format: str = "auto") -> str:
    if file_format != "auto":
        return file_format
    suffixes = [s.lower() for s in path.suffixes]
    for suffix in reversed(suffixes):
        if suffix in FORMATS:
            return FORMATS[suffix]
    known = ", ".join(sorted(FORMATS))
    raise DataError(
        f"{path}: cannot tell the format from the extension '{path.suffix}' (known: {known}); "
        "set data.file_format"
    )


def read_table(path: Path, fmt: str, delimiter: str | None = None) -> pd.DataFrame:
    """Read a whole file as a DataFrame, with string columns kept as text (no NA guessing)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if path.is_dir():
        raise DataError(f"{path}: is a folder, not a data file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")
    if fmt == "parquet":
        df = _read_parquet(path)
    else:
        text = _decode(path)
        if not text.strip():
            raise DataError(f"{path}: file is empty (only whitespace)")
        if fmt == "jsonl":
            df = _read_jsonl(path, text)
        else:
            sep = delimiter or ("\t" if fmt == "tsv" else ",")
            df = _read_delimited(path, text, sep)
    if len(df) == 0:
        raise DataError(f"{path}: has a header but no data rows")
    return df


def _decode(path: Path) -> str:
    raw = path.read_bytes()
    try:
        # utf-8-sig: a UTF-8 byte-order mark (written by Excel and Notepad) is accepted and removed.
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        # The utf-8-sig decoder counts positions after the BOM it removed.
        start = err.start + (3 if raw.startswith(b"\xef\xbb\xbf") else 0)
        line = raw[:start].count(b"\n") + 1
        bad = raw[start : start + 1]
        raise DataError(
            f"{path}: not valid UTF-8: byte {bad!r} at line {line} (byte offset {start}); "
            "re-save the file as UTF-8"
        ) from None


def _read_delimited(path: Path, text: str, sep: str) -> pd.DataFrame:
    try:
        # Tab-separated files (GLUE, TREC dumps) quote nothing: a '"' is part of the text there.
        quoting = csv.QUOTE_NONE if sep == "\t" else csv.QUOTE_MINIMAL
        df = pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False, quoting=quoting)
    except pd.errors.ParserError as err:
        # pandas says e.g. "Error tokenizing data. C error: Expected 2 fields in line 5, saw 3"
        detail = str(err).split("error:")[-1].strip()
        raise DataError(f"{path}: malformed {_sep_name(sep)}-separated file: {detail}") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: file is empty") from None
    if len(df.columns) == 1:
        header = str(df.columns[0])
        for other in (",", "\t", ";", "|"):
            if other != sep and other in header:
                raise DataError(
                    f"{path}: wrong delimiter: the header {header!r} is one column when split on "
                    f"{_sep_name(sep)} but contains {_sep_name(other)}; set data.delimiter="
                    f"{other!r} (or data.file_format)"
                )
    return df


def _sep_name(sep: str) -> str:
    return {",": "comma", "\t": "tab", ";": "semicolon", "|": "pipe"}.get(sep, repr(sep))


def _read_jsonl(path: Path, text: str) -> pd.DataFrame:
    records: list[dict[str, Any]] = []
    # split("\n"), not splitlines(): JSON strings may hold U+2028/U+2029/U+0085 raw, which
    # splitlines() would treat as line breaks.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}: line {number} is not valid JSON: {err.msg} (column {err.colno})") from None
        if not isinstance(record, dict):
            raise DataError(
                f"{path}: line {number} is a JSON {type(record).__name__}, expected an object "
                '({"text": ..., "label": ...})'
            )
        records.append(record)
    return pd.DataFrame.from_records(records)


def _read_parquet(path: Path) -> pd.DataFrame:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pandas()
    except (pa.ArrowInvalid, OSError) as err:
        raise DataError(f"{path}: not a readable Parquet file ({err})") from None


def select_columns(
    df: pd.DataFrame, path: Path | str, text: str, text_pair: str | None, label: str | None
) -> pd.DataFrame:
    """Keep the text/pair/label columns under their canonical names; name what is missing."""
    wanted = {"text": text, "text_pair": text_pair, "label_raw": label}
    missing = [(role, col) for role, col in wanted.items() if col is not None and col not in df.columns]
    if missing:
        role, col = missing[0]
        key = {"text": "text_column", "text_pair": "text_pair_column", "label_raw": "label_column"}[role]
        have = ", ".join(map(str, df.columns))
        raise DataError(f"{path}: no column '{col}' (data.{key}); the columns are: {have}")
    out = pd.DataFrame(index=df.index)
    for role, col in wanted.items():
        if col is not None:
            out[role] = df[col]
    for role in ("text", "text_pair"):
        if role in out:
            out[role] = _as_text(out[role], path, wanted[role])
    return out


def _as_text(series: pd.Series, path: Path | str, column: str | None) -> pd.Series:
    """Texts as str; missing values become "" (the checks report them as empty texts)."""
    def convert(value: Any) -> str:
        if value is None or (isinstance(value, float) and pd.isna(value)):
            return ""
        if isinstance(value, bytes):
            return value.decode("utf-8", errors="replace")
        return str(value)

    return series.map(convert).astype(object)


# --------------------------------------------------------------------------- labels


def is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return value.strip() == ""
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _as_int(value: Any) -> int | None:
    """An integer label given as int, integral float or digit string; else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    try:  # numpy integers
        import numpy as np

        if isinstance(value, np.integer):
            return int(value)
    except ImportError:  # pragma: no cover
        pass
    return None


def infer_label_names(values: pd.Series) -> list[str]:
    """Label names from the training labels: sorted integers, else sorted strings."""
    present = [v for v in values if not is_missing(v)]
    ints = [_as_int(v) for v in present]
    if present and all(i is not None for i in ints):
        return [str(i) for i in sorted(set(ints))]  # type: ignore[type-var]
    return sorted({str(v).strip() for v in present})


def encode_labels(values: pd.Series, label_names: list[str]) -> pd.Series:
    """Map raw labels to indices into ``label_names``.

    A string equal to a name maps to that name. An integer (or digit string) that is not itself a
    name is an index (0-based), as in the built-in Parquet files. Missing → -1, anything else → -2.
    """
    index = {name: i for i, name in enumerate(label_names)}

    def encode(value: Any) -> int:
        if is_missing(value):
            return MISSING_LABEL
        number = _as_int(value)
        # An integral float (1.0: integer labels with a null read as floats) names "1", not "1.0".
        key = str(number) if isinstance(value, float) and number is not None else str(value).strip()
        if key in index:
            return index[key]
        if number is not None and 0 <= number < len(label_names):
            return number
        return UNKNOWN_LABEL

    return values.map(encode).astype("int64")


def read_labels_file(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"{path}: not valid UTF-8") from None
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise DataError(f"{path}: no label names in the file")
    if len(set(names)) != len(names):
        raise DataError(f"{path}: a label name appears twice")
    return names


# --------------------------------------------------------------------------- whole dataset


def load_files(cfg: DataConfig) -> TextDataset:
    """Read ``train_file`` and the optional validation/test files into a TextDataset."""
    assert cfg.train_file is not None
    paths = {"train": cfg.train_file, "validation": cfg.validation_file, "test": cfg.test_file}
    frames: dict[str, pd.DataFrame] = {}
    files: dict[str, str] = {}
    for split, path in paths.items():
        if path is None:
            continue
        path = Path(path)
        fmt = detect_format(path, cfg.file_format)
        raw = read_table(path, fmt, cfg.delimiter)
        frames[split] = select_columns(raw, path, cfg.text_column, cfg.text_pair_column, cfg.label_column)
        files[split] = str(path)
    label_names, label_source = _label_names(cfg, frames["train"])
    for split, frame in frames.items():
        frame["label"] = encode_labels(frame["label_raw"], label_names)
    name = Path(cfg.train_file).stem
    task = "pair_classification" if cfg.text_pair_column else "classification"
    return TextDataset(
        name=name,
        splits=frames,
        label_names=label_names,
        task=task,
        provenance={split: "your file" for split in frames},
        files=files,
        notes=[f"label names from {label_source}"],
    )


def _label_names(cfg: DataConfig, train: pd.DataFrame) -> tuple[list[str], str]:
    if cfg.label_names:
        if len(set(cfg.label_names)) != len(cfg.label_names):
            raise DataError("data.label_names: a label name appears twice")
        return list(cfg.label_names), "data.label_names"
    beside = Path(cfg.train_file).parent / "labels.txt"  # type: ignore[arg-type]
    if beside.is_file():
        return read_labels_file(beside), str(beside)
    names = infer_label_names(train["label_raw"])
    if not names:
        raise DataError(f"{cfg.train_file}: column '{cfg.label_column}' has no labels (all empty)")
    return names, f"the distinct values of '{cfg.label_column}' in {cfg.train_file}"
