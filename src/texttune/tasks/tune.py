"""``texttune tune SPEC.yaml``: hyper-parameter search with Optuna, each trial an ordinary run.

A spec names a base config (a file and/or ``set`` overrides, as a comparison does), a search space over
any config key, the metric (default: the base's ``train.metric``, its direction from
``evaluation.metrics``), the number of trials, a sampler and a pruner. Every trial is a classification
run through ``runs.run_task`` under ``<output_dir>/tune-<name>/trials/trial-NNN/``; a callback reports
each validation evaluation to the trial, and a pruned trial stops as early stopping does (its
``metrics.json`` says ``stop_reason: pruned``). The study lives in a SQLite file (Optuna's RDB storage),
so ``--resume`` continues it and several processes can share it. Trials are selected on the validation
split; the best config is written as ``best.yaml`` and re-run against the base over ``seeds`` by
``texttune compare``, whose leaderboard scores the test split.

    kind: tune
    name: trec-lr
    base: quickstart.yaml            # relative to the spec
    set: {train.epochs: 2}
    metric: accuracy                 # default: the base's train.metric
    trials: 20
    sampler: tpe                     # or random, or {name: tpe, seed: 0, n_startup_trials: 10}
    pruner: median                   # none, or {name: threshold, lower: 0.3}
    search:
      train.lr: {type: float, low: 1.0e-5, high: 1.0e-3, log: true}
      train.per_device_batch_size: {type: categorical, choices: [16, 32]}
      model.head.dropout: {type: float, low: 0.0, high: 0.3}
    seeds: [1, 2, 3]                 # the final comparison: best vs base
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from texttune.config import (
    ConfigError,
    Section,
    _nest,
    _read_with_extends,
    _short_repr,
    deep_merge,
    format_validation_error,
    read_yaml,
)
from texttune.errors import TexttuneError
from texttune.evaluation.metrics import METRIC_DIRECTIONS
from texttune.io import atomic_write_text
from texttune.registry import suggest
from texttune.tasks.classify import ExperimentBase, run_experiment
from texttune.tasks.compare import Cell, cell_config
from texttune.training.callbacks import Callback

log = logging.getLogger("texttune")

SPEC = "spec.yaml"  # in the tune folder: the spec this study runs (paths absolute, --set folded in)
STUDY = "study.db"  # the default study file, in the tune folder
TRIALS = "trials"  # trials/trial-NNN/<run directory>
TRIALS_TABLE = "trials.csv"
BEST = "best.yaml"
FINAL = "final.yaml"  # the comparison spec of the final re-run (texttune compare can rerun it)

# --------------------------------------------------------------------------- the spec

Scalar = Union[bool, int, float, str, None]  # noqa: UP007  (what Optuna's categorical choices may hold)


class FloatParam(Section):
    type: Literal["float"] = "float"
    low: float = Field(description="Lowest value.")
    high: float = Field(description="Highest value.")
    log: bool = Field(False, description="Sample on a log scale (low > 0).")
    step: float | None = Field(None, gt=0, description="Only low, low + step, ... (not with log).")

    @model_validator(mode="after")
    def _range(self):
        # Each message starts with the field it is about: the error reads search.KEY.high: ...
        if self.high <= self.low:
            raise ValueError(f"high: must be above low ({self.low}), got {self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"log: a log scale needs low > 0, got low {self.low}")
        if self.log and self.step is not None:
            raise ValueError("step: cannot be combined with log: true")
        return self


class IntParam(FloatParam):
    type: Literal["int"] = "int"  # type: ignore[assignment]
    low: int = Field(description="Lowest value.")  # type: ignore[assignment]
    high: int = Field(description="Highest value.")  # type: ignore[assignment]
    step: int | None = Field(  # type: ignore[assignment]
        None, gt=0, description="Only low, low + step, ... (default 1; not with log).")


class CategoricalParam(Section):
    type: Literal["categorical"] = "categorical"
    choices: list[Scalar] = Field(min_length=1, description="The values to choose from.")

    @field_validator("choices")
    @classmethod
    def _distinct(cls, choices: list[Scalar]) -> list[Scalar]:
        if len({json.dumps(c) for c in choices}) != len(choices):
            raise ValueError(f"every choice once, got {choices}")
        return choices


PARAM_TYPES: dict[str, type[Section]] = {"float": FloatParam, "int": IntParam, "categorical": CategoricalParam}
Param = Annotated[Union[FloatParam, IntParam, CategoricalParam], Field(discriminator="type")]  # noqa: UP007
Sampler = Annotated[Union["TpeSampler", "RandomSampler"], Field(discriminator="name")]
Pruner = Annotated[Union["MedianPruner", "ThresholdPruner", "NoPruner"], Field(discriminator="name")]


class TpeSampler(Section):
    name: Literal["tpe"] = "tpe"
    seed: int = Field(0, description="Seed of the sampler: trial n draws with seed + n.")
    n_startup_trials: int = Field(10, ge=0, description="Random trials before TPE models the results.")


class RandomSampler(Section):
    name: Literal["random"] = "random"
    seed: int = Field(0, description="Seed of the sampler: trial n draws with seed + n.")


class MedianPruner(Section):
    name: Literal["median"] = "median"
    n_startup_trials: int = Field(5, ge=0, description="Finished trials before any is pruned.")
    n_warmup_steps: int = Field(0, ge=0, description="Optimizer steps of a trial before it may be pruned.")
    interval_steps: int = Field(1, gt=0, description="Steps between pruning checks.")


class ThresholdPruner(Section):
    name: Literal["threshold"] = "threshold"
    lower: float | None = Field(None, description="Prune a trial whose metric falls below this.")
    upper: float | None = Field(None, description="Prune a trial whose metric rises above this.")
    n_warmup_steps: int = Field(0, ge=0, description="Optimizer steps of a trial before it may be pruned.")
    interval_steps: int = Field(1, gt=0, description="Steps between pruning checks.")

    @model_validator(mode="after")
    def _bounds(self):
        if self.lower is None and self.upper is None:
            raise ValueError("give lower, upper or both")
        if self.lower is not None and self.upper is not None and self.lower > self.upper:
            raise ValueError(f"lower ({self.lower}) is above upper ({self.upper})")
        return self


class NoPruner(Section):
    name: Literal["none"] = "none"


class TuneSpec(Section):
    kind: Literal["tune"] = Field("tune", description="What this file is: a hyper-parameter search.")
    name: str = Field(description="Study name: its folder is <output_dir>/tune-<name>.")
    base: Path | None = Field(None, description="Base config file (relative to the spec).")
    set: dict[str, Any] = Field(default_factory=dict, description="Overrides of every trial (dotted keys).")
    search: dict[str, Param] = Field(default_factory=dict, description="Config key -> {type, low, high, ...}.")
    metric: str | None = Field(None, description="Validation metric to optimise; default: the base's train.metric.")
    trials: int = Field(20, gt=0, description="Finished (complete or pruned) trials the study runs to.")
    sampler: Sampler = Field(default_factory=TpeSampler, description="tpe or random (or {name, seed, ...}).")
    pruner: Pruner = Field(default_factory=MedianPruner, description="median, threshold or none (or {name, ...}).")
    enqueue: list[dict[str, Any]] = Field(
        default_factory=list, description="Points tried first, in order: {key: value} of search keys.")
    study: str | None = Field(None, description="SQLite file (relative to the spec) or a storage URL; "
                                                "default: study.db in the tune folder.")
    seeds: list[int] = Field([1, 2, 3], min_length=1, description="Seeds of the final re-run (best vs base).")
    final: bool = Field(True, description="Re-run the best config and the base over seeds with texttune compare.")
    output_dir: Path | None = Field(None, description="Parent of the tune folder; default: the base's output_dir.")

    @field_validator("sampler", "pruner", mode="before")
    @classmethod
    def _named(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value  # `pruner: median` = {name: median}

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str | None) -> str | None:
        if value is not None and value not in METRIC_DIRECTIONS:
            raise ValueError(f"unknown metric '{value}'{suggest(value, list(METRIC_DIRECTIONS))}; "
                             f"known: {', '.join(sorted(METRIC_DIRECTIONS))}")
        return value


def load_spec(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> TuneSpec:
    """The spec, validated: its own keys, each search entry, and every search key against the
    experiment config (a typo fails here naming it, before any trial). ``overrides`` (``key=value``, as
    ``--set``) join its ``set``. Paths come back absolute and ``metric`` filled in."""
    from texttune.config import parse_override

    path = Path(path)
    data = read_yaml(path)  # bounded, duplicate keys refused, errors name the file and line
    if not data:
        raise TexttuneError(f"{path}: a tune spec is a mapping (name, base, search, trials, ...)")
    params, lines = _parse_search(data.get("search"), path)
    try:
        spec = TuneSpec.model_validate({**data, "search": params})
    except ValidationError as err:
        origins = {".".join(str(p) for p in item["loc"][:i]): str(path)
                   for item in err.errors() for i in range(1, len(item["loc"]) + 1)}
        lines += format_validation_error(err, TuneSpec, origins).splitlines()
    if lines:
        raise ConfigError("\n".join(lines[:20]))
    for item in overrides:
        key, value = parse_override(item)
        spec.set[".".join(key)] = value
    if spec.base is not None:
        spec.base = (path.parent / spec.base).resolve()
    if spec.study is not None and "://" not in spec.study:
        spec.study = str((path.parent / spec.study).resolve())
    base = trial_config(spec, {}, f"{path} (set)")
    spec.metric = spec.metric or base.train.metric
    _check_search(spec, path)
    return spec


def _parse_search(raw: Any, path: Path) -> tuple[dict[str, Section], list[str]]:
    """Each ``search`` entry as its parameter class, and one error line per problem, naming the key."""
    if not isinstance(raw, dict) or not raw:
        example = "train.lr: {type: float, low: 1.0e-5, high: 1.0e-3, log: true}"
        return {}, [f"search: give at least one config key to search, e.g. {example} in {path}"]
    params, lines = {}, []
    for key, entry in raw.items():
        where = f"search.{key}"
        if not isinstance(entry, dict):
            lines.append(f"{where}: expected a mapping with a type ({', '.join(PARAM_TYPES)}), got "
                         f"{_short_repr(entry)} in {path}")
            continue
        kind = entry.get("type")
        if kind not in PARAM_TYPES:
            lines.append(f"{where}.type: unknown type {kind!r}{suggest(str(kind), list(PARAM_TYPES))}; expected one "
                         f"of {', '.join(PARAM_TYPES)} in {path}")
            continue
        try:
            params[key] = PARAM_TYPES[kind].model_validate(entry)
        except ValidationError as err:
            for line in format_validation_error(err, PARAM_TYPES[kind], {}).splitlines():
                # "low: ... in the defaults" -> "search.KEY.low: ... in SPEC"; the range checks name their field
                message = line.rsplit(" in the defaults", 1)[0].replace("(top level): ", "")
                lines.append(f"{where}.{message} in {path}")
    return params, lines


RESERVED = ("name", "output_dir", "kind")  # each trial's own: its folder and name


def _check_search(spec: TuneSpec, path: Path) -> None:
    """Every search key set to each end of its range (each choice), and every enqueued point, on top of
    the base: a key the experiment config does not have fails naming it and the spec entry."""
    for key, param in spec.search.items():
        if key in RESERVED:
            raise ConfigError(f"search.{key}: set by tune for each trial (its run folder) in {path}")
        probes = param.choices if isinstance(param, CategoricalParam) else [param.low, param.high]
        for value in probes:
            trial_config(spec, {key: value}, f"{path} (search.{key})")
    for i, point in enumerate(spec.enqueue):
        for key, value in point.items():
            if key not in spec.search:
                raise ConfigError(f"enqueue[{i}].{key}: not a search key{suggest(key, list(spec.search))} "
                                  f"(search: {', '.join(spec.search)}) in {path}")
            if not _contains(spec.search[key], value):
                raise ConfigError(f"enqueue[{i}].{key}: {value!r} is outside search.{key} in {path}")
        trial_config(spec, point, f"{path} (enqueue[{i}])")


def _contains(param: Section, value: Any) -> bool:
    if isinstance(param, CategoricalParam):
        return value in param.choices
    return isinstance(value, (int, float)) and not isinstance(value, bool) and param.low <= value <= param.high


def merged_config(spec: TuneSpec, params: dict[str, Any]) -> dict[str, Any]:
    """base file (extends flattened) ← set ← params as one mapping, as ``trial_config`` merges them."""
    merged: dict[str, Any] = _read_with_extends(spec.base)[0] if spec.base is not None else {}
    for key, value in {**spec.set, **params}.items():
        merged = deep_merge(merged, _nest(key.split("."), value))
    return merged


def trial_config(spec: TuneSpec, params: dict[str, Any], where: str) -> ExperimentBase:
    """base ← set ← params, built as a comparison builds a cell (so the final re-run matches)."""
    cell = Cell("tune", "trial", 0, {}, {**spec.set, **params}, spec.base)
    return cell_config(cell, where)


# --------------------------------------------------------------------------- the study


def _import_optuna():
    try:
        import optuna
    except ImportError:
        raise TexttuneError("texttune tune needs optuna: pip install 'texttune[tune]'") from None
    # Optuna logs a failed trial's traceback; texttune says what failed, once (its own log lines and errors).
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    return optuna


def storage_url(spec: TuneSpec, folder: Path) -> str:
    if spec.study is not None and "://" in spec.study:
        return spec.study
    path = Path(spec.study) if spec.study is not None else folder / STUDY
    return f"sqlite:///{path.resolve()}"


def open_study(optuna, spec: TuneSpec, folder: Path):
    """The study (created, or loaded to continue); its metric and base config must be this spec's."""
    import warnings

    from sqlalchemy.exc import SQLAlchemyError

    url = storage_url(spec, folder)
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats are "experimental"
        # Several processes may write one SQLite file: wait for its lock instead of failing; a process that
        # dies mid-trial stops sending heartbeats and its trial is marked failed by the next one to start.
        try:
            storage = optuna.storages.RDBStorage(
                url, engine_kwargs={"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {},
                heartbeat_interval=60, grace_period=180)
        except SQLAlchemyError as err:
            raise TexttuneError(f"{url}: cannot open the study ({getattr(err, 'orig', None) or err})") from None
    direction = "maximize" if METRIC_DIRECTIONS[spec.metric] == "max" else "minimize"
    study = optuna.create_study(storage=storage, study_name=spec.name, direction=direction, load_if_exists=True,
                                pruner=_pruner(optuna, spec.pruner))
    setting = {"metric": spec.metric, "base_config": _base_hash(spec)}
    for key, value in setting.items():
        recorded = study.user_attrs.get(key)
        if recorded is not None and recorded != value:
            raise TexttuneError(f"{url}: study '{spec.name}' was run with {key} {recorded}, this spec has {value}; "
                                "give the spec another name to start a new study")
        study.set_user_attr(key, value)
    study.sampler = _sampler(optuna, spec.sampler)
    return study


def _sampler(optuna, cfg: Section):
    """The spec's sampler, made afresh for every trial with seed + the trial's number: a trial's draws
    depend on the seed, its number and the study's history only, so a resumed study draws what one
    uninterrupted process would, and processes sharing a study never draw alike."""
    def make(seed: int):
        if cfg.name == "tpe":
            return optuna.samplers.TPESampler(seed=seed, n_startup_trials=cfg.n_startup_trials)
        return optuna.samplers.RandomSampler(seed=seed)

    class PerTrialSeed(optuna.samplers.BaseSampler):
        def __init__(self) -> None:
            self.inner = make(cfg.seed)

        def before_trial(self, study, trial) -> None:  # Study.ask: the trial has its number
            self.inner = make(cfg.seed + trial.number)
            self.inner.before_trial(study, trial)

        def infer_relative_search_space(self, study, trial):
            return self.inner.infer_relative_search_space(study, trial)

        def sample_relative(self, study, trial, search_space):
            return self.inner.sample_relative(study, trial, search_space)

        def sample_independent(self, study, trial, name, distribution):
            return self.inner.sample_independent(study, trial, name, distribution)

        def after_trial(self, study, trial, state, values) -> None:
            self.inner.after_trial(study, trial, state, values)

    return PerTrialSeed()


def _base_hash(spec: TuneSpec) -> str:
    """What the spec says every trial starts from (the base file and ``set``; not the defaults, which a
    newer texttune may extend), as a short hash: a resumed study refuses a changed base."""
    return hashlib.sha256(json.dumps(merged_config(spec, {}), sort_keys=True, default=str).encode()).hexdigest()[:12]


def _pruner(optuna, cfg: Section):
    if cfg.name == "median":
        return optuna.pruners.MedianPruner(cfg.n_startup_trials, cfg.n_warmup_steps, cfg.interval_steps)
    if cfg.name == "threshold":
        return optuna.pruners.ThresholdPruner(cfg.lower, cfg.upper, cfg.n_warmup_steps, cfg.interval_steps)
    return optuna.pruners.NopPruner()


class PruneTrial(Callback):
    """Reports each validation evaluation of a trial's run to its Optuna trial (step = optimizer step);
    when the pruner says so, stops the loop the way early stopping does (``Trainer.stop``)."""

    def __init__(self, trial, metric: str) -> None:
        self.trial, self.metric = trial, metric
        self.pruned: tuple[int, float] | None = None  # (step, value) where it was pruned

    def on_evaluate(self, trainer: Any, record: dict[str, Any]) -> None:
        if self.metric not in record:
            raise TexttuneError(f"metric: the evaluations report no '{self.metric}' (they have "
                                f"{', '.join(k for k in record if k in METRIC_DIRECTIONS)})")
        value = float(record[self.metric])
        self.trial.report(value, record["step"])
        if self.pruned is None and self.trial.should_prune():
            self.pruned = (record["step"], value)
            trainer.stop("pruned")


def _suggest(trial, key: str, param: Section) -> Any:
    if isinstance(param, CategoricalParam):
        return trial.suggest_categorical(key, param.choices)
    if isinstance(param, IntParam):
        return trial.suggest_int(key, param.low, param.high, step=param.step or 1, log=param.log)
    return trial.suggest_float(key, param.low, param.high, step=param.step, log=param.log)


def _objective(optuna, spec: TuneSpec, folder: Path, callbacks: list[Any]):
    def objective(trial) -> float:
        params = {key: _suggest(trial, key, param) for key, param in spec.search.items()}
        name = f"trial-{trial.number:03d}"  # Optuna's numbers are unique in a study: no two processes collide
        config = trial_config(spec, params, f"{folder / SPEC} ({name})")
        # Absolute: the study records each trial's run, and processes sharing it may run from other folders.
        config = config.model_copy(update={"output_dir": (folder / TRIALS / name).resolve(), "name": name})
        log.info("== %s: %s", name, _params_text(params))
        pruning = PruneTrial(trial, spec.metric)
        result = run_experiment(config, callbacks=[*callbacks, pruning])
        trial.set_user_attr("run_dir", str(result.run_dir))
        if pruning.pruned is not None:
            step, value = pruning.pruned
            raise optuna.TrialPruned(f"at step {step}: validation {spec.metric} {value:.4g}")
        value = (result.metrics.get("validation") or {}).get(spec.metric)
        if not isinstance(value, (int, float)):
            raise TexttuneError(f"metric: {result.run_dir} has no validation {spec.metric}")
        return float(value)

    return objective


def _params_text(params: dict[str, Any]) -> str:
    return ", ".join(f"{key}={_short(value)}" for key, value in params.items())


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


# --------------------------------------------------------------------------- running


@dataclass
class TuneResult:
    folder: Path
    study: str  # the storage URL
    metric: str
    direction: str
    trials: list[dict[str, Any]]  # number, state, value, params, run, note
    best: dict[str, Any] | None = None  # number, value, params, run
    best_config: Path | None = None
    final: tuple[Path, dict[str, Any]] | None = None  # the comparison folder and its leaderboard


def run_tune(spec_path: str | Path | None = None, *, resume: str | Path | None = None, overrides=(),
             trials: int | None = None, final: bool | None = None, callbacks: list[Any] | None = None) -> TuneResult:
    """Run a study to ``trials`` finished trials (default: the spec's), or continue the one in the tune
    folder ``resume``; then write best.yaml and, unless ``final`` (default: the spec's) is false, re-run
    the best config against the base over the spec's seeds. ``callbacks`` go to every run (default: a
    progress display)."""
    if (spec_path is None) == (resume is None):
        raise TexttuneError("give a spec to start a study, or the tune folder to resume (one of the two)")
    optuna = _import_optuna()
    folder, spec = _resumed(Path(resume)) if resume is not None else _started(Path(spec_path), overrides, trials)
    target = trials or spec.trials
    try:
        study = open_study(optuna, spec, folder)
        if not study.trials:
            for point in spec.enqueue:
                study.enqueue_trial(point, skip_if_exists=True)
        _optimize(optuna, study, spec, folder, target, callbacks)
        return _conclude(study, spec, folder, spec.final if final is None else final, callbacks)
    except KeyboardInterrupt as interrupt:
        interrupt.tune_folder = folder  # the CLI says how to continue
        raise


def _started(spec_path: Path, overrides, trials: int | None) -> tuple[Path, TuneSpec]:
    """A new tune folder holding the spec it runs (base and study absolute, --set and --trials folded in)."""
    spec = load_spec(spec_path, overrides)
    if trials is not None:
        spec.trials = trials
    parent = spec.output_dir or trial_config(spec, {}, str(spec_path)).output_dir
    folder = Path(parent) / f"tune-{spec.name}"
    try:
        folder.mkdir(parents=True)
    except FileExistsError:
        raise TexttuneError(f"{folder}: a study is already here; continue it with texttune tune --resume {folder}, "
                            "or give the spec another name") from None
    header = f"# texttune tune: the spec of this study, from {spec_path}" + \
        "".join(f"\n# --set {item}" for item in overrides)
    atomic_write_text(folder / SPEC, header + "\n" + yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False))
    return folder, spec


