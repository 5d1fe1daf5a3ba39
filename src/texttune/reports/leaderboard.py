"""The leaderboard of a comparison: one row per cell (its seeds pooled), from finished run directories.

Per cell: mean ± std of the metric over seeds, a 95% bootstrap interval over test examples, a paired
test against the baseline cell, trainable parameters, wall time, peak memory, checkpoint size, and the
validation curves of its runs. Written as JSON (the input of the charts and comparison.html),
Markdown and CSV.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from texttune import runs
from texttune.errors import TexttuneError
from texttune.evaluation.significance import bootstrap_ci, mcnemar_p, paired_bootstrap_p
from texttune.io import atomic_write_json, atomic_write_text

HIGHER_IS_BETTER = {"accuracy", "f1_macro", "f1_micro", "f1_weighted", "f1"}


@dataclass
class CellRuns:
    """A cell of a comparison and its finished run directories (one per seed)."""

    name: str
    runs: list[Path]
    axes: dict[str, Any] = field(default_factory=dict)
    stage: str = ""
    seeds: list[int] = field(default_factory=list)


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise TexttuneError(f"{path}: unreadable ({err})") from None


def _correct(run: Path) -> np.ndarray | None:
    outcomes = _outcomes(run)
    return outcomes[1] if outcomes is not None else None


def _outcomes(run: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """(row ids, correct) of the run's test examples, or None without test_predictions.json."""
    path = run / runs.TEST_PREDICTIONS
    if not path.is_file():
        return None
    record = _json(path)
    if "correct" in record:  # multi-label: the exact set match per row
        correct = np.asarray(record["correct"], dtype=bool)
    else:
        correct = np.asarray(record["predicted"]) == np.asarray(record["labels"])
    return np.asarray(record.get("rows", range(len(correct)))), correct


def _cv(run: Path) -> dict[str, Any] | None:
    """The run's k-fold record in data.json ({fold, folds, seed, ...}), or None for an ordinary run."""
    path = run / runs.DATA
    return _json(path).get("cv") if path.is_file() else None


def _curve(run: Path, metric: str) -> list[list[float]]:
    path = run / runs.METRICS_LOG
    if not path.is_file():
        return []
    points = []
    for line in path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if record.get("type") == "eval" and metric in record:
            points.append([record["step"], record[metric]])
    return points


def _mean(values: list[Any]) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def data_caveats(run: Path) -> list[str]:
    """What the run's data checks say about its scores (train/test overlap, conflicting labels, ...),
    from its ``data_checks.json``: the leaderboard shows them beside the score they inflate."""
    from texttune.data.checks import CheckReport

    path = run / runs.DATA_CHECKS
    if not path.is_file():
        return []
    try:
        return CheckReport.from_dict(_json(path)).caveats()
    except (KeyError, TypeError) as err:
        raise TexttuneError(f"{path}: not a data-check report ({err})") from None


def cell_row(cell: CellRuns, metric: str, split: str, root: Path) -> tuple[dict[str, Any], np.ndarray | None]:
    """The leaderboard row of one cell and its (seeds, examples) correctness matrix."""
    metrics = [_json(run / runs.METRICS) for run in cell.runs]
    scores = [m.get(split, {}).get(metric) for m in metrics]
    if any(s is None for s in scores):
        raise TexttuneError(f"{cell.runs[scores.index(None)]}: no {split} {metric} in metrics.json")
    folds = [_cv(run) for run in cell.runs]
    if split == "test" and folds and all(f is not None and f.get("fold") is not None for f in folds):
        return _kfold_row(cell, metrics, scores, folds, root)
    correct = [_correct(run) for run in cell.runs]
    matrix = np.stack(correct) if all(c is not None for c in correct) and split == "test" else None
    ci = bootstrap_ci(matrix) if matrix is not None and metric == "accuracy" else (None, None)
    return _row(cell, metrics, scores, ci, root), matrix


