"""The model card (``README.md``) of an exported model, from the run's own records.

Hugging Face's format: YAML front matter (``pipeline_tag``, ``library_name``, ``tags``) and a Markdown
body: the model, its data and splits (``data.json``), its metrics with 95% bootstrap intervals over the
test examples (``metrics.json``, ``test_predictions.json``: the same resampling as the leaderboards),
the strategy, intended use and limitations, and how to load it. Read through ``runs.py`` only; a record
the run lacks (a model folder exported on its own) is said to be missing, never invented.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import yaml

from texttune import runs
from texttune.evaluation.significance import RESAMPLES, bootstrap_ci, bootstrap_f1_macro_ci

SHOWN_METRICS = ("accuracy", "f1_macro", "log_loss", "ece")
SHOWN_LABELS = 20  # past that the card lists the first ones (a model may have thousands)


def model_card(config, record: dict[str, Any], run_dir: Path | None, name: str) -> str:
    """The whole README.md of an export named ``name``; ``config`` is the exported model's config."""
    run = _records(run_dir)
    labels = [config.id2label[i] for i in range(config.num_labels)]
    strategy = (run["config"].get("strategy") or {}).get("name") or (record.get("strategy") or {}).get("name")
    sections = [
        _front_matter(record, strategy), f"# {name}\n", _summary(record, run, labels, strategy),
        _data(run), _metrics(run, labels), _training(run, strategy), _use(run), _loading(record, name),
    ]
    return "\n".join(sections)


def _records(run_dir: Path | None) -> dict[str, Any]:
    """The run's config, data, metrics and test predictions ({} for each one it lacks)."""
    found: dict[str, Any] = {"dir": run_dir, "config": {}, "data": {}, "metrics": {}, "predictions": {}}
    if run_dir is None:
        return found
    found["config"] = runs.read_run_config(run_dir)
    for key, file in (("data", runs.DATA), ("metrics", runs.METRICS), ("predictions", runs.TEST_PREDICTIONS)):
        if (run_dir / file).is_file():
            found[key] = runs.read_json(run_dir, file)
    return found


def _front_matter(record: dict[str, Any], strategy: str | None) -> str:
    tags = ["texttune", "text-classification", *([strategy] if strategy else []),
            *(["custom_code"] if record["code"] == "custom" else [])]
    meta = {"pipeline_tag": "text-classification", "library_name": "transformers", "tags": tags}
    return f"---\n{yaml.safe_dump(meta, sort_keys=False)}---\n"


def _summary(record: dict[str, Any], run: dict[str, Any], labels: list[str], strategy: str | None) -> str:
    shown = ", ".join(f"`{label}`" for label in labels[:SHOWN_LABELS])
    more = f" and {len(labels) - SHOWN_LABELS} more (config.json: id2label)" if len(labels) > SHOWN_LABELS else ""
    body = (f"A text classifier trained with texttune: encoder `{record['encoder']}`, strategy "
            f"`{strategy or 'unknown'}`, {len(labels)} labels ({shown}{more}).")
    if run["dir"] is not None:
        body += f" Exported from the run `{run['dir'].name}` with texttune {record['texttune_version']}."
    if record["code"] == "stock":
        body += f"\n\nThe weights are those of transformers' stock `{record['class']}`."
    else:
        body += (f"\n\nThis folder ships its own modelling code (`modeling_texttune.py`, torch and transformers "
                 f"only): load it with `trust_remote_code=True`. No stock transformers class fits because "
                 f"{record['why_custom']}.")
    return body + "\n"


def _data(run: dict[str, Any]) -> str:
    data = run["data"]
    if not data:
        return "## Data\n\nNot recorded (the model was exported without its run directory).\n"
    lines = ["## Data\n", f"Dataset: `{data.get('name', 'unknown')}`.\n",
             "| split | rows | source | classes |", "|---|---|---|---|"]
    for split, info in (data.get("splits") or {}).items():
        counts = info.get("classes") or {}
        classes = (", ".join(f"{label}: {count}" for label, count in counts.items()) if len(counts) <= SHOWN_LABELS
                   else f"{len(counts)} classes")
        lines.append(f"| {split} | {info.get('rows', '?')} | {info.get('provenance', '')} | {classes} |")
    caveats = data.get("caveats") or []
    if caveats:
        lines += ["", "Data caveats found by the run's checks (they change what the scores mean):", "",
                  *[f"- {caveat}" for caveat in caveats]]
    return "\n".join(lines) + "\n"


