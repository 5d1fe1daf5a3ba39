"""``texttune compare SPEC.yaml``: a matrix of runs on equal terms, and its leaderboard.

A spec names a base config, overrides for every cell (``set``), axes and seeds; cells are the cartesian
product of the axes' values, run once per seed. Every cell is an ordinary run directory under one
comparison directory, so the splits, the budget (epochs or steps, early stopping) and the evaluation
cadence are those of the base config for all of them: only what the axes name differs. Stages make a
pipeline: a later stage refers to an earlier stage's run with ``"{stage:NAME}"`` (e.g. in
``init_from``). Rerunning a spec keeps finished cells and resumes interrupted ones.
With ``data.cv.folds`` (and no ``data.cv.fold``) in the cells' config, every cell also runs once per
fold, an implicit axis like the seeds (docs/design.md "k-fold (issue 20)").

    name: trec-strategies
    base: ../quickstart.yaml        # relative to the spec
    set: {train.epochs: 1}
    seeds: [1, 2]
    baseline: full
    axes:
      strategy:                     # a named axis: label -> overrides
        full: {strategy.name: full}
        lora: {strategy.name: lora, train.lr: 1.0e-3}
      model.pooling: [cls, mean]    # a config key: its values are the labels
"""

from __future__ import annotations

import itertools
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator

from texttune import runs
from texttune.config import ConfigError, Section, _nest, _read_with_extends, deep_merge, format_validation_error, read_yaml
from texttune.errors import TexttuneError
from texttune.tasks.classify import ExperimentBase, run_experiment, validate_config

log = logging.getLogger("texttune")
REFERENCE = re.compile(r"^\{stage:([A-Za-z0-9_.-]+)\}$")
Axis = list[Any] | dict[str, dict[str, Any]]


class StageSpec(Section):
    name: str = Field(description="Stage name; later stages refer to its run as {stage:NAME}.")
    base: Path | None = Field(None, description="Config file of this stage; default: the spec's base.")
    set: dict[str, Any] = Field(default_factory=dict, description="Overrides of every cell of this stage.")
    axes: dict[str, Axis] = Field(default_factory=dict, description="Axes of this stage (see the spec's axes).")
    seeds: list[int] | None = Field(None, description="Seeds of this stage; default: the spec's seeds.")