def _row(cell: CellRuns, metrics: list[dict[str, Any]], scores: list[float], ci: tuple[Any, Any],
         root: Path) -> dict[str, Any]:
    params = metrics[0].get("params", {})
    row = {
        "cell": cell.name, "stage": cell.stage, "axes": cell.axes, "seeds": cell.seeds, "n": len(cell.runs),
        "runs": [str(run.relative_to(root)) if run.is_relative_to(root) else str(run) for run in cell.runs],
        "mean": float(np.mean(scores)), "std": float(np.std(scores, ddof=1)) if len(scores) > 1 else 0.0,
        "scores": scores, "ci_low": ci[0], "ci_high": ci[1],
        "trainable": params.get("trainable"), "total": params.get("total"),
        "trainable_pct": params.get("trainable_pct"),
        "wall_time_s": _mean([m.get("wall_time_s") for m in metrics]),
        "train_time_s": _mean([m.get("train_time_s") for m in metrics]),
        "peak_memory_mb": _mean([m.get("peak_memory_mb") for m in metrics]),
        "checkpoint_size_mb": _mean([m.get("checkpoint_size_mb") for m in metrics]),
        "p_value": None, "significance_test": None, "delta": None,
        "data_caveats": list(dict.fromkeys(line for run in cell.runs for line in data_caveats(run))),
        "_model": _model_name(cell.runs[0]),  # read by _against_classic_baselines, then dropped
    }
    return row


KFOLD_CI = "t-interval over the fold scores"
KFOLD_TEST = "paired bootstrap over the pooled per-example outcomes of all folds"


def _kfold_row(cell: CellRuns, metrics: list[dict[str, Any]], scores: list[float], folds: list[dict[str, Any]],
               root: Path) -> tuple[dict[str, Any], np.ndarray | None]:
    """A data.cv cell (its runs: seeds × folds): mean ± std over the fold scores (each averaged over the
    seeds), a t-interval over them, and the (seeds, examples) matrix of the outcomes pooled over the folds
    -- every example is tested once across the folds, so it pairs cells example by example."""
    from scipy.stats import t

    by_fold: dict[int, list[float]] = {}
    by_seed: dict[Any, dict[int, Path]] = {}
    for run, score, fold in zip(cell.runs, scores, folds, strict=True):
        by_fold.setdefault(fold["fold"], []).append(score)
        by_seed.setdefault(runs.read_run_config(run).get("seed"), {})[fold["fold"]] = run
    fold_scores = [float(np.mean(by_fold[k])) for k in sorted(by_fold)]
    k, mean = len(fold_scores), float(np.mean(fold_scores))
    std = float(np.std(fold_scores, ddof=1)) if k > 1 else 0.0
    half = float(t.ppf(0.975, k - 1) * std / np.sqrt(k)) if k > 1 else 0.0
    row = _row(cell, metrics, scores, (mean - half, mean + half), root)
    complete = k == folds[0]["folds"] and all(len(f) == k for f in by_seed.values())
    row.update({"mean": mean, "std": std, "folds": k, "fold_scores": fold_scores, "ci_method": KFOLD_CI,
                "complete_folds": complete})
    return row, _pooled(by_seed) if complete else None


def _pooled(by_seed: dict[Any, dict[int, Path]]) -> np.ndarray | None:
    """Per seed, the fold runs' outcomes joined and ordered by row id: (seeds, all examples)."""
    matrix = []
    for fold_runs in by_seed.values():
        outcomes = [_outcomes(run) for _, run in sorted(fold_runs.items())]
        if any(o is None for o in outcomes):
            return None
        rows = np.concatenate([o[0] for o in outcomes])
        matrix.append(np.concatenate([o[1] for o in outcomes])[np.argsort(rows, kind="stable")])
    return np.stack(matrix)