def _metrics(run: dict[str, Any], labels: list[str]) -> str:
    metrics = run["metrics"]
    if not metrics:
        return "## Metrics\n\nNot recorded.\n"
    splits = [split for split in ("validation", "test") if isinstance(metrics.get(split), dict)]
    lines = ["## Metrics\n", "| metric | " + " | ".join(splits) + " |", "|---|" + "---|" * len(splits)]
    for metric in SHOWN_METRICS:
        lines.append(f"| {metric} | " + " | ".join(_number(metrics[s].get(metric)) for s in splits) + " |")
    lines += ["", *_intervals(run["predictions"], len(labels))]
    temperature = metrics.get("temperature")
    if temperature:
        calibrated = (metrics.get("test") or {}).get("calibrated") or {}
        lines.append(f"Calibration: temperature T = {temperature:.4g} fitted on the validation split; test ECE "
                     f"{_number(calibrated.get('ece'))} after scaling ({_number(metrics['test'].get('ece'))} "
                     "before).")
    return "\n".join(lines) + "\n"


def _intervals(predictions: dict[str, Any], num_labels: int) -> list[str]:
    if not predictions.get("labels"):
        return ["No per-example test predictions were recorded: no confidence intervals.", ""]
    if "correct" in predictions:  # multi-label: an interval for the exact set match only
        acc = bootstrap_ci(np.asarray(predictions["correct"], dtype=bool))
        return [f"95% bootstrap interval over the {len(predictions['correct'])} test examples ({RESAMPLES} "
                f"resamples): subset accuracy [{acc[0]:.4f}, {acc[1]:.4f}] at the fitted thresholds.", ""]
    labels, predicted = np.asarray(predictions["labels"]), np.asarray(predictions["predicted"])
    acc = bootstrap_ci(predicted == labels)
    f1 = bootstrap_f1_macro_ci(labels, predicted, num_labels)
    summary = (f"95% bootstrap intervals over the {len(labels)} test examples ({RESAMPLES} resamples): "
               f"accuracy [{acc[0]:.4f}, {acc[1]:.4f}], f1_macro [{f1[0]:.4f}, {f1[1]:.4f}].")
    return [summary, ""]


def _number(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "—"


def _training(run: dict[str, Any], strategy: str | None) -> str:
    config, metrics = run["config"], run["metrics"]
    settings = {k: v for k, v in (config.get("strategy") or {}).items() if k != "name" and v is not None}
    params = metrics.get("params") or {}
    lines = ["## Training\n", f"- strategy: `{strategy or 'unknown'}`"
             + (f" ({', '.join(f'{k}={v}' for k, v in settings.items())})" if settings else "")]
    if params:
        lines.append(f"- trainable parameters: {params.get('trainable'):,} of {params.get('total'):,} "
                     f"({params.get('trainable_pct')}%)")
    if metrics:
        lines.append(f"- {metrics.get('steps')} optimizer steps, {metrics.get('epochs')} epochs, "
                     f"global batch {metrics.get('global_batch_size')}")
    model = config.get("model") or {}
    if model:
        lines.append(f"- inputs truncated to {model.get('max_length')} tokens")
    return "\n".join(lines) + "\n"


def _use(run: dict[str, Any]) -> str:
    name = (run["data"] or {}).get("name", "its training data")
    return (
        "## Intended use\n\n"
        f"Classifying texts like those of `{name}` into the labels above. Check it on data of your own "
        "domain before relying on it.\n\n"
        "## Limitations\n\n"
        "- Scores hold for the splits above; texts from another domain, period or language can score much "
        "lower.\n- Inputs longer than the training length are truncated (pass `truncation=True` to the "
        "pipeline).\n- Labels outside the label set cannot be predicted; the model always picks one.\n"
        "- Biases of the training data and of any pretrained encoder carry over.\n"
    )


def _loading(record: dict[str, Any], name: str) -> str:
    remote = ", trust_remote_code=True" if record["code"] == "custom" else ""
    return (
        "## How to load\n\n```python\nfrom transformers import AutoModelForSequenceClassification, "
        "AutoTokenizer, pipeline\n\n"
        f'classifier = pipeline("text-classification", model="{name}"{remote})\n'
        'classifier(["some text"], truncation=True, top_k=None)\n\n'
        f'model = AutoModelForSequenceClassification.from_pretrained("{name}"{remote})\n'
        f'tokenizer = AutoTokenizer.from_pretrained("{name}"{remote})\n\n'
        f'import texttune  # where texttune is installed\ntexttune.load("{name}").predict(["some text"], top_k=2)\n```\n\n'
        "**Probabilities.** The pipeline and the Auto classes give the model's raw (uncalibrated) softmax. "
        "`texttune.load(...).predict` divides the logits by the calibration temperature T recorded in "
        "`config.json` (`texttune_temperature`) before the softmax: the same labels, better-calibrated "
        "scores. Without texttune: `softmax(logits / config.texttune_temperature)`.\n"
    )
