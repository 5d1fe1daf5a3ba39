"""The one-file HTML report of a run directory.

``render_report(run_dir)`` reads the run's records and writes ``run_dir/report.html``: one
self-contained file (inline CSS, PNGs as base64 data URIs, no scripts, no external URL), so it can be
mailed, archived or opened offline. Only ``metrics.json`` is required; every other missing or
unreadable record becomes a visible note in its section. Every string from a record is escaped.
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass, field
from html import escape
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import yaml

from texttune import runs
from texttune.errors import TexttuneError
from texttune.evaluation.confusion import read_confusion
from texttune.io import atomic_write_text
from texttune.reports import plots

SCORES = ("accuracy", "f1_macro", "f1_micro", "f1_weighted", "log_loss", "ece", "loss", "num_examples")

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1100px;
       padding: 0 1rem; color: #222; line-height: 1.4; }
h1 { margin-bottom: 0.2rem; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2rem; margin-top: 2rem; }
.sub { color: #666; margin-top: 0; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; font-size: 0.9rem; }
th, td { border: 1px solid #ddd; padding: 0.25rem 0.6rem; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
pre { background: #f7f7f7; padding: 0.8rem; overflow-x: auto; font-size: 0.85rem; }
summary { cursor: pointer; color: #444; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
.cards { display: flex; flex-wrap: wrap; gap: 0.6rem; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: 0.5rem 0.8rem; min-width: 9rem; }
.card .k { color: #666; font-size: 0.8rem; } .card .v { font-size: 1.3rem; font-weight: 600; }
.note { color: #8a5a00; background: #fff7e0; padding: 0.4rem 0.7rem; border-left: 3px solid #e0a800; }
.error { color: #a00; } .warning { color: #8a5a00; }
"""


@dataclass
class Run:
    """A run directory's records as read; ``None`` where a file is missing, with a note saying why."""

    path: Path
    metrics: dict[str, Any]
    records: list[dict[str, Any]] | None = None
    config_text: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] | None = None
    data: dict[str, Any] | None = None
    checks: dict[str, Any] | None = None
    notes: dict[str, str] = field(default_factory=dict)  # file name -> why it is not shown

    @property
    def headline_split(self) -> str:
        """The split the headline numbers come from: test when it was evaluated, else validation."""
        return "test" if self.metrics.get("test") else "validation"

    @property
    def name(self) -> str:
        return str(self.config.get("name") or self.path.name)

    @property
    def strategy(self) -> str | None:
        """The adaptation strategy of a classification run (full, lora, ...), as its config records it."""
        strategy = self.config.get("strategy")
        name = strategy.get("name") if isinstance(strategy, dict) else None
        return str(name) if name else None

    @property
    def model(self) -> str | None:
        """The model of a classification run: the encoder family, or a pretrained encoder's path."""
        model = self.config.get("model")
        if not isinstance(model, dict):
            return None
        name = model.get("path") if model.get("name", "pretrained") == "pretrained" else model.get("name")
        return str(name) if name else None

    @property
    def title(self) -> str:
        """``trec-lora: minilm, strategy lora`` -- the name alone for runs without a strategy."""
        what = ", ".join(filter(None, (self.model, self.strategy and f"strategy {self.strategy}")))
        return f"{self.name}: {what}" if what and self.kind not in LM_SCORES else self.name

    @property
    def kind(self) -> str:
        """classify, mlm or sft (runs recorded before configs had a kind: as ``runs`` tells them apart)."""
        return runs.recorded_kind(self.config)


# ---------------------------------------------------------------- reading


def _read_json(run: Run, name: str) -> Any:
    path = run.path / name
    if not path.is_file():
        run.notes[name] = f"{name} not found in the run directory."
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        run.notes[name] = f"{name} could not be read: {err}"
        return None


def _read_records(run: Run) -> list[dict[str, Any]] | None:
    """metrics.jsonl lines; a torn last line (a run killed mid-write) is skipped, not fatal."""
    path = run.path / runs.METRICS_LOG
    if not path.is_file():
        run.notes[runs.METRICS_LOG] = f"{runs.METRICS_LOG} not found in the run directory."
        return None
    records, bad = [], 0
    for line in filter(str.strip, path.read_text(encoding="utf-8").splitlines()):
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict):
            records.append(record)
        else:
            bad += 1
    if bad:
        run.notes[runs.METRICS_LOG] = f"{bad} unreadable line(s) of {runs.METRICS_LOG} were skipped."
    return records


