"""The user's own data files: CSV, TSV, JSONL and Parquet.

Every problem a file can have is reported as one ``DataError`` that names the file, and the line,
row or column at fault. Rows with a missing or unknown label are *kept* (label -1/-2) so that the
data checks report all of them at once; see ``texttune.data.checks``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from texttune.config import DataConfig
from texttune.data.dataset import MISSING_LABEL, UNKNOWN_LABEL, TextDataset
from texttune.errors import DataError

log = logging.getLogger("texttune")

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
    _refuse_duplicate_columns(path, list(df.columns))
    return df


def _refuse_duplicate_columns(path: Path, names: list[Any]) -> None:
    """Two columns of one name: whichever a reader keeps, the other's data would be lost unseen."""
    seen: set[Any] = set()
    for name in names:
        if name in seen:
            raise DataError(f"{path}: the column name {_shown(name)} appears more than once; rename one")
        seen.add(name)


def _column_name(name: Any) -> str:
    """A column name as a message shows it: quoted when it holds a line break or another control
    character, so the message stays one line."""
    text = str(name)
    return text if text.isprintable() and len(text) <= 40 else _shown(name)


def _shown(value: Any, limit: int = 40) -> str:
    """``repr`` of a value from a file, cut short: messages stay one readable line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


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
    # Tab-separated files (GLUE, TREC dumps) quote nothing: a '"' is part of the text there.
    quoting = csv.QUOTE_NONE if sep == "\t" else csv.QUOTE_MINIMAL
    try:
        # The header is read as a data row (header=None), for two silent pandas behaviours: a repeated
        # name is renamed ('text' → 'text.1'), and a first data row with one field more than the header
        # turns the first column into the index, shifting every column by one. As a data row, the
        # header fixes the field count, so any longer row is a ParserError naming its line.
        table = pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False, quoting=quoting,
                            header=None)
    except pd.errors.ParserError as err:
        _refuse_wrong_delimiter(path, _first_row(text, sep, quoting), sep)
        # pandas says e.g. "Error tokenizing data. C error: Expected 2 fields in line 5, saw 3"
        detail = str(err).split("error:")[-1].strip()
        raise DataError(f"{path}: malformed {_sep_name(sep)}-separated file: {detail}") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: file is empty") from None
    df = _with_header(table)
    _refuse_duplicate_columns(path, list(df.columns))
    _refuse_wrong_delimiter(path, list(df.columns), sep)
    return df


def _first_row(text: str, sep: str, quoting: int) -> list[str]:
    try:
        return pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False, quoting=quoting,
                           header=None, nrows=1).iloc[0].tolist()
    except (pd.errors.ParserError, pd.errors.EmptyDataError):
        return []


def _refuse_wrong_delimiter(path: Path, header: list[str], sep: str) -> None:
    """A header that is one column but holds another delimiter: the file uses that one."""
    if len(header) != 1:
        return
    name = str(header[0])
    for other in (",", "\t", ";", "|"):
        if other != sep and other in name:
            raise DataError(
                f"{path}: wrong delimiter: the header {_shown(name, 80)} is one column when split on "
                f"{_sep_name(sep)} but contains {_sep_name(other)}; set data.delimiter="
                f"{other!r} (or data.file_format)"
            )


def _with_header(table: pd.DataFrame) -> pd.DataFrame:
    """The first row as column names (an empty one named as pandas would: 'Unnamed: 2'), the rest as
    data with the 0-based data row as index."""
    names = [name if name != "" else f"Unnamed: {i}" for i, name in enumerate(table.iloc[0])]
    df = table.iloc[1:].reset_index(drop=True)
    df.columns = names
    return df


def _sep_name(sep: str) -> str:
    return {",": "comma", "\t": "tab", ";": "semicolon", "|": "pipe"}.get(sep, repr(sep))


def _read_jsonl(path: Path, text: str) -> pd.DataFrame:
    records: list[dict[str, Any]] = []
    lines: list[int] = []
    # split("\n"), not splitlines(): JSON strings may hold U+2028/U+2029/U+0085 raw, which
    # splitlines() would treat as line breaks.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        record = _parse_json_line(path, number, line)
        if not isinstance(record, dict):
            raise DataError(
                f"{path}: line {number} is a JSON {type(record).__name__}, expected an object "
                '({"text": ..., "label": ...})'
            )
        if record.duplicate is not None:
            raise DataError(f"{path}: line {number}: the key {_shown(record.duplicate)} appears twice; "
                            "JSON readers would silently keep only one of its values")
        # The text decoded as strict UTF-8, so a surrogate can only come from an escape \uD800-\uDFFF.
        if "\\ud" in line or "\\uD" in line:
            _refuse_surrogates(path, number, record)
        records.append(record)
        lines.append(number)
    df = pd.DataFrame.from_records(records)
    df.attrs["lines"] = lines  # row -> line, so later messages can name the line a user sees
    return df


class _JSONObject(dict):
    """A parsed JSON object that remembers the first key it saw twice (json keeps the last value)."""

    duplicate: str | None = None


def _json_object(pairs: list[tuple[str, Any]]) -> _JSONObject:
    obj = _JSONObject(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                obj.duplicate = key
                break
            seen.add(key)
    return obj


def _parse_json_line(path: Path, number: int, line: str) -> Any:
    try:
        return json.loads(line, object_pairs_hook=_json_object)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: line {number} is not valid JSON: {err.msg} (column {err.colno})") from None
    except ValueError as err:  # e.g. an integer of more than 4,300 digits (Python's conversion limit)
        raise DataError(f"{path}: line {number}: unreadable JSON value: {err}") from None
    except RecursionError:
        raise DataError(f"{path}: line {number}: JSON nested too deeply to read") from None


_SURROGATE = re.compile("[\ud800-\udfff]")


def _refuse_surrogates(path: Path, number: int, record: dict[str, Any]) -> None:
    """Refuse strings holding a lone surrogate (an escape like \\ud800 without its pair).

    Refused rather than replaced by U+FFFD: such a string is not Unicode at all (it cannot be written as
    UTF-8, so the tokenizer, pyarrow and every JSON record would fail on it later), and it almost always
    means the file's writer cut a UTF-16 pair (an emoji) in half -- a bug the user should see, as with
    invalid UTF-8 bytes (``_decode``), not a silent change to the texts a model trains on.
    """
    for key, value in record.items():
        char = _surrogate_in(key)
        if char is not None:
            raise DataError(f"{path}: line {number}: a key holds the lone surrogate {char!r} (invalid "
                            "Unicode: half of a UTF-16 pair); fix the program that wrote the file")
        char = _surrogate_in(value)
        if char is not None:
            raise DataError(f"{path}: line {number}: field {_shown(key)} holds the lone surrogate {char!r} "
                            "(invalid Unicode: half of a UTF-16 pair, e.g. a cut emoji); fix the program "
                            "that wrote the file")


def _surrogate_in(value: Any) -> str | None:
    """The first lone surrogate in a JSON value (nested lists and objects too), else None."""
    stack = [value]  # a loop, not recursion: nesting as deep as json accepts must not overflow
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            found = _SURROGATE.search(item)
            if found:
                return found.group()
        elif isinstance(item, dict):
            stack.extend(reversed([*item.keys(), *item.values()]))
        elif isinstance(item, list):
            stack.extend(reversed(item))
    return None


def _read_parquet(path: Path) -> pd.DataFrame:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        # Names first: pyarrow refuses to read a table whose names repeat, in a many-line message.
        _refuse_duplicate_columns(path, pq.read_schema(path).names)
        return pq.read_table(path).to_pandas()
    except (pa.ArrowException, OSError) as err:
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(f"{path}: not a readable Parquet file ({detail})") from None


# Where a user names each column: the config keys of a data section (a command taking a file of texts
# names its own flags instead: predict's --text-column).
COLUMN_KEYS = {"text": "data.text_column", "text_pair": "data.text_pair_column", "label_raw": "data.label_column"}


def select_columns(
    df: pd.DataFrame, path: Path | str, text: str, text_pair: str | None, label: str | None,
    keys: dict[str, str] | None = None, label_sets: bool = False,
) -> pd.DataFrame:
    """Keep the text/pair/label columns under their canonical names; name what is missing, and the
    setting that chose it (``keys``, by role; default ``COLUMN_KEYS``)."""
    wanted = {"text": text, "text_pair": text_pair, "label_raw": label}
    missing = [(role, col) for role, col in wanted.items() if col is not None and col not in df.columns]
    if missing:
        role, col = missing[0]
        key = {**COLUMN_KEYS, **(keys or {})}[role]
        have = ", ".join(map(_column_name, df.columns[:MAX_COLUMNS_SHOWN]))
        more = f", … ({len(df.columns)} columns)" if len(df.columns) > MAX_COLUMNS_SHOWN else ""
        raise DataError(f"{path}: no column '{col}' ({key}); the columns are: {have}{more}")
    out = pd.DataFrame(index=df.index)
    for role, col in wanted.items():
        if col is not None:
            if not (label_sets and role == "label_raw"):  # multi-label: lists are the point (label_sets_of)
                _refuse_nested(df, path, col, "text" if role != "label_raw" else "label")
            out[role] = df[col]
    for role in ("text", "text_pair"):
        if role in out:
            out[role] = _as_text(out[role], path, wanted[role])
    return out


MAX_COLUMNS_SHOWN = 20


def _refuse_nested(df: pd.DataFrame, path: Path | str, column: str, role: str) -> None:
    """A JSON object/list or a Parquet list/struct where one text or label belongs: str() would turn it
    into "{'a': 1}" and train on that, so it is refused at its first row instead."""
    values = df[column]
    if values.dtype != object:  # string and number columns cannot hold containers
        return
    containers = (dict, list, tuple, set, np.ndarray)
    nested = np.fromiter((isinstance(v, containers) for v in values), bool, len(values))
    if not nested.any():
        return
    first = int(nested.argmax())
    kind = "an object" if isinstance(values.iloc[first], dict) else "a list"
    lines = df.attrs.get("lines")
    where = f"row {values.index[first]}"
    if lines and len(lines) == len(df):  # JSONL: the line a user sees, blank lines counted
        where += f" (line {lines[first]})"
    raise DataError(
        f"{path}: column '{column}' holds {kind} at {where}, where one {role} belongs; "
        "flatten the field or choose another column"
    )


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
        try:
            return int(value.strip())
        except ValueError:  # "--1", "²" (isdigit but not a number), more than 4,300 digits
            return None
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
    """Label names, one per line (blank lines skipped), in index order."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"{path}: not valid UTF-8") from None
    except OSError as err:
        raise DataError(f"{path}: cannot read the label names ({err.strerror or err})") from None
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise DataError(f"{path}: no label names in the file")
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise DataError(f"{path}: a label name appears twice: {_shown(name)}")
        seen.add(name)
    return names