def build_board(name: str, cells: list[CellRuns], root: Path, metric: str = "accuracy", split: str = "test",
                baseline: str | None = None) -> dict[str, Any]:
    """The leaderboard dict: rows best first, paired tests against ``baseline``, validation curves."""
    rows, matrices = [], {}
    for cell in cells:
        row, matrices[cell.name] = cell_row(cell, metric, split, root)
        rows.append(row)
    if baseline is not None:
        _compare_to(baseline, rows, matrices)
    _against_classic_baselines(rows, matrices, metric in HIGHER_IS_BETTER)
    kfold = [r for r in rows if r.get("folds")]
    for row in kfold:
        if row["p_value"] is not None:
            row["significance_test"] = KFOLD_TEST
    reverse = metric in HIGHER_IS_BETTER
    rows.sort(key=lambda r: r["mean"], reverse=reverse)
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank
    curves = {cell.name: [{"run": str(run.relative_to(root)) if run.is_relative_to(root) else str(run),
                           "points": _curve(run, metric)} for run in cell.runs] for cell in cells}
    cv = {"folds": sorted({r["folds"] for r in kfold}), "std": "over the fold scores (each the mean over seeds)",
          "ci": KFOLD_CI, "paired_test": KFOLD_TEST} if kfold else None
    return {"name": name, "metric": metric, "split": split, "baseline": baseline, "rows": rows, "curves": curves,
            **({"cv": cv} if cv else {})}


def _model_name(run: Path) -> str | None:
    try:
        model = runs.read_run_config(run).get("model") or {}
    except (OSError, ValueError, TexttuneError):
        return None
    return model.get("name") if isinstance(model, dict) else None


def _against_classic_baselines(rows: list[dict[str, Any]], matrices: dict[str, np.ndarray | None],
                               higher_is_better: bool) -> None:
    """Mark the classic baselines' rows (tfidf_lr, nbsvm, embedding_probe) and test every other row
    against the best of them with the paired bootstrap: a model that is not significantly better
    than the linear baseline on the same test examples is not a win, and the board says so."""
    from texttune.models.classic import CLASSIC_CONFIGS

    for row in rows:
        row["classic_baseline"] = row.pop("_model", None) in CLASSIC_CONFIGS
    baselines = [r for r in rows if r["classic_baseline"]]
    if not baselines:
        return
    best = max(baselines, key=lambda r: r["mean"] if higher_is_better else -r["mean"])
    for row in rows:
        if row["classic_baseline"]:
            continue
        a, b = matrices.get(row["cell"]), matrices.get(best["cell"])
        better = (row["mean"] > best["mean"]) if higher_is_better else (row["mean"] < best["mean"])
        p = paired_bootstrap_p(a, b) if a is not None and b is not None and a.shape[1] == b.shape[1] else None
        row["vs_best_baseline"] = {"cell": best["cell"], "delta": row["mean"] - best["mean"], "p_value": p,
                                   "significantly_better": bool(better and p is not None and p < 0.05)}


def _compare_to(baseline: str, rows: list[dict[str, Any]], matrices: dict[str, np.ndarray | None]) -> None:
    base = next((r for r in rows if r["cell"] == baseline), None)
    if base is None:
        raise TexttuneError(f"baseline: no cell named '{baseline}'; cells: {[r['cell'] for r in rows]}")
    for row in rows:
        if row is base:
            continue
        row["delta"] = row["mean"] - base["mean"]
        a, b = matrices.get(row["cell"]), matrices.get(baseline)
        if a is None or b is None or a.shape[1] != b.shape[1]:
            continue  # no per-example outcomes on the same test examples: no paired test
        row["p_value"] = paired_bootstrap_p(a, b)
        row["significance_test"] = "paired bootstrap"
        if len(a) == 1 and len(b) == 1:
            row["p_mcnemar"] = mcnemar_p(a[0], b[0])


# --------------------------------------------------------------------------- writing


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "—"
    return f"{value:.{digits}f}" if isinstance(value, float) else f"{value:,}" if isinstance(value, int) else str(value)


def _p(value: float | None) -> str:
    # 2000 resamples: the smallest p-value the paired bootstrap can give is 0.001.
    return "—" if value is None else "<0.001" if value <= 0.001 else f"{value:.3f}"