def _resumed(folder: Path) -> tuple[Path, TuneSpec]:
    if not (folder / SPEC).is_file():
        raise TexttuneError(f"{folder}: not a tune folder (no {SPEC}); start one with texttune tune SPEC")
    return folder, load_spec(folder / SPEC)


def _optimize(optuna, study, spec: TuneSpec, folder: Path, target: int, callbacks: list[Any] | None) -> None:
    """Trials until ``target`` of them finished (complete or pruned), counting those of every process
    sharing the study; failed and interrupted trials do not count."""
    from texttune.training.callbacks import ProgressCallback

    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    done = len(study.get_trials(deepcopy=False, states=finished))
    if done >= target:
        log.info("study %s: %d trials finished, %d asked for: nothing to run", spec.name, done, target)
        return
    log.info("study %s: %d of %d trials finished; %s", spec.name, done, target, storage_url(spec, folder))

    def after_trial(study, trial) -> None:
        row = _trial_row(trial)
        outcome = f": validation {spec.metric} {row['value']:.4f}" if row["value"] is not None else \
            f" {row['note']}" if row["note"] else ""
        log.info("   trial-%03d %s%s", trial.number, row["state"].lower(), outcome)
        _write_trials_table(study, folder)

    run_callbacks = [ProgressCallback()] if callbacks is None else list(callbacks)
    study.optimize(_objective(optuna, spec, folder, run_callbacks), n_trials=target - done,
                   callbacks=[optuna.study.MaxTrialsCallback(target, states=finished), after_trial])