# --------------------------------------------------------------------------- label sets (multi-label)


def parse_label_sets(values: pd.Series, path: Path | str, column: str, delimiter: str | None,
                     lines: list[int] | None = None) -> pd.Series:
    """Each cell of a multi-label column as a tuple of label names (the order of first appearance, no
    repeats). A cell is a list (JSONL, Parquet) or a string: with ``delimiter`` split on it, else a JSON
    list (``["a", "b"]``, as a CSV writes one). Empty or null means no label. Anything else is refused
    at its row: a label set read wrongly would train on the wrong targets without a sign."""
    def where(position: int) -> str:
        line = f" (line {lines[position]})" if lines and len(lines) == len(values) else ""
        return f"{path}: row {values.index[position]}{line}, column '{column}'"

    def parse(position: int, value: Any) -> tuple[str, ...]:
        if isinstance(value, np.ndarray):  # a Parquet list column
            value = value.tolist()
        if isinstance(value, str) and not is_missing(value):
            if delimiter is not None:
                value = value.split(delimiter)
            else:
                try:
                    value = json.loads(value)
                except ValueError:
                    raise DataError(f"{where(position)}: {_shown(value)} is not a JSON list of labels "
                                    "(like [\"a\", \"b\"]); for 'a|b' set data.label_delimiter") from None
        elif is_missing(value):
            return ()
        if not isinstance(value, (list, tuple)):
            raise DataError(f"{where(position)}: {_shown(value)} is not a list of labels")
        names: list[str] = []
        for item in value:
            if isinstance(item, bool) or not isinstance(item, (str, int, np.integer)):
                raise DataError(f"{where(position)}: the label {_shown(item)} in {_shown(value, 60)} is not a "
                                "string or an integer")
            name = str(item).strip()
            if name and name not in names:  # 'a||b' and ' a' are read as {a, b}, {a}
                names.append(name)
        return tuple(names)

    return pd.Series([parse(i, v) for i, v in enumerate(values)], index=values.index, dtype=object)