class CompareSpec(Section):
    kind: Literal["compare"] = Field("compare", description="What this file is: a comparison spec.")
    name: str = Field(description="Comparison name: its directory is <output_dir>/<name>.")
    base: Path | None = Field(None, description="Base config file (relative to the spec).")
    set: dict[str, Any] = Field(default_factory=dict, description="Overrides applied to every cell (dotted keys).")
    axes: dict[str, Axis] = Field(
        default_factory=dict,
        description="Axes: a config key with a list of values, or a name with {label: {key: value}} overrides.",
    )
    seeds: list[int] = Field([42], min_length=1, description="Every cell runs once per seed.")
    stages: list[StageSpec] = Field(default_factory=list, description="A pipeline of stages; default: one stage.")
    baseline: str | None = Field(None, description="Cell the others are tested against: a cell of the last stage, or stage:cell of an earlier one (baselines:tfidf_lr).")
    metric: Literal["accuracy", "f1_macro", "f1_micro", "f1_weighted", "f1"] = Field(
        "accuracy", description="Leaderboard score (confidence intervals and tests for accuracy).")
    split: Literal["test", "validation"] = Field("test", description="Split the leaderboard scores.")
    output_dir: Path | None = Field(None, description="Parent of the comparison directory; default: the base's.")

    @field_validator("stages")
    @classmethod
    def _unique(cls, stages: list[StageSpec]) -> list[StageSpec]:
        names = [s.name for s in stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be unique, got {names}")
        return stages


@dataclass
class Cell:
    stage: str
    name: str  # the axes' labels joined by "+" ("main" for a stage without axes)
    seed: int
    axes: dict[str, str]
    overrides: dict[str, Any]
    base: Path | None
    config: ExperimentBase | None = None
    fold: int | None = None  # data.cv: the fold this run tests on (an implicit axis, as the seeds)

    @property
    def folder_name(self) -> str:
        return f"{self.name}-seed{self.seed}" + (f"-fold{self.fold}" if self.fold is not None else "")


def load_spec(path: Path) -> CompareSpec:
    try:
        data = read_yaml(path)  # bounded, duplicate keys refused, errors name the file and line
    except OSError as err:
        raise TexttuneError(f"{path}: cannot read the spec ({err.strerror or err})") from None
    if not data:
        raise TexttuneError(f"{path}: a spec is a mapping (name, base, axes, seeds, ...)")
    try:
        return CompareSpec.model_validate(data)
    except ValidationError as err:
        # Every key of the spec comes from the spec file: errors read "axes.x: ... in SPEC.yaml".
        origins = {".".join(str(p) for p in item["loc"][:i]): str(path)
                   for item in err.errors() for i in range(1, len(item["loc"]) + 1)}
        raise ConfigError(format_validation_error(err, CompareSpec, origins)) from None


def load_checked_spec(path: Path) -> CompareSpec:
    """The spec, with every cell's config validated and its references and baseline checked, as
    ``compare`` does before it runs anything (``texttune config validate``)."""
    spec = load_spec(path)
    expand(spec, path)
    return spec


def _axis_entries(name: str, axis: Axis) -> list[tuple[str, dict[str, Any], str]]:
    """(label, overrides, where) for each value of an axis."""
    if isinstance(axis, list):
        return [(str(value), {name: value}, f"axes.{name}") for value in axis]
    return [(label, dict(overrides or {}), f"axes.{name}.{label}") for label, overrides in axis.items()]


def expand(spec: CompareSpec, spec_path: Path) -> list[list[Cell]]:
    """Every cell of every stage, each config validated (nothing runs before all are valid)."""
    stages = spec.stages or [StageSpec(name="main", axes=spec.axes)]
    out: list[list[Cell]] = []
    for stage in stages:
        base = stage.base or spec.base
        base = (spec_path.parent / base) if base is not None else None
        axes = [_axis_entries(name, axis) for name, axis in stage.axes.items()]
        cells = []
        for combo in itertools.product(*axes) if axes else [()]:
            label = "+".join(entry[0] for entry in combo) or "main"
            overrides = {**spec.set, **stage.set}
            for _, entry_overrides, _ in combo:
                overrides.update(entry_overrides)
            wheres = ", ".join(entry[2] for entry in combo) or "set"
            for seed in stage.seeds or spec.seeds:
                cell = Cell(stage.name, label, seed, {n: e[0] for n, e in zip(stage.axes, combo)},
                            {**overrides, "seed": seed}, base)
                cell.config = cell_config(cell, f"{spec_path} ({stage.name}: {wheres})")
                cells.extend(_fold_cells(cell, f"{spec_path} ({stage.name}: {wheres})"))
        out.append(cells)
    _check_references(out, spec_path)
    _check_baseline(spec, out, spec_path)
    return out


def _check_baseline(spec: CompareSpec, stages: list[list[Cell]], spec_path: Path) -> None:
    """``baseline`` names a leaderboard cell (a last-stage cell, or stage:cell of an earlier stage),
    checked before anything runs rather than when the board is built, hours later."""
    if spec.baseline is None:
        return
    names = list(dict.fromkeys(board_label(g, stages[-1], c.name) for g in stages for c in g))
    if spec.baseline not in names:
        raise ConfigError(f"baseline: no cell named '{spec.baseline}' in {spec_path}; cells: {', '.join(names)}")


def _fold_cells(cell: Cell, where: str) -> list[Cell]:
    """A cell whose config has data.cv.folds but no data.cv.fold: one run per fold (seeds × folds)."""
    cv = cell.config.data.cv
    if cv is None or cv.fold is not None:
        return [cell]
    out = []
    for fold in range(cv.folds):
        run = Cell(cell.stage, cell.name, cell.seed, cell.axes, {**cell.overrides, "data.cv.fold": fold},
                   cell.base, fold=fold)
        run.config = cell_config(run, where)
        out.append(run)
    return out


def cell_config(cell: Cell, where: str, references: dict[str, str] | None = None) -> ExperimentBase:
    """The cell's config: base file ← overrides; errors name the key and the spec entry that set it."""
    merged: dict[str, Any] = {}
    origins: dict[str, str] = {}
    if cell.base is not None:
        data, file_origins = _read_with_extends(cell.base)
        merged = deep_merge(merged, data)
        origins.update({k: str(v) for k, v in file_origins.items()})
    for key, value in cell.overrides.items():
        if references and isinstance(value, str) and REFERENCE.match(value):
            value = references[REFERENCE.match(value).group(1)]
        path = key.split(".")
        merged = deep_merge(merged, _nest(path, value))
        for i in range(1, len(path) + 1):
            origins[".".join(path[:i])] = where
    return validate_config(merged, origins)


def _check_references(stages: list[list[Cell]], spec_path: Path) -> None:
    seen: set[str] = set()
    for cells in stages:
        for cell in cells:
            for key, value in cell.overrides.items():
                match = REFERENCE.match(value) if isinstance(value, str) else None
                if match and match.group(1) not in seen:
                    raise TexttuneError(f"{spec_path}: {key}: {value} names no earlier stage "
                                        f"(earlier: {sorted(seen) or 'none'})")
        seen.add(cells[0].stage)


# --------------------------------------------------------------------------- running


def comparison_dir(spec: CompareSpec, spec_path: Path, stages: list[list[Cell]], overrides=()) -> Path:
    """``<output_dir>/<name>``: created with a copy of the spec (and the --set items), or reused to
    resume the same spec."""
    parent = spec.output_dir or stages[-1][0].config.output_dir
    folder = Path(parent) / spec.name
    text = spec_path.read_text(encoding="utf-8") + "".join(f"# --set {item}\n" for item in overrides)
    saved = folder / "spec.yaml"
    if folder.exists():
        if not saved.is_file() or saved.read_text(encoding="utf-8") != text:
            raise TexttuneError(f"{folder}: holds a different comparison (its spec.yaml differs from {spec_path}); "
                                "rename the spec's name or set output_dir")
        return folder
    from texttune.io import atomic_write_text

    folder.mkdir(parents=True)
    atomic_write_text(saved, text)
    return folder


def finished_run(folder: Path) -> Path | None:
    done = sorted(p for p in folder.glob("*") if runs.is_finished(p)) if folder.is_dir() else []
    return done[-1] if done else None


def resumable_run(folder: Path) -> Path | None:
    partial = sorted(p for p in folder.glob("*") if runs.is_resumable(p)) if folder.is_dir() else []
    return partial[-1] if partial else None


def run_cell(cell: Cell, folder: Path, references: dict[str, str], where: str, callbacks=None) -> Path:
    """The cell's finished run: kept if it exists, resumed if interrupted after a checkpoint, else run
    (an ordinary classification run through ``runs.run_task``)."""
    done = finished_run(folder)
    if done is not None:
        log.info("%s/%s: finished earlier, kept (%s)", cell.stage, cell.folder_name, done)
        return done
    partial = resumable_run(folder)
    if partial is not None:
        log.info("%s/%s: resuming %s", cell.stage, cell.folder_name, partial)
        return run_experiment(resume=partial, callbacks=callbacks).run_dir
    config = cell_config(cell, where, references)
    config = config.model_copy(update={"output_dir": folder, "name": cell.folder_name})
    return run_experiment(config, callbacks=callbacks).run_dir


def run_comparison(spec_path: str | Path, callbacks=None, overrides: list[str] | tuple[str, ...] = (),
                   parallel: int = 1, executor: str = "local") -> tuple[Path, dict[str, Any]]:
    """Run (or resume) every cell of the spec, then write the leaderboard, charts and comparison.html.
    ``overrides`` (``key=value``, as ``--set``) apply to every cell of every stage. ``parallel`` > 1
    runs up to that many cells of a stage at once, each in a worker process (stages still run in
    order: a later one refers to an earlier one's runs); ``callbacks`` then cannot be used.
    ``executor="ray"`` sends the cells to a Ray cluster instead (``parallel`` at a time)."""
    from texttune.config import parse_override

    if parallel < 1:
        raise TexttuneError(f"--parallel: expected a number of workers >= 1, got {parallel}")
    if executor not in ("local", "ray"):
        raise TexttuneError(f"--executor: expected local or ray, got {executor!r}")
    ray = _import_ray() if executor == "ray" else None
    if (parallel > 1 or ray) and callbacks:
        raise ValueError("callbacks live in this process: they cannot run in worker processes (parallel > 1)")
    spec_path = Path(spec_path)
    spec = load_spec(spec_path)
    for item in overrides:
        key, value = parse_override(item)
        spec.set[".".join(key)] = value
    stages = expand(spec, spec_path)
    root = comparison_dir(spec, spec_path, stages, overrides)
    references: dict[str, str] = {}
    finished: dict[tuple[str, str], list[tuple[int, Path]]] = {}
    total, done = sum(len(c) for c in stages), 0
    for cells in stages:
        where = f"{spec_path} ({cells[0].stage})"
        if ray is not None:
            stage_runs = _run_on_ray(ray, cells, root, references, where, parallel, done, total)
        elif parallel == 1:
            stage_runs = _run_here(cells, root, references, where, callbacks, done, total)
        else:
            stage_runs = _run_in_workers(cells, root, references, where, parallel, done, total)
        done += len(cells)
        for cell, run in zip(cells, stage_runs):
            finished.setdefault((cell.stage, cell.name), []).append((cell.seed, run))
            references.setdefault(f"{cell.stage}@{cell.seed}", str(run))
            references.setdefault(cell.stage, str(run))
    board = leaderboard(spec, stages, finished, root)
    return root, board


def _cell_folder(root: Path, cell: Cell) -> Path:
    return root / "cells" / cell.stage / cell.folder_name


def _run_here(cells: list[Cell], root: Path, references: dict[str, str], where: str, callbacks,
              done: int, total: int) -> list[Path]:
    """One stage's cells one after the other, in this process."""
    out = []
    for i, cell in enumerate(cells, done + 1):
        log.info("== cell %d/%d: %s/%s", i, total, cell.stage, cell.folder_name)
        out.append(run_cell(cell, _cell_folder(root, cell), _references_for(cell, references), where, callbacks))
    return out


CELL_LOG = "cell.log"  # in a cell's folder (beside its runs): the log of the workers that ran it


def _run_in_workers(cells: list[Cell], root: Path, references: dict[str, str], where: str, parallel: int,
                    done: int, total: int) -> list[Path]:
    """One stage's cells, ``parallel`` at a time, each in a worker process (``cell_worker``) that runs
    it exactly as ``run_cell`` does here; each worker's lines go to the cell's log, one line per cell
    started and finished here."""
    from texttune import workers

    slots = workers.slots(parallel)
    jobs = [workers.Job(p["label"], __name__, cell_worker.__name__, p, Path(p["folder"]) / CELL_LOG)
            for p in _payloads(cells, root, references, where, slots[0].num_threads, done)]
    numbers = {job.label: job.payload["number"] for job in jobs}

    def started(job: workers.Job, pid: int) -> None:
        log.info("== cell %d/%d: %s started (worker pid %d, log %s)", numbers[job.label], total, job.label, pid,
                 job.log)

    def ended(job: workers.Job, seconds: float) -> None:
        log.info("   cell %d/%d: %s finished in %.0f s", numbers[job.label], total, job.label, seconds)

    workers.run_jobs(jobs, slots, started, ended)
    return [finished_run(_cell_folder(root, cell)) for cell in cells]


def _payloads(cells: list[Cell], root: Path, references: dict[str, str], where: str, num_threads: int | None,
              done: int) -> list[dict[str, Any]]:
    """The jobs (JSON) of a stage's cells that have yet to finish; finished cells are kept, no worker
    started for them."""
    out = []
    for number, cell in enumerate(cells, done + 1):
        folder = _cell_folder(root, cell)
        label = f"{cell.stage}/{cell.folder_name}"
        if finished_run(folder) is not None:
            log.info("== cell %d: %s: finished earlier, kept (%s)", number, label, finished_run(folder))
            continue
        out.append({"label": label, "number": number, "cell": _cell_record(cell, num_threads),
                    "folder": str(folder), "references": _references_for(cell, references), "where": where})
    return out


def _cell_record(cell: Cell, num_threads: int | None) -> dict[str, Any]:
    """The cell as JSON for its worker, with the worker's share of the cores as ``train.num_threads``
    unless the cell's config sets it (a spec that pins threads knows what it measures)."""
    overrides = dict(cell.overrides)
    if num_threads is not None and "num_threads" not in cell.config.train.model_fields_set:
        overrides["train.num_threads"] = num_threads
    return {"stage": cell.stage, "name": cell.name, "seed": cell.seed, "axes": cell.axes, "overrides": overrides,
            "base": str(cell.base) if cell.base is not None else None, "fold": cell.fold}


def cell_worker() -> None:
    """Entry of a worker process: run the cell of the job on stdin; log lines go to stdout (the cell's
    log); a TexttuneError ends the log with its message for the parent, Ctrl-C ends it quietly."""
    import sys

    from texttune.workers import job_input, report_error

    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        run_payload(job_input())
    except TexttuneError as error:
        report_error(str(error))
        sys.exit(error.exit_code)
    except KeyboardInterrupt:
        log.info("interrupted")
        sys.exit(130)


def run_payload(job: dict[str, Any]) -> Path:
    """In a worker (a process, a Ray task): the cell of ``job`` run by ``run_cell``, as it would run here."""
    import os

    log.info("worker pid %d: %s", os.getpid(), job["label"])
    record = job["cell"]
    cell = Cell(**{**record, "base": Path(record["base"]) if record["base"] else None})
    run = run_cell(cell, Path(job["folder"]), job["references"], job["where"])
    log.info("worker pid %d: finished %s", os.getpid(), run)
    return run


# --------------------------------------------------------------------------- on a Ray cluster


def _import_ray():
    try:
        import ray
    except ImportError:
        raise TexttuneError("--executor ray needs the ray package: pip install 'texttune[ray]'") from None
    return ray


def _ray_cell(job: dict[str, Any]) -> tuple[str | None, str | None]:
    """A Ray task: (the cell's run, None), or (None, the message of its TexttuneError); the cell's log
    is a file in its folder, as with local workers (the folder is on storage the cluster shares)."""
    handler = logging.FileHandler(Path(job["folder"]) / CELL_LOG, encoding="utf-8", delay=True)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        Path(job["folder"]).mkdir(parents=True, exist_ok=True)
        return str(run_payload(job)), None
    except TexttuneError as error:
        return None, f"{job['label']}: {error}"
    finally:
        log.removeHandler(handler)
        handler.close()


def _run_on_ray(ray, cells: list[Cell], root: Path, references: dict[str, str], where: str, parallel: int,
                done: int, total: int) -> list[Path]:
    """One stage's cells as Ray tasks, ``parallel`` at a time: one GPU each when the cluster has GPUs
    (Ray sets CUDA_VISIBLE_DEVICES), else the cluster's cores split as for local workers."""
    if not ray.is_initialized():
        ray.init()  # RAY_ADDRESS when set (a cluster), else a local instance
    resources = ray.cluster_resources()
    threads = None if resources.get("GPU") else max(1, int(resources.get("CPU", 1)) // parallel)
    task = ray.remote(_ray_cell).options(**({"num_gpus": 1} if threads is None else {"num_cpus": threads}))
    pending, running, failure = _payloads(cells, root, references, where, threads, done), {}, None
    try:
        while pending or running:
            while pending and len(running) < parallel and failure is None:
                job = pending.pop(0)
                running[task.remote(job)] = job
                log.info("== cell %d/%d: %s started on Ray", job["number"], total, job["label"])
            if not running:
                break
            (ready,), _ = ray.wait(list(running), num_returns=1)
            job = running.pop(ready)
            run, message = ray.get(ready)
            failure = failure or message
            if run is not None:
                log.info("   cell %d/%d: %s finished", job["number"], total, job["label"])
    except KeyboardInterrupt:
        for ref in running:
            ray.cancel(ref)  # a KeyboardInterrupt in the task: the run stops as on a terminal
        raise
    if failure is not None:
        raise TexttuneError(failure)
    return [finished_run(_cell_folder(root, cell)) for cell in cells]


def _references_for(cell: Cell, references: dict[str, str]) -> dict[str, str]:
    """{stage} → the run of that stage with the same seed when it ran with this seed, else its first run."""
    out = dict(references)
    for key, value in references.items():
        if key.endswith(f"@{cell.seed}"):
            out[key.rsplit("@", 1)[0]] = value
    return out


def leaderboard(spec: CompareSpec, stages: list[list[Cell]], finished, root: Path) -> dict[str, Any]:
    """Cells of the last stage, and of earlier stages scored on the same test data (e.g. baselines)."""
    from texttune.reports.comparison import render_comparison
    from texttune.reports.leaderboard import CellRuns, build_board, write_board

    last = stages[-1]
    target = _test_key([r for _, r in finished[(last[0].stage, last[0].name)]])
    cells = []
    for group in stages:
        for name in dict.fromkeys(c.name for c in group):
            runs = finished[(group[0].stage, name)]
            if group is not last and _test_key([r for _, r in runs]) != target:
                continue  # another task (a transfer source): not on this leaderboard
            cell = next(c for c in group if c.name == name)
            label = board_label(group, last, name)
            cells.append(CellRuns(label, [r for _, r in runs], cell.axes, cell.stage, [s for s, _ in runs]))
    board = build_board(spec.name, cells, root, spec.metric, spec.split, spec.baseline)
    write_board(board, root)
    render_comparison(board, root)
    return board


def board_label(group: list[Cell], last: list[Cell], name: str) -> str:
    """A cell's name on the leaderboard: as is in the last stage, stage:name in earlier ones."""
    return name if group is last else f"{group[0].stage}:{name}"


def _test_key(run_dirs: list[Path]) -> tuple[str | None, ...]:
    """The test data of a cell's runs: one fingerprint (its seeds share a test split), or one per fold
    under data.cv -- two cells are scored on the same data when their keys are equal."""
    return tuple(sorted({_test_fingerprint(run) or "" for run in run_dirs}))


def _test_fingerprint(run: Path) -> str | None:
    data = runs.read_json(run, runs.DATA)
    splits = data.get("splits") or {}
    split = splits.get("test") or splits.get("validation") or {}
    return split.get("fingerprint")


# --------------------------------------------------------------------------- existing runs


def compare_runs(run_dirs: list[Path], baseline: str | None = None, output: Path | None = None,
                 metric: str | None = None) -> dict[str, Any]:
    """A leaderboard of finished runs. Runs with the same resolved config but for the seed are seeds of
    one cell (named by the config's name, with its setting's hash when two settings share a name).
    Runs of several kinds: the classification runs are ranked, the others are named and left out."""
    from texttune.reports.leaderboard import CellRuns, build_board, write_board

    by_kind: dict[str, list[Path]] = {}
    for run in run_dirs:
        if not runs.is_finished(run):
            raise TexttuneError(f"{run}: not a finished run (no {runs.METRICS})")
        by_kind.setdefault(runs.read_run_config(run)["kind"], []).append(run)
    kind = "classify" if "classify" in by_kind else sorted(by_kind)[0]
    for other, left in sorted(by_kind.items()):
        if other != kind:
            log.warning("left out %d '%s' run(s) (%s): one leaderboard ranks runs of one kind", len(left), other,
                        ", ".join(str(r) for r in left))
    chosen = by_kind[kind]
    groups = _cells_by_setting(chosen)
    split, default_metric, _ = runs.headline(kind, runs.read_json(chosen[0], runs.METRICS))
    if kind == "classify":
        split = "test" if all(runs.describe_run(r).get("split") == "test" for r in chosen) else "validation"
        if len({_test_key(rs) for rs in groups.values()}) > 1:
            log.warning("the runs were not evaluated on the same %s data: scores are not comparable", split)
    root = output if output is not None else Path.cwd()
    board = build_board("runs", [CellRuns(n, rs) for n, rs in groups.items()], root, metric or default_metric,
                        split, baseline)
    if output is not None:
        from texttune.reports.comparison import render_comparison

        if output.exists():
            raise TexttuneError(f"{output}: already exists; give a new folder")
        output.mkdir(parents=True)
        write_board(board, output)
        render_comparison(board, output)
    return board


def _cells_by_setting(run_dirs: list[Path]) -> dict[str, list[Path]]:
    """{cell name: runs}: one cell per resolved config (seeds pooled), named by the config's name."""
    settings: dict[tuple[str, str], list[Path]] = {}
    for run in run_dirs:
        name = runs.read_run_config(run).get("name") or run.name
        settings.setdefault((name, runs.setting_of(run)), []).append(run)
    names = [name for name, _ in settings]
    return {(name if names.count(name) == 1 else f"{name} [{setting}]"): group
            for (name, setting), group in settings.items()}
