"""Data checks: empty texts, decoding and HTML-entity damage, bad labels, duplicates, split overlap, class
balance.

``run_checks`` inspects a ``TextDataset`` and returns a ``CheckReport`` of findings, each pointing at
source rows (the DataFrame index). ``apply_policy`` then warns, drops or fails as configured.

Count definitions (chosen so that the figures in the data README are reproduced exactly):

- ``duplicates``: rows that repeat an earlier row of the same split (the extra copies; a text seen
  three times counts 2). The key is ``text``, or the (``text``, ``text_pair``) pair for pair data.
  TREC train: 71; IMDB train/test: 96/199; SST-2 train: 371.
- ``duplicates_normalized``: the further rows that repeat an earlier row only once case, whitespace
  and punctuation are normalised (exact repeats are not counted again), so ``duplicates`` +
  ``duplicates_normalized`` = rows repeating an earlier row after normalisation.
- ``conflicting_labels``: distinct texts occurring in a split with more than one label (SST-2: 5).
- ``overlap``: distinct texts occurring in both splits (TREC train∩test: 10; IMDB: 123);
  ``overlap_normalized``: the further distinct normalised texts shared only after normalisation.
- ``empty_text``, ``non_utf8``, ``missing_label``, ``unknown_label``: rows.
- ``html_entities``, ``mojibake``: rows with at least one (``data/text_damage.py`` says what counts); the
  message adds how often each form occurs. AG News test: 2,428 of 7,600 rows with entities (``#39;``
  2,789 times, ``&gt;`` 754, ``&lt;`` 753, ``quot;`` 595, ``amp;`` 105), no mojibake.
- ``class_imbalance``: the number of classes flagged (empty in train, or more than
  ``max_imbalance_ratio`` times smaller than the largest class); 0 for the info finding.

Empty texts are reported by ``empty_text`` only: they never count as duplicates or overlap, and
neither do texts that normalise to nothing (e.g. "...") in the normalised checks.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from rich.table import Table

from texttune.config import DataChecksConfig
from texttune.data import text_damage
from texttune.data.dataset import MISSING_LABEL, UNKNOWN_LABEL, TextDataset
from texttune.io import atomic_write_json
from texttune.errors import DataCheckError

Severity = Literal["error", "warning", "info"]

MAX_ROWS = 20
MAX_EXAMPLES = 3
# Duplicates above this share of a split are a caveat beside its scores (CheckReport.caveats).
DUPLICATE_SHARE = 0.01
EXAMPLE_CHARS = 80
# Row numbers are the DataFrame index: 0-based data rows of the split's file (what pandas shows), said
# wherever rows are listed, since an editor's line numbers differ by the header line and by 1.
ROWS_NOTE = "Row numbers are 0-based data rows of each split's file (row 0 is the first row after any header)"
# What the drop policy removes, in the order the reasons are attributed (a row counts once).
DROP_REASONS = (
    "empty_text", "missing_label", "unknown_label", "conflicting_labels", "duplicates", "overlap",
)

# Undecodable bytes surface as U+FFFD (errors="replace") or lone surrogates (errors="surrogateescape").
_BAD_CHARS = re.compile("[\ufffd\ud800-\udfff]")
_SURROGATES = re.compile("[\ud800-\udfff]")
_PUNCT = re.compile(r"[^\w\s]+")
# Byte-level deletion of the same ASCII characters _PUNCT removes: ~2x faster on mostly-ASCII corpora.
_ASCII_PUNCT = bytes(c for c in range(128) if _PUNCT.match(chr(c)))


@dataclass
class Finding:
    """One problem (or, for ``class_imbalance``, one observation) in one split or split pair."""

    check: str
    split: str
    severity: Severity
    count: int
    message: str
    rows: list[int] = field(default_factory=list)  # source row numbers, the first MAX_ROWS
    examples: list[str] = field(default_factory=list)  # up to MAX_EXAMPLES shortened texts


@dataclass
class CheckReport:
    """All findings of one ``run_checks`` call, with enough context to be read on its own."""

    dataset: str
    policy: str
    rows: dict[str, int]
    findings: list[Finding] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "policy": self.policy,
            "rows": dict(self.rows),
            "config": dict(self.config),
            "num_errors": len(self.errors),
            "num_warnings": len(self.warnings),
            "findings": [asdict(f) for f in self.findings],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CheckReport:
        findings = [Finding(**f) for f in data.get("findings", [])]
        return cls(data["dataset"], data["policy"], dict(data["rows"]), findings, data.get("config", {}))

    def write_json(self, path: str | Path) -> Path:
        """Write the report atomically, so a reader never sees a half-written file."""
        return atomic_write_json(path, self.to_dict())

    def caveats(self) -> list[str]:
        """The findings that change what a score on this data means, one short line each: texts shared
        by train and an evaluation split (the score is inflated), texts with conflicting labels, empty
        texts, duplicates above ``DUPLICATE_SHARE`` of a split. Only the ``warn`` policy trains on
        them (``drop`` removes those rows, ``fail`` stops)."""
        if self.policy != "warn":
            return []
        lines = []
        for f in self.findings:
            if f.check in ("overlap", "overlap_normalized") and f.split.split("∩")[0] == "train":
                lines.append(f"{f.split}: {f.message.split('; rows listed')[0]}")
            elif f.check in ("conflicting_labels", "empty_text", "label_never_in_train"):
                lines.append(f"{f.split}: {f.message}")
            elif f.check in ("duplicates", "duplicates_normalized") and f.count > DUPLICATE_SHARE * self.rows.get(f.split, 0):
                lines.append(f"{f.split}: {f.message}")
        return lines

    def render_table(self) -> Table:
        table = Table(title=f"Data checks: {self.dataset} (policy {self.policy})", caption=ROWS_NOTE)
        for column in ("check", "split", "severity", "count", "details"):
            table.add_column(column, justify="right" if column == "count" else "left")
        styles = {"error": "bold red", "warning": "yellow", "info": "dim"}
        for f in self.findings:
            details = f.message + (f"\nrows: {_format_rows(f.rows)}" if f.rows else "")
            details += f"\ne.g. {f.examples[0]}" if f.examples else ""
            severity = f"[{styles[f.severity]}]{f.severity}[/]"
            table.add_row(f.check, f.split, severity, str(f.count), details)
        return table


# --------------------------------------------------------------------------- running the checks


def run_checks(ds: TextDataset, cfg: DataChecksConfig) -> CheckReport:
    """Run every check on every split (and split pair) of ``ds``; see the module docstring."""
    exact = _key_ids(ds, normalize=False)
    norm = _key_ids(ds, normalize=True) if cfg.normalized else None
    findings: list[Finding] = []
    for split in ds.split_names():
        df = ds.splits[split]
        findings += _check_empty(ds, split, df)
        findings += _check_non_utf8(ds, split, df)
        findings += _check_text_damage(ds, split, df)
        findings += _check_labels(ds, split, df) if not ds.multi_label else _check_label_sets(ds, split, df)
        findings += _check_duplicates(ds, split, exact[split], norm[split] if norm else None)
        findings += _check_conflicts(ds, split, exact[split]) if not ds.multi_label else []
    for a, b in itertools.combinations(ds.split_names(), 2):
        findings += _check_overlap(ds, a, b, exact, norm)
    for split in ds.split_names():
        # Multi-label: a class's share is per label (_check_label_sets), not one label per row.
        findings += _check_imbalance(ds, split, cfg.max_imbalance_ratio) if not ds.multi_label else []
    rows = {s: len(ds.splits[s]) for s in ds.split_names()}
    return CheckReport(ds.name, cfg.policy, rows, findings, cfg.model_dump())


def _text_columns(ds: TextDataset) -> list[str]:
    return ["text", "text_pair"] if ds.has_pairs else ["text"]


def _texts(df: pd.DataFrame, column: str) -> pd.Series:
    """A column as strings with a fresh 0..n-1 index; missing values (or column) become ""."""
    if column not in df.columns:
        return pd.Series([""] * len(df), dtype=object)
    # Object dtype, not pandas' Arrow-backed str: lone surrogates cannot be stored in Arrow strings.
    values = df[column].to_numpy(dtype=object)
    return pd.Series([_as_text(v) for v in values], dtype=object)


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return "" if pd.isna(value) else str(value)


def _is_blank(values: pd.Series) -> np.ndarray:
    return values.str.strip().eq("").to_numpy(dtype=bool)


def _normalize(text: str) -> str:
    """Lowercase, drop punctuation (non-word, non-space characters), collapse whitespace."""
    if text.isascii():
        text = text.encode().lower().translate(None, _ASCII_PUNCT).decode()
    else:
        text = _PUNCT.sub("", text.lower())
    return " ".join(text.split())


def _key_ids(ds: TextDataset, normalize: bool) -> dict[str, np.ndarray]:
    """One int64 id per row of every split; equal ids mean equal keys (text or text pair).

    Ids are exact (no hashing collisions): each column is factorised over all splits together and the
    codes combined. Blank keys get distinct negative ids so that they never match anything.
    """
    names = ds.split_names()
    if not names:
        return {}
    frames = [ds.splits[s] for s in names]
    sizes = [len(df) for df in frames]
    ids = np.zeros(sum(sizes), dtype=np.int64)
    blanks = [np.zeros(n, dtype=bool) for n in sizes]
    for column in _text_columns(ds):
        parts = []
        for df, blank in zip(frames, blanks, strict=True):
            values = _texts(df, column)
            if normalize:
                values = pd.Series([_normalize(t) for t in values], dtype=object)
            if column in df.columns:  # a split without text_pair is not blank for lack of it
                blank |= _is_blank(values)
            parts.append(values)
        codes, uniques = pd.factorize(pd.concat(parts, ignore_index=True))
        # Re-factorise the combined codes so that the next multiplication cannot overflow.
        ids = pd.factorize(ids * len(uniques) + codes)[0].astype(np.int64)
    blank = np.concatenate(blanks)
    ids[blank] = -1 - np.flatnonzero(blank)
    return dict(zip(names, np.split(ids, np.cumsum(sizes)[:-1]), strict=True))


def _finding(
    check: str, split: str, severity: Severity, count: int | np.integer, message: str,
    df: pd.DataFrame, mask: np.ndarray | None = None, example_repr: bool = False,
) -> Finding:
    """A finding whose rows and examples are the first rows of ``df`` selected by ``mask``."""
    picked = df if mask is None else df[mask]
    rows = [int(i) for i in picked.index[:MAX_ROWS]]
    examples: list[str] = []
    for text in _row_texts(picked.head(MAX_ROWS * 5)):
        text = _shorten(repr(text) if example_repr else text)
        if text not in examples and len(examples) < MAX_EXAMPLES:
            examples.append(text)
    return Finding(check, split, severity, int(count), message, rows, examples)


def _row_texts(df: pd.DataFrame) -> list[str]:
    texts = _texts(df, "text")
    if "text_pair" in df.columns:
        texts = texts + " | " + _texts(df, "text_pair")
    return texts.tolist()


def _shorten(text: str) -> str:
    text = _SURROGATES.sub("\ufffd", text)  # lone surrogates cannot be written as UTF-8 JSON
    return text if len(text) <= EXAMPLE_CHARS else text[: EXAMPLE_CHARS - 1] + "…"


def _format_rows(rows: list[int]) -> str:
    return ", ".join(map(str, rows)) + (", …" if len(rows) >= MAX_ROWS else "")


def _n(count: int | np.integer, noun: str) -> str:
    """``_n(1, "row")`` → "1 row", ``_n(3, "row")`` → "3 rows"."""
    return f"{int(count)} {noun}{'' if count == 1 else 's'}"


def _what(ds: TextDataset) -> str:
    return "text pair" if ds.has_pairs else "text"


# --------------------------------------------------------------------------- per-split checks


def _check_empty(ds: TextDataset, split: str, df: pd.DataFrame) -> list[Finding]:
    blank = {c: _is_blank(_texts(df, c)) for c in _text_columns(ds) if c in df.columns}
    mask = np.logical_or.reduce(list(blank.values()))
    if not mask.any():
        return []
    message = f"{_n(mask.sum(), 'row')} with an empty or whitespace-only {_what(ds)}"
    if len(blank) > 1:
        message += " (" + ", ".join(f"{int(m.sum())} in {c}" for c, m in blank.items()) + ")"
    return [_finding("empty_text", split, "warning", mask.sum(), message, df, mask, example_repr=True)]


def _check_non_utf8(ds: TextDataset, split: str, df: pd.DataFrame) -> list[Finding]:
    mask = np.zeros(len(df), dtype=bool)
    for column in _text_columns(ds):
        if column in df.columns:
            texts = _texts(df, column)
            mask |= np.fromiter(
                (not t.isascii() and _BAD_CHARS.search(t) is not None for t in texts), bool, len(df)
            )
    if not mask.any():
        return []
    message = (
        f"{_n(mask.sum(), 'row')} with U+FFFD replacement characters or lone surrogates: bytes "
        "that were not valid UTF-8 when the file was decoded (check its encoding)"
    )
    return [_finding("non_utf8", split, "warning", mask.sum(), message, df, mask)]


# The two kinds of text damage: how each is found, and what the finding says it is.
DAMAGE = {
    "html_entities": (text_damage.entity_forms,
                      "HTML-entity remnants (escaped for a web page, never unescaped; ' #39;' lost its '&')"),
    "mojibake": (text_damage.mojibake_forms, "mojibake (UTF-8 read as Latin-1 or Windows-1252: 'Ã©' for 'é')"),
}
MAX_FORMS = 5


def _check_text_damage(ds: TextDataset, split: str, df: pd.DataFrame) -> list[Finding]:
    """Rows with HTML-entity remnants or mojibake: the count of rows, how often each form occurs (the five
    commonest), and examples cut around the first damage of a row, which can be far into a long text."""
    findings = []
    for check, (find, what) in DAMAGE.items():
        per_row = [[] for _ in range(len(df))]
        for column in _text_columns(ds):
            if column in df.columns:
                for i, text in enumerate(_texts(df, column)):
                    per_row[i] += find(text)
        mask = np.fromiter(map(bool, per_row), bool, len(df))
        if not mask.any():
            continue
        counts = text_damage.count_forms(per_row).most_common()
        forms = ", ".join(f"{form} {n:,}" for form, n in counts[:MAX_FORMS]) + (", …" if len(counts) > MAX_FORMS else "")
        rows = int(mask.sum())
        message = f"{rows:,} row{'s' * (rows != 1)} with {what}: {forms}; data.clean_text: true repairs them"
        finding = _finding(check, split, "warning", mask.sum(), message, df, mask)
        finding.examples = _damage_examples(_row_texts(df[mask].head(MAX_ROWS)), [f for f in per_row if f])
        findings.append(finding)
    return findings


def _damage_examples(texts: list[str], forms: list[list[str]]) -> list[str]:
    examples = []
    for text, found in zip(texts, forms):
        at = max(text.find(found[0]), 0)
        start = max(at - EXAMPLE_CHARS // 3, 0)
        snippet = ("…" if start else "") + text[start:]
        if snippet not in examples and len(examples) < MAX_EXAMPLES:
            examples.append(_shorten(snippet))
    return examples


def _check_labels(ds: TextDataset, split: str, df: pd.DataFrame) -> list[Finding]:
    if ds.label_names is None or "label" not in df.columns:
        return []
    labels = df["label"].to_numpy(dtype=np.int64)
    findings = []
    missing = labels == MISSING_LABEL
    if missing.any():
        message = f"{_n(missing.sum(), 'row')} without a label (empty or NaN)"
        findings.append(_finding("missing_label", split, "error", missing.sum(), message, df, missing))
    unknown = labels == UNKNOWN_LABEL
    if unknown.any():
        message = (
            f"{_n(unknown.sum(), 'row')} with a label outside the label set "
            f"{_names(ds.label_names)}{_label_source(ds)}{_raw_values(df, unknown)}"
        )
        findings.append(_finding("unknown_label", split, "error", unknown.sum(), message, df, unknown))
    return findings


def _check_label_sets(ds: TextDataset, split: str, df: pd.DataFrame) -> list[Finding]:
    """Multi-label: rows with no label are allowed (none of the labels applies) and counted; a label
    the training split never holds cannot be learned (its threshold and scores mean nothing).
    Malformed sets and unknown names were refused when the file was read (files.parse_label_sets)."""
    sets = df["label_set"].tolist() if "label_set" in df.columns else []
    findings = []
    empty = np.fromiter((len(s) == 0 for s in sets), bool, len(sets))
    if empty.any():
        message = f"{_n(empty.sum(), 'row')} with no label (an empty set: allowed, none of the labels applies)"
        findings.append(_finding("no_label", split, "info", empty.sum(), message, df, empty))
    if split == "train":
        seen = {i for labels in sets for i in labels}
        never = [name for i, name in enumerate(ds.label_names or []) if i not in seen]
        if never:
            message = (f"{_n(len(never), 'label')} of the label set{_label_source(ds)} never in a training row: "
                       f"{_listed(never)}; the model cannot learn {'it' if len(never) == 1 else 'them'}")
            findings.append(_finding("label_never_in_train", split, "warning", len(never), message, df,
                                     np.zeros(len(df), bool)))
    return findings


def _label_source(ds: TextDataset) -> str:
    # The set may come from a labels.txt the user never meant to use: name it, so it can be fixed.
    return f" from {ds.label_source}" if ds.label_source else ""


def _listed(names: list[str], limit: int = 10) -> str:
    """Up to ``limit`` names and how many more: a message stays short with thousands of classes."""
    more = f", … ({len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _names(names: list[str], limit: int = 10) -> str:
    shown = ", ".join(names[:limit])
    return f"[{shown}{', …' if len(names) > limit else ''}] ({len(names)} labels)"


def _raw_values(df: pd.DataFrame, mask: np.ndarray, limit: int = 5) -> str:
    if "label_raw" not in df.columns:
        return ""
    values = pd.unique(pd.Series([str(v) for v in df.loc[mask, "label_raw"]], dtype=object))
    shown = ", ".join(repr(v) for v in values[:limit])
    return f"; values: {shown}{', …' if len(values) > limit else ''}"


def _check_duplicates(
    ds: TextDataset, split: str, exact: np.ndarray, norm: np.ndarray | None
) -> list[Finding]:
    df = ds.splits[split]
    dup = pd.Series(exact).duplicated().to_numpy()
    findings = []
    if dup.any():
        distinct = len(np.unique(exact[dup]))
        message = (
            f"{_n(dup.sum(), 'row')} repeating an earlier row's {_what(ds)} "
            f"({_n(distinct, 'distinct ' + _what(ds))} occurring more than once)"
        )
        findings.append(_finding("duplicates", split, "warning", dup.sum(), message, df, dup))
    if norm is not None:
        extra = pd.Series(norm).duplicated().to_numpy() & ~dup
        if extra.any():
            message = (
                f"{_n(extra.sum(), 'more row')} repeating an earlier row once case, whitespace and "
                "punctuation are normalised"
            )
            findings.append(
                _finding("duplicates_normalized", split, "warning", extra.sum(), message, df, extra)
            )
    return findings


def _conflicting_rows(exact: np.ndarray, labels: np.ndarray, alive: np.ndarray) -> np.ndarray:
    """Rows (among ``alive`` rows with a valid label) whose key occurs with more than one label."""
    valid = alive & (labels >= 0) & (exact >= 0)
    frame = pd.DataFrame({"key": exact[valid], "label": labels[valid]})
    per_key = frame.groupby("key")["label"].nunique()
    bad_keys = per_key.index[per_key > 1].to_numpy()
    return valid & np.isin(exact, bad_keys)


def _check_conflicts(ds: TextDataset, split: str, exact: np.ndarray) -> list[Finding]:
    df = ds.splits[split]
    if ds.label_names is None or "label" not in df.columns:
        return []
    labels = df["label"].to_numpy(dtype=np.int64)
    mask = _conflicting_rows(exact, labels, np.ones(len(df), dtype=bool))
    if not mask.any():
        return []
    count = len(np.unique(exact[mask]))
    message = f"{_n(count, _what(ds))} with more than one label ({_n(mask.sum(), 'row')})"
    return [_finding("conflicting_labels", split, "warning", count, message, df, mask)]


def _check_overlap(
    ds: TextDataset, a: str, b: str,
    exact: dict[str, np.ndarray], norm: dict[str, np.ndarray] | None,
) -> list[Finding]:
    """Keys shared by splits ``a`` and ``b``; the rows listed are those of ``a``."""
    df, pair, what = ds.splits[a], f"{a}∩{b}", _what(ds)
    shared = np.intersect1d(exact[a], exact[b])  # blank keys have unique ids: never shared
    in_a = np.isin(exact[a], shared)
    findings = []
    if len(shared):
        message = (
            f"{_n(len(shared), 'distinct ' + what)} in both {a} and {b} ({_n(in_a.sum(), 'row')} in "
            f"{a}, {int(np.isin(exact[b], shared).sum())} in {b}); rows listed are in {a}"
        )
        findings.append(_finding("overlap", pair, "warning", len(shared), message, df, in_a))
    if norm is not None:
        extra = np.setdiff1d(np.intersect1d(norm[a], norm[b]), norm[a][in_a])
        if len(extra):
            mask = np.isin(norm[a], extra)
            message = (
                f"{_n(len(extra), 'more distinct ' + what)} in both {a} and {b} once case, whitespace "
                f"and punctuation are normalised; rows listed are in {a}"
            )
            findings.append(_finding("overlap_normalized", pair, "warning", len(extra), message, df, mask))
    return findings


def _check_imbalance(ds: TextDataset, split: str, limit: float) -> list[Finding]:
    """Largest/smallest class ratio; always reported, as info when within ``limit``."""
    df = ds.splits[split]
    if ds.label_names is None or "label" not in df.columns:
        return []
    labels = df["label"].to_numpy(dtype=np.int64)
    labels = labels[(labels >= 0) & (labels < ds.num_labels)]
    if not len(labels):
        return []
    names, counts = ds.label_names, np.bincount(labels, minlength=ds.num_labels)
    present = np.flatnonzero(counts)
    big = present[np.argmax(counts[present])]
    small = present[::-1][np.argmin(counts[present][::-1])]  # the last smallest: differs on ties
    # A class missing from train can never be learnt; a small evaluation split may just lack a rare one.
    empty = np.flatnonzero(counts == 0) if split == "train" else np.array([], dtype=np.int64)
    flagged = present[counts[big] / counts[present] > limit]
    message = (
        f"largest/smallest class: {names[big]} {counts[big]} / {names[small]} {counts[small]} "
        f"= {counts[big] / counts[small]:.1f}"
    )
    if len(empty):
        message += f"; classes with no rows: {_listed([names[i] for i in empty])}"
    if len(flagged):
        message += f"; more than {limit:g}x smaller: {_listed([names[i] for i in flagged])}"
    else:
        message += f" (limit {limit:g})"
    severity: Severity = "warning" if len(empty) or len(flagged) else "info"
    return [Finding("class_imbalance", split, severity, len(empty) + len(flagged), message)]


# --------------------------------------------------------------------------- policies


def apply_policy(
    ds: TextDataset, report: CheckReport, cfg: DataChecksConfig
) -> tuple[TextDataset, dict[str, dict[str, int]]]:
    """Act on a report: ``warn`` goes on, ``drop`` removes bad rows, ``fail`` raises.

    Returns a new dataset (the input is not modified) and, per split, the rows dropped for each of
    ``DROP_REASONS`` plus ``total``. Rows with missing or unknown labels stop ``warn`` too, since no
    model can train on them.
    """
    if cfg.policy == "drop":
        return _drop(ds, cfg)  # from the data, not the report: findings list only the first rows
    problems = report.errors if cfg.policy == "warn" else report.errors + report.warnings
    if problems:
        raise DataCheckError(_failure_message(ds, problems, cfg.policy))
    summary = {s: dict.fromkeys((*DROP_REASONS, "total"), 0) for s in ds.split_names()}
    return replace(ds, splits=dict(ds.splits), notes=list(ds.notes)), summary


def _failure_message(ds: TextDataset, problems: list[Finding], policy: str) -> str:
    errors = sum(f.severity == "error" for f in problems)
    head = f"data checks failed for {ds.name} (policy {policy}): {errors} errors"
    if policy == "fail":
        head += f", {len(problems) - errors} warnings"
    lines = [head + ":"]
    for f in problems:
        where = ds.where(f.split) if f.split in ds.splits else f.split
        column = "column 'label': " if f.check in ("missing_label", "unknown_label") else ""
        rows = f"; rows {_format_rows(f.rows)}" if f.rows else ""
        lines.append(f"  [{f.severity}] {f.check}: {where}: {column}{f.message}{rows}")
    lines.append(
        f"{ROWS_NOTE}. Fix the data, or remove these rows with "
        "--set data.checks.policy=drop"
        + (" (or go on despite warnings with --set data.checks.policy=warn)." if policy == "fail" else ".")
    )
    return "\n".join(lines)


def _drop(ds: TextDataset, cfg: DataChecksConfig) -> tuple[TextDataset, dict[str, dict[str, int]]]:
    """Evaluation splits first, so train leakage is measured against what will be evaluated."""
    exact = _key_ids(ds, normalize=False)
    norm = _key_ids(ds, normalize=True) if cfg.normalized else None
    keep: dict[str, np.ndarray] = {}
    summary: dict[str, dict[str, int]] = {}
    for split in sorted(ds.split_names(), key=lambda s: s == "train"):
        masks = _drop_masks(ds, split, exact, norm, keep)
        keep[split] = ~np.logical_or.reduce(list(masks.values()))
        summary[split] = {reason: int(m.sum()) for reason, m in masks.items()}
        summary[split]["total"] = int((~keep[split]).sum())
    splits = {s: ds.splits[s][keep[s]] for s in ds.split_names()}
    total = sum(v["total"] for v in summary.values())
    notes = [*ds.notes, f"data checks (policy drop) removed {total} rows"] if total else list(ds.notes)
    return replace(ds, splits=splits, notes=notes), summary


def _drop_masks(
    ds: TextDataset, split: str, exact: dict[str, np.ndarray],
    norm: dict[str, np.ndarray] | None, kept: dict[str, np.ndarray],
) -> dict[str, np.ndarray]:
    """Rows to drop per reason; each reason only sees the rows no earlier reason took."""
    df, ids = ds.splits[split], exact[split]
    labelled = ds.label_names is not None and "label" in df.columns
    labels = df["label"].to_numpy(dtype=np.int64) if labelled else np.zeros(len(df), dtype=np.int64)
    nothing = np.zeros(len(df), dtype=bool)
    masks = {"empty_text": ids < 0}  # blank keys, and only they, have negative ids
    alive = ~masks["empty_text"]
    masks["missing_label"] = alive & (labels == MISSING_LABEL) if labelled else nothing
    masks["unknown_label"] = alive & (labels == UNKNOWN_LABEL) if labelled else nothing
    alive &= ~(masks["missing_label"] | masks["unknown_label"])
    # Which copy of a text with two labels is right is unknown, so none is kept.
    masks["conflicting_labels"] = _conflicting_rows(ids, labels, alive) if labelled else nothing
    alive &= ~masks["conflicting_labels"]
    masks["duplicates"] = _duplicated_among(ids, alive)
    alive &= ~masks["duplicates"]
    # Leakage is removed from train only: evaluation splits stay comparable with published numbers.
    masks["overlap"] = alive & _leaked(split, exact, norm, kept) if split == "train" else nothing
    return masks


def _duplicated_among(ids: np.ndarray, alive: np.ndarray) -> np.ndarray:
    """Alive rows whose key occurs in an earlier alive row (the first copy is kept)."""
    dup = np.zeros(len(ids), dtype=bool)
    dup[alive] = pd.Series(ids[alive]).duplicated().to_numpy()
    return dup


def _leaked(
    split: str, exact: dict[str, np.ndarray],
    norm: dict[str, np.ndarray] | None, kept: dict[str, np.ndarray],
) -> np.ndarray:
    """Rows of ``split`` whose key (exact, or normalised) is among the kept rows of other splits."""
    others = [s for s in exact if s != split]
    if not others:
        return np.zeros(len(exact[split]), dtype=bool)
    mask = np.isin(exact[split], np.concatenate([exact[s][kept[s]] for s in others]))
    if norm is not None:
        mask |= np.isin(norm[split], np.concatenate([norm[s][kept[s]] for s in others]))
    return mask