def _read_config(run: Run) -> None:
    path = run.path / runs.CONFIG
    if not path.is_file():
        run.notes[runs.CONFIG] = f"{runs.CONFIG} not found in the run directory."
        return
    run.config_text = path.read_text(encoding="utf-8")
    try:
        loaded = yaml.safe_load(run.config_text)
    except yaml.YAMLError as err:
        run.notes[runs.CONFIG] = f"{runs.CONFIG} could not be parsed: {err}"
        return
    run.config = loaded if isinstance(loaded, dict) else {}


def load_run(run_dir: str | Path) -> Run:
    """Read a run directory; raises ``TexttuneError`` when it has no readable metrics.json."""
    run_dir = Path(run_dir)
    path = run_dir / runs.METRICS
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TexttuneError(f"{path}: not found; is {run_dir} a finished texttune run directory?") from None
    except (OSError, ValueError) as err:
        raise TexttuneError(f"{path}: cannot be read ({err})") from None
    run = Run(run_dir, metrics if isinstance(metrics, dict) else {})
    run.records = _read_records(run)
    _read_config(run)
    run.environment = _read_json(run, runs.ENVIRONMENT)
    run.data = _read_json(run, runs.DATA)
    run.checks = _read_json(run, runs.DATA_CHECKS)
    return run


# ---------------------------------------------------------------- formatting


def _fmt(value: Any, digits: int = 4) -> str:
    """A number as text ('—' when absent), escaped when it is anything else."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:,.{digits}f}"
    return escape(str(value))


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, int | float) or math.isnan(seconds):
        return "—"
    minutes, secs = divmod(float(seconds), 60)
    hours, minutes = divmod(int(minutes), 60)
    if hours:
        return f"{hours}h {minutes:02d}m {secs:02.0f}s"
    return f"{minutes}m {secs:04.1f}s" if minutes else f"{secs:.1f} s"


def _note(text: str) -> str:
    return f'<p class="note">{escape(text)}</p>'


def _section(title: str, body: str) -> str:
    return f"<section>\n<h2>{escape(title)}</h2>\n{body}\n</section>"


def _table(header: list[str], rows: list[list[str]], numeric: Collection[int] = ()) -> str:
    """An HTML table; ``header`` is escaped here, ``rows`` cells must already be escaped or formatted."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "\n".join(
        "<tr>" + "".join(f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>"
                         for i, c in enumerate(row)) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>\n{body}\n</tbody></table>"