def _trial_row(trial) -> dict[str, Any]:
    note = ""
    if trial.state.name == "PRUNED" and trial.last_step is not None:
        note = f"at step {trial.last_step}: {trial.intermediate_values[trial.last_step]:.4g}"
    value = trial.value if trial.state.name == "COMPLETE" else None  # a pruned one's is its last report: in the note
    return {"number": trial.number, "state": trial.state.name, "value": value, "params": dict(trial.params),
            "run": trial.user_attrs.get("run_dir"), "note": note}


def _write_trials_table(study, folder: Path) -> None:
    rows = [_trial_row(t) for t in study.get_trials(deepcopy=False)]
    keys = list(dict.fromkeys(k for row in rows for k in row["params"]))
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["number", "state", "value", *keys, "note", "run"])
    for row in rows:
        writer.writerow([row["number"], row["state"], row["value"], *(row["params"].get(k) for k in keys),
                         row["note"], row["run"]])
    atomic_write_text(folder / TRIALS_TABLE, text.getvalue())


def _conclude(study, spec: TuneSpec, folder: Path, final: bool, callbacks: list[Any] | None) -> TuneResult:
    """The summary; best.yaml and the final comparison when a trial completed."""
    _write_trials_table(study, folder)
    rows = [_trial_row(t) for t in study.get_trials(deepcopy=False)]
    result = TuneResult(folder, storage_url(spec, folder), spec.metric, study.direction.name.lower(), rows)
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if not complete:
        log.warning("study %s: no trial completed: no best config", spec.name)
        return result
    best = study.best_trial
    result.best = {"number": best.number, "value": best.value, "params": dict(best.params),
                   "run": best.user_attrs.get("run_dir")}
    result.best_config = write_best(spec, folder, result.best, len(complete))
    if final:
        result.final = run_final(spec, folder, result.best, callbacks)
    return result