def markdown(board: dict[str, Any]) -> str:
    header = ["rank", "cell", f"{board['split']} {board['metric']} (mean ± std)", "95% CI", "Δ vs baseline",
              "p", "vs best classic baseline", "trainable", "wall time (s)", "peak memory (MB)", "checkpoint (MB)",
              "runs", "data caveats"]
    if board.get("cv"):
        header[2] = f"{board['split']} {board['metric']} (mean ± std over folds)"
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    shared = shared_caveats(board["rows"])
    for r in board["rows"]:
        ci = f"{_fmt(r['ci_low'])}–{_fmt(r['ci_high'])}" if r["ci_low"] is not None else "—"
        trainable = f"{_fmt(r['trainable'])} ({_fmt(r['trainable_pct'], 2)}%)" if r["trainable"] is not None else "—"
        delta = "baseline" if r["cell"] == board["baseline"] else (
            f"{r['delta']:+.4f}" if r["delta"] is not None else "—")
        lines.append("| " + " | ".join([
            str(r["rank"]), r["cell"], f"{r['mean']:.4f} ± {r['std']:.4f}", ci, delta, _p(r["p_value"]),
            _vs_baseline(r), trainable, _fmt(r["wall_time_s"], 1), _fmt(r["peak_memory_mb"], 0), _fmt(r["checkpoint_size_mb"], 2),
            str(r["n"]), _caveats(r, shared)]) + " |")
    if shared:
        lines += ["", "Data caveats of every cell (the same splits): " + "; ".join(shared) + "."]
    if board.get("cv"):
        cv = board["cv"]
        lines += ["", f"k-fold ({', '.join(map(str, cv['folds']))} folds): std {cv['std']}; 95% CI: {cv['ci']}; "
                      f"p: {cv['paired_test']}."]
    return "\n".join(lines) + "\n"


def vs_baseline_parts(row: dict[str, Any]) -> tuple[str, str]:
    """(verdict, detail) of a row against the best classic baseline: verdict is "classic baseline",
    "better", "not significantly better" or "" (nothing to compare); the Markdown and the HTML page
    render the same parts."""
    if row.get("classic_baseline"):
        return "classic baseline", ""
    vs = row.get("vs_best_baseline")
    if vs is None:
        return "", ""
    verdict = "better" if vs["significantly_better"] else "not significantly better"
    return verdict, f"{vs['delta']:+.4f} vs {vs['cell']}, p {_p(vs['p_value'])}"


def _vs_baseline(row: dict[str, Any]) -> str:
    verdict, detail = vs_baseline_parts(row)
    if not detail:
        return verdict or "—"
    return f"{'**' + verdict + '**' if verdict != 'better' else verdict} ({detail})"


def shared_caveats(rows: list[dict[str, Any]]) -> list[str]:
    """The data caveats every row has (cells on one set of splits share them), in the first row's order:
    written once under the table instead of in every row. None when there is one row."""
    if len(rows) < 2:
        return []
    common = set.intersection(*(set(r.get("data_caveats") or []) for r in rows))
    return [c for c in rows[0].get("data_caveats") or [] if c in common]


def _caveats(row: dict[str, Any], shared: list[str] = ()) -> str:
    own = [c for c in row.get("data_caveats") or [] if c not in shared]
    text = "; ".join(own).replace("|", "\\|")
    return text or ("as below" if shared else "—")


CSV_COLUMNS = ["rank", "cell", "stage", "n", "mean", "std", "ci_low", "ci_high", "delta", "p_value",
               "significance_test", "classic_baseline", "trainable", "total", "trainable_pct", "wall_time_s", "train_time_s",
               "peak_memory_mb", "checkpoint_size_mb", "data_caveats", "folds"]


def write_board(board: dict[str, Any], out_dir: Path) -> list[Path]:
    """leaderboard.json / .md / .csv in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows({**row, "data_caveats": "; ".join(row.get("data_caveats") or [])} for row in board["rows"])
    paths = [out_dir / "leaderboard.json", out_dir / "leaderboard.md", out_dir / "leaderboard.csv"]
    atomic_write_json(paths[0], board)
    atomic_write_text(paths[1], f"# {board['name']}\n\n" + markdown(board))
    atomic_write_text(paths[2], buffer.getvalue())
    return paths