def encode_label_sets(sets: pd.Series, label_names: list[str], path: Path | str, column: str,
                      label_source: str) -> tuple[pd.Series, pd.Series]:
    """(label_set: tuples of indices into ``label_names``, label: the set's smallest index or 0 when
    empty -- a stratification key for carving splits, not a target). A name outside the label set
    is refused at its row (no drop policy: one row's set cannot be half dropped)."""
    index = {name: i for i, name in enumerate(label_names)}
    encoded = []
    for row, names in sets.items():
        unknown = [name for name in names if name not in index]
        if unknown:
            raise DataError(f"{path}: row {row}, column '{column}': the label {_shown(unknown[0])} is not in "
                            f"the label set from {label_source} ({_listed_names(label_names)})")
        encoded.append(tuple(sorted(index[name] for name in names)))
    label_set = pd.Series(encoded, index=sets.index, dtype=object)
    proxy = label_set.map(lambda s: s[0] if s else 0).astype("int64")
    return label_set, proxy


def _listed_names(names: list[str], limit: int = 10) -> str:
    more = f", … {len(names)} labels" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


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
        frames[split] = select_columns(raw, path, cfg.text_column, cfg.text_pair_column, cfg.label_column,
                                       label_sets=cfg.multi_label)
        if cfg.multi_label:
            frames[split]["label_raw"] = parse_label_sets(frames[split]["label_raw"], path, cfg.label_column,
                                                          cfg.label_delimiter, raw.attrs.get("lines"))
        files[split] = str(path)
    label_names, label_source = _label_names(cfg, frames["train"])
    for split, frame in frames.items():
        if cfg.multi_label:
            frame["label_set"], frame["label"] = encode_label_sets(frame["label_raw"], label_names, files[split],
                                                                   cfg.label_column, label_source)
            frame["label_raw"] = frame["label_raw"].map(list)  # raw names, for messages and records
        else:
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
        label_source=label_source,
        multi_label=cfg.multi_label,
    )


def _label_names(cfg: DataConfig, train: pd.DataFrame) -> tuple[list[str], str]:
    if cfg.label_names:
        if len(set(cfg.label_names)) != len(cfg.label_names):
            raise DataError("data.label_names: a label name appears twice")
        return list(cfg.label_names), "data.label_names"
    beside = Path(cfg.train_file).parent / "labels.txt"  # type: ignore[arg-type]
    if beside.is_file():
        # Taken without being asked for: say so, since an unrelated labels.txt would reorder (or, with
        # integer labels, rename) the classes.
        names = read_labels_file(beside)
        log.info("labels: taken from %s (%d names)", beside, len(names))
        return names, str(beside)
    if cfg.multi_label:  # label sets: the distinct names in them, sorted
        names = sorted({name for labels in train["label_raw"] for name in labels})
    else:
        names = infer_label_names(train["label_raw"])
    if not names:
        raise DataError(f"{cfg.train_file}: column '{cfg.label_column}' has no labels (all empty)")
    return names, f"the distinct values of '{cfg.label_column}' in {cfg.train_file}"