def _image(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{escape(alt)}">'


def _figure(run: Run, name: str, draw: Callable[[Path], Path] | None, missing: str) -> str:
    """Embed ``run_dir/name``, drawing it first with ``draw`` when it does not exist yet."""
    path = run.path / name
    if not path.is_file():
        if draw is None:
            return _note(missing)
        try:
            draw(path)
        # A malformed record costs its figure, not the whole report.
        except (KeyError, IndexError, TypeError, ValueError) as err:
            return _note(f"{name} could not be drawn: {err!r}")
    return _image(path, path.stem.replace("_", " "))


def _file_notes(run: Run, *names: str) -> str:
    return "".join(_note(run.notes[name]) for name in names if name in run.notes)


def _label_names(run: Run, split_metrics: dict[str, Any], size: int) -> list[str]:
    """Class names in matrix order: data.json's labels, else the per-class keys, else indices."""
    for names in ((run.data or {}).get("labels"), list(split_metrics.get("per_class") or {})):
        if names and len(names) == size:
            return [str(n) for n in names]
    return [str(i) for i in range(size)]


# ---------------------------------------------------------------- sections


def _title(run: Run) -> str:
    where = f'<p class="sub">run directory <code>{escape(run.path.name)}</code></p>'
    return f"<h1>{escape(run.title)}</h1>\n{where}"


def _card(key: str, value: str, detail: str = "") -> str:
    detail = f'<div class="k">{detail}</div>' if detail else ""
    return f'<div class="card"><div class="k">{escape(key)}</div><div class="v">{value}</div>{detail}</div>'


def _params_card(params: dict[str, Any]) -> str:
    trainable, total = params.get("trainable"), params.get("total")
    # Recomputed from the counts when possible: the share then never depends on fraction-vs-percent.
    pct = 100 * trainable / total if isinstance(trainable, int) and isinstance(total, int) and total else (
        params.get("trainable_pct"))
    counts = f"{_fmt(trainable)} / {_fmt(total)}"
    return _card("trainable / total params", counts, f"{_fmt(pct, 2)}% trainable")


def _best_detail(best: dict[str, Any]) -> str:
    return f"validation {_fmt(best['metric'])} {_fmt(best.get('value'))}" if best.get("metric") else ""


def _calibrated(scores: dict[str, Any], key: str) -> Any:
    """A split's score after temperature scaling (what ``predict`` returns), or None when not fitted."""
    calibrated = scores.get("calibrated")
    return calibrated.get(key) if isinstance(calibrated, dict) else None


def _calibrated_detail(scores: dict[str, Any], key: str) -> str:
    value = _calibrated(scores, key)
    return "" if value is None else f"calibrated {_fmt(value)} (as predict returns)"


def _summary(run: Run) -> str:
    split = run.headline_split
    scores = run.metrics.get(split) or {}
    best, params = run.metrics.get("best") or {}, run.metrics.get("params") or {}
    peak = run.metrics.get("peak_memory_mb")
    cards = [
        _card("model / strategy", f"{_fmt(run.model)} / {_fmt(run.strategy)}"),
        _card(f"{split} accuracy", _fmt(scores.get("accuracy"))),
        _card(f"{split} macro F1", _fmt(scores.get("f1_macro"))),
        _card(f"{split} log-loss", _fmt(scores.get("log_loss")), _calibrated_detail(scores, "log_loss")),
        _card(f"{split} ECE", _fmt(scores.get("ece")), _calibrated_detail(scores, "ece")),
        _card("best step", _fmt(best.get("step")), _best_detail(best)),
        _params_card(params),
        _card("wall time", _duration(run.metrics.get("wall_time_s"))),
        _card("train samples/s", _fmt(run.metrics.get("train_samples_per_s"), 1)),
        _card("peak memory", "—" if peak is None else f"{_fmt(peak, 0)} MB"),
    ]
    note = "" if scores else _note(f"{runs.METRICS} holds neither test nor validation metrics.")
    return _section("Summary", note + f'<div class="cards">{"".join(cards)}</div>')


def _config_section(run: Run) -> str:
    body = _file_notes(run, runs.CONFIG)
    if run.config_text is not None:  # folded: a hundred lines of YAML would push the results off the page
        lines = run.config_text.count("\n")
        body += (f"<details><summary>resolved config ({runs.CONFIG}, {lines} lines)</summary>"
                 f"<pre>{escape(run.config_text)}</pre></details>")
    return _section("Configuration", body)


def _environment_section(run: Run) -> str:
    body = _file_notes(run, runs.ENVIRONMENT)
    if isinstance(run.environment, dict):
        rows = [[escape(str(k)), _fmt(v)] for k, v in run.environment.items()]
        body += _table(["package / item", "value"], rows)
    return _section("Environment", body)


def _class_balance(data: dict[str, Any]) -> str:
    splits = data.get("splits") or {}
    labels = data.get("labels") or sorted({c for info in splits.values() for c in info.get("classes") or {}})
    if not labels:
        return ""
    rows = []
    for label in labels:
        cells = [escape(str(label))]
        for info in splits.values():
            count, total = (info.get("classes") or {}).get(label, 0), info.get("rows") or 0
            cells.append(f"{count:,} ({100 * count / total:.1f}%)" if total else _fmt(count))
        rows.append(cells)
    return "<h3>Class balance</h3>" + _table(["label", *splits], rows, numeric=set(range(1, len(splits) + 1)))


def _data_section(run: Run) -> str:
    body, data = _file_notes(run, runs.DATA), run.data
    if isinstance(data, dict):
        body += (f"<p>dataset <b>{_fmt(data.get('name'))}</b> ({_fmt(data.get('task'))}), "
                 f"fingerprint <code>{_fmt(data.get('fingerprint'))}</code></p>")
        rows = [[escape(str(split)), _fmt(info.get("rows")), _fmt(info.get("provenance"))]
                for split, info in (data.get("splits") or {}).items()]
        body += _table(["split", "rows", "how it was formed"], rows, numeric={1}) + _class_balance(data)
    return _section("Data", body)


def _checks_section(run: Run) -> str:
    body, checks = _file_notes(run, runs.DATA_CHECKS), run.checks
    if isinstance(checks, dict):
        findings = checks.get("findings") or []
        if checks.get("policy"):
            body += f"<p>policy <b>{_fmt(checks['policy'])}</b></p>"
        rows = [[_fmt(f.get("check")), _fmt(f.get("split")),
                 f'<span class="{escape(str(f.get("severity")))}">{_fmt(f.get("severity"))}</span>',
                 _fmt(f.get("count")), _fmt(f.get("message"))] for f in findings]
        body += _table(["check", "split", "severity", "count", "message"], rows, numeric={3}) if rows else (
            "<p>No findings: every check passed.</p>")
    return _section("Data checks", body)


def _curves_section(run: Run) -> str:
    records = run.records
    draw = None if records is None else (lambda path: plots.plot_learning_curves(records, path))
    figure = _figure(run, runs.LEARNING_CURVES, draw, "No learning curves.")
    return _section("Learning curves", _file_notes(run, runs.METRICS_LOG) + figure)


def _splits(run: Run) -> list[str]:
    return [s for s in ("validation", "test") if isinstance(run.metrics.get(s), dict)]


def _metrics_section(run: Run) -> str:
    splits = _splits(run)
    if not splits:
        return _section("Metrics", _note(f"{runs.METRICS} holds neither validation nor test metrics."))
    rows = [[escape(key), *(_fmt(run.metrics[s].get(key)) for s in splits)] for key in SCORES]
    if any(_calibrated(run.metrics[s], "ece") is not None for s in splits):
        rows += [[f"{key} (calibrated)", *(_fmt(_calibrated(run.metrics[s], key)) for s in splits)]
                 for key in ("log_loss", "ece")]
    numeric = set(range(1, len(splits) + 1))
    test_note = "" if "test" in splits else _note("No test metrics: the test split was not evaluated.")
    return _section("Metrics", test_note + _table(["metric", *splits], rows, numeric=numeric))


MAX_CLASS_ROWS = 100


def _per_class_section(run: Run) -> str:
    body = ""
    for split in _splits(run):
        per_class = run.metrics[split].get("per_class") or {}
        # Past MAX_CLASS_ROWS classes the page lists the largest classes (by support); metrics.json has all.
        shown = sorted(per_class.items(), key=lambda item: -(item[1].get("support") or 0))[:MAX_CLASS_ROWS] \
            if len(per_class) > MAX_CLASS_ROWS else list(per_class.items())
        rows = [[escape(str(label)), *(_fmt(m.get(k)) for k in ("precision", "recall", "f1", "support"))]
                for label, m in shown]
        note = _note(f"The {MAX_CLASS_ROWS} largest of {len(per_class):,} classes; metrics.json lists every "
                     "class.") if len(shown) < len(per_class) else ""
        body += f"<h3>{escape(split)}</h3>" + note + (
            _table(["label", "precision", "recall", "F1", "support"], rows, numeric={1, 2, 3, 4})
            if rows else _note(f"No per-class metrics for {split}."))
    return _section("Per-class metrics", body or _note("No per-class metrics."))


def _confusion_section(run: Run) -> str:
    split = run.headline_split
    scores = run.metrics.get(split) or {}
    matrix = scores.get("confusion_matrix")
    draw = None
    if matrix:
        def draw(path: Path) -> Path:  # reads the matrix inside _figure, where a malformed one is a note
            size = read_confusion(matrix, dense=False).size  # dense lists or sparse triplets
            return plots.plot_confusion_matrix(matrix, _label_names(run, scores, size), path)
    intro = f"<p>{escape(split)} split; rows are true labels, colour is the share of each true class.</p>"
    figure = _figure(run, runs.CONFUSION_MATRIX, draw, "No confusion matrix.")
    return _section("Confusion matrix", intro + figure)


def _calibration_section(run: Run) -> str:
    split = run.headline_split
    scores = run.metrics.get(split) or {}
    temperature = run.metrics.get("temperature")
    fitted = "not fitted" if temperature is None else _fmt(temperature)
    rows = [[label, _fmt(scores.get(key)), _fmt(_calibrated(scores, key))]
            for label, key in (("ECE", "ece"), ("log-loss", "log_loss"))]
    rows.append(["temperature", "1 (none)", fitted])
    reliability, ece = scores.get("reliability"), scores.get("ece")
    draw = None if not reliability else (lambda path: plots.plot_reliability(reliability, path, ece=ece))
    figure = _figure(run, runs.RELIABILITY, draw, "No reliability bins recorded.")
    intro = (f"<p>{escape(split)} split. Calibrated: the probabilities divided by the temperature fitted on "
             "validation, which <code>texttune predict</code> and <code>texttune.load</code> return; the reliability "
             "diagram shows the uncalibrated ones.</p>")
    header = ["", "uncalibrated", "calibrated"]
    return _section("Calibration", intro + _table(header, rows, {1, 2}) + figure)


def _clip(text: Any, limit: int = 600) -> str:
    text = str(text)
    return escape(text if len(text) <= limit else text[: limit - 1] + "…")


def _worst_section(run: Run) -> str:
    title = "Most confidently wrong validation examples"
    worst = (run.metrics.get("validation") or {}).get("worst") or []
    if not worst:
        return _section(title, _note("No misclassified validation examples recorded."))
    rows = []
    for example in worst:
        text = _clip(example.get("text", ""))
        if example.get("text_pair") is not None:
            text += f"<br><i>pair:</i> {_clip(example['text_pair'])}"
        rows.append([_fmt(example.get("confidence")), _fmt(example.get("label")),
                     _fmt(example.get("predicted")), text])
    return _section(title, _table(["confidence", "true", "predicted", "text"], rows, numeric={0}))


SECTIONS: tuple[Callable[[Run], str], ...] = (
    _title, _summary, _config_section, _environment_section, _data_section, _checks_section,
    _curves_section, _metrics_section, _per_class_section, _confusion_section, _calibration_section,
    _worst_section,
)

# ---------------------------------------------------------------- language-model runs (mlm, sft)

# The final and the before-training scores of each language-model kind, as (section key, title).
LM_SCORES = {
    "mlm": (("held_out", "held-out (after)"), ("held_out_before", "held-out (before)")),
    "sft": (("validation", "validation (after)"), ("validation_before", "validation (before)")),
}


def _lm_summary(run: Run) -> str:
    (after_key, after_title), (before_key, _) = LM_SCORES[run.kind]
    after, before = run.metrics.get(after_key) or {}, run.metrics.get(before_key) or {}
    best, params, peak = run.metrics.get("best") or {}, run.metrics.get("params") or {}, run.metrics.get("peak_memory_mb")
    cards = [_card(f"{after_title} {key}", _fmt(after.get(key)),
                   f"before: {_fmt(before.get(key))}" if before else "")
             for key in ("loss", "perplexity", "accuracy") if key in after]
    cards += [
        _card("best step", _fmt(best.get("step")), _best_detail(best)), _params_card(params),
        _card("wall time", _duration(run.metrics.get("wall_time_s"))),
        _card("seconds per step", _fmt(run.metrics.get("seconds_per_step"), 3)),
        _card("peak memory", "—" if peak is None else f"{_fmt(peak, 0)} MB"),
    ]
    return _section("Summary", f'<div class="cards">{"".join(cards)}</div>')


def _lm_metrics_section(run: Run) -> str:
    rows = []
    for key, title in LM_SCORES[run.kind]:
        scores = run.metrics.get(key)
        if isinstance(scores, dict):
            rows += [[escape(title), escape(name), _fmt(value)] for name, value in scores.items()]
    return _section("Metrics", _table(["evaluation", "metric", "value"], rows, numeric={2}) if rows
                    else _note("No evaluation recorded."))


def _lm_data_section(run: Run) -> str:
    data = run.data or {}
    rows = [[escape(str(key)), _fmt(value) if not isinstance(value, (list, dict)) else escape(json.dumps(value)[:200])]
            for key, value in data.items()]
    return _section("Data", _file_notes(run, runs.DATA) + (_table(["item", "value"], rows) if rows else ""))


LM_SECTIONS: tuple[Callable[[Run], str], ...] = (
    _title, _lm_summary, _config_section, _environment_section, _lm_data_section, _curves_section,
    _lm_metrics_section,
)


def render_report(run_dir: str | Path) -> Path:
    """Write ``run_dir/report.html`` (self-contained) from the run's records; returns its path.

    Missing PNGs (``learning_curves.png``, ``confusion_matrix.png``, ``reliability.png``) are drawn into
    the run directory first. Raises ``TexttuneError`` when ``metrics.json`` is missing or unreadable.
    """
    run = load_run(run_dir)
    body = "\n".join(section(run) for section in (LM_SECTIONS if run.kind in LM_SCORES else SECTIONS))
    page = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{escape(run.title)} — texttune report</title>\n<style>{CSS}</style>\n</head>\n"
        f"<body>\n{body}\n</body>\n</html>\n"
    )
    return atomic_write_text(run.path / runs.REPORT, page)