def write_best(spec: TuneSpec, folder: Path, best: dict[str, Any], complete: int) -> Path:
    """best.yaml: the base config (its file, extends flattened) ← set ← the best params, for texttune run."""
    merged = merged_config(spec, best["params"])
    trial_config(spec, best["params"], str(folder / BEST))  # what is written is a valid config
    header = (f"# texttune tune: the best of {complete} completed trials of study '{spec.name}' ({folder})\n"
              f"# trial-{best['number']:03d}: validation {spec.metric} {best['value']:.6g}; "
              f"params: {_params_text(best['params'])}\n"
              f"# run: {best['run']}\n"
              f"# train it: texttune run {folder / BEST}\n")
    atomic_write_text(folder / BEST, header + yaml.safe_dump(merged, sort_keys=False, allow_unicode=True))
    return folder / BEST


def run_final(spec: TuneSpec, folder: Path, best: dict[str, Any], callbacks: list[Any] | None):
    """The best config and the base, each over the spec's seeds, as a comparison (``final.yaml``):
    whether the winner beats the base by more than the seeds move it, on the test split."""
    from texttune.tasks.compare import CompareSpec, run_comparison

    ranked = typing.get_args(CompareSpec.model_fields["metric"].annotation)  # what a leaderboard can rank by
    metric = spec.metric if spec.metric in ranked else "accuracy"
    compare = {"kind": "compare", "name": f"final-trial-{best['number']:03d}", "output_dir": str(folder.resolve()),
               **({"base": str(spec.base)} if spec.base is not None else {}), "set": dict(spec.set),
               "seeds": list(spec.seeds), "baseline": "base", "metric": metric,
               "axes": {"config": {"best": dict(best["params"]), "base": {}}}}
    path = folder / FINAL
    header = f"# texttune tune: trial-{best['number']:03d} of study '{spec.name}' against its base, over seeds\n"
    atomic_write_text(path, header + yaml.safe_dump(compare, sort_keys=False))
    log.info("== final: trial-%03d vs base over seeds %s", best["number"], spec.seeds)
    return run_comparison(path, callbacks=callbacks)
