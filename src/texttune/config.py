"""Configuration: the shared sections, YAML loading, deep merge and ``--set`` overrides.

A config is resolved in one direction only: the defaults of the pydantic models, then each file in
an ``extends:`` chain, then the experiment file, then ``--set key=value`` overrides, deep-merged as
plain dicts and validated once. Every error names the key path (``data.max_train_sample``) and the
place it came from (a file or ``--set``), with a suggestion for misspelt keys.

Each kind of run has its root config in its own task module (``tasks/``); this module imports no
plug-in. A classification config's ``model`` and ``strategy`` sections are discriminated unions on
``name`` over the classes their packages register (``union_of``), so adding an encoder or strategy
never touches this file.
"""

from __future__ import annotations

import os
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from texttune.errors import ConfigError
from texttune.io import MAX_YAML_BYTES, YAMLSyntaxError, load_yaml
from texttune.registry import Registry, suggest


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataChecksConfig(Section):
    policy: Literal["warn", "drop", "fail"] = Field(
        "warn",
        description="What a failed data check does: warn (report and go on), drop (remove "
        "duplicates, empty texts and test/validation items leaked into train) or fail (stop).",
    )
    max_imbalance_ratio: float = Field(
        20.0, gt=1.0, description="Largest/smallest class count above which imbalance is flagged."
    )
    normalized: bool = Field(
        True,
        description="Also look for duplicates and overlap after normalising case, whitespace and "
        "punctuation.",
    )


class FewShotConfig(Section):
    per_class: int = Field(..., gt=0, description="Training examples kept per class (8, 16, 64, ...); a class "
                           "with fewer keeps all of them, and the run says so.")
    seed: int | None = Field(None, description="Seed of the sample; default data.split_seed.")


class CVConfig(Section):
    """``data.cv``: k-fold cross-validation over data without an official test split (docs/design.md
    "k-fold (issue 20)")."""

    folds: int = Field(10, ge=2, description="Number of stratified folds the labelled data is cut into.")
    fold: int | None = Field(
        None, ge=0,
        description="The fold that is the test split (0..folds-1); texttune run needs it, compare without "
        "it runs every fold.",
    )
    seed: int | None = Field(None, description="Seed of the folds; default: data.split_seed.")
    group_duplicates: bool = Field(
        False,
        description="Keep every copy of a text (after normalising case, whitespace and punctuation) in one "
        "fold (StratifiedGroupKFold), so no test text is also a training text.",
    )

    @field_validator("fold")
    @classmethod
    def _fold_in_range(cls, fold: int | None, info) -> int | None:
        folds = info.data.get("folds")
        if fold is not None and folds is not None and fold >= folds:
            raise ValueError(f"fold {fold} is not one of the {folds} folds (0..{folds - 1})")
        return fold


class DataConfig(Section):
    dataset: str | None = Field(
        "trec",
        description="Built-in dataset name (texttune data list); ignored (null) when train_file is set.",
    )
    data_dir: Path | None = Field(
        None,
        description="Folder of prepared built-in datasets (<name>/{train,validation,test}.parquet + "
        "labels.txt). Default: $TEXTTUNE_DATA_DIR, else ~/.cache/texttune/data.",
    )
    hub_fallback: bool = Field(
        True,
        description="Download a built-in dataset from the Hugging Face Hub when it is not in "
        "data_dir (needs network).",
    )
    train_file: Path | None = Field(None, description="Your own training file (CSV, TSV, JSONL, Parquet).")
    validation_file: Path | None = Field(None, description="Your own validation file.")
    test_file: Path | None = Field(None, description="Your own test file.")
    file_format: Literal["auto", "csv", "tsv", "jsonl", "parquet"] = Field(
        "auto", description="Format of the data files; auto picks it from the file extension."
    )
    text_column: str = Field("text", description="Column holding the text.")
    text_pair_column: str | None = Field(
        None, description="Column holding the second text of a sentence pair (e.g. MRPC)."
    )
    label_column: str = Field("label", description="Column holding the label (string or integer).")
    multi_label: bool = Field(
        False,
        description="Multi-label classification: each row's label column holds a set of labels -- a JSON list "
        "(JSONL, a Parquet list column, or a CSV cell like [\"a\", \"b\"]) or, with label_delimiter, a delimited "
        "string; an empty list or cell means no label. Sigmoid + BCE, per-label thresholds fitted on validation.",
    )
    label_delimiter: str | None = Field(
        None, min_length=1, description="With multi_label: the separator of labels in a string cell ('|' reads 'a|b' as {a, b})."
    )
    label_names: list[str] | None = Field(
        None,
        description="Label names in index order. Integer labels index into this list; string labels "
        "must be in it. Default: labels.txt for built-ins, sorted distinct labels for your files.",
    )
    delimiter: str | None = Field(
        None, description="Field separator of CSV/TSV files; default ',' for .csv and tab for .tsv."
    )
    validation_size: float | int | None = Field(
        None,
        gt=0,
        description="Validation carved (stratified) from train when the dataset has none: a share "
        "(0.1) or a row count (500). Default: the built-in's own (sst2: 872 rows), else 0.1.",
    )
    validation_carve: Literal["rows", "spans"] | None = Field(
        None,
        description="How validation is carved from train: rows (any rows, stratified) or spans (whole "
        "texts only, and every training row that is a word span of a carved text leaves train: for "
        "phrase data such as SST-2, whose training phrases are parts of its sentences). Default: the "
        "built-in's own (sst2: spans), else rows.",
    )
    test_size: float | int | None = Field(
        None,
        ge=0,
        description="Test carved (stratified) from train when the dataset has none: a share or a row "
        "count; 0 = no test split. Default: the built-in's own (ag_news: 1600 rows), else 0.1.",
    )
    split_seed: int = Field(42, description="Seed of the carved splits and of the subsets.")
    max_train_samples: int | None = Field(
        None, gt=0, description="Stratified subset of the train split (after carving)."
    )
    max_validation_samples: int | None = Field(None, gt=0, description="Stratified subset of validation.")
    max_test_samples: int | None = Field(None, gt=0, description="Stratified subset of test.")
    few_shot: FewShotConfig | None = Field(
        None, description="Few-shot training: sample the train split (after carving validation and test) to "
        "per_class examples per class, seeded; data.json records the sample.",
    )
    clean_text: bool = Field(
        False,
        description="Repair HTML-entity remnants (&amp;, &lt;b&gt;, &#39; and AG News' ' #39;' that lost its &) "
        "and mojibake (UTF-8 read as Latin-1/cp1252: 'Ã©' -> 'é') in every text before the checks and training; "
        "the html_entities and mojibake checks find them.",
    )
    min_rows_per_label: float = Field(
        2.0, ge=0,
        description="Refuse to train when the training split has fewer rows per label than this on average "
        "(more labels than rows / this): a label column that is really an id or free text. 0 turns it off.",
    )
    checks: DataChecksConfig = Field(default_factory=DataChecksConfig)
    cv: CVConfig | None = Field(
        None,
        description="k-fold cross-validation for data without a test split: fold data.cv.fold of data.cv.folds "
        "stratified folds (over train, and validation when the data has one) is the test split, validation is "
        "carved from the other folds as usual.",
    )

    @model_validator(mode="before")
    @classmethod
    def _files_replace_builtin(cls, data: Any) -> Any:
        # Setting train_file means "my own data": the built-in default must not also apply.
        if isinstance(data, dict) and data.get("train_file") is not None and "dataset" not in data:
            data = {**data, "dataset": None}
        return data

    @model_validator(mode="after")
    def _one_source(self) -> DataConfig:
        if self.dataset is None and self.train_file is None:
            raise ValueError("set either data.dataset (a built-in name) or data.train_file")
        if self.dataset is not None and self.train_file is not None:
            raise ValueError("set data.dataset or data.train_file, not both")
        if self.label_delimiter is not None and not self.multi_label:
            raise ValueError("data.label_delimiter splits label sets: set data.multi_label: true as well")
        if self.multi_label and self.train_file is None:
            raise ValueError("data.multi_label reads label sets from your files: set data.train_file")
        if self.cv is not None:
            for key in ("test_file", "test_size", "max_test_samples"):
                if getattr(self, key) is not None:
                    raise ValueError(f"data.cv: the test split is fold data.cv.fold of the labelled data, so "
                                     f"data.{key} cannot be set as well; unset one of them")
        return self


TRACKERS = ("tensorboard", "mlflow")  # train.report_to's names; training/tracking.py implements them


class TrainConfig(Section):
    epochs: float = Field(3.0, gt=0, description="Passes over the training split (ignored when max_steps is set).")
    max_steps: int | None = Field(None, gt=0, description="Optimizer steps to train for; overrides epochs.")
    per_device_batch_size: int = Field(
        16, gt=0, description="Training examples per forward pass (not used when train.batch_tokens is set)."
    )
    batch_tokens: int | None = Field(
        None, gt=0,
        description="Instead of per_device_batch_size: padded tokens (rows x longest row) per forward pass "
        "and process; length-grouped batches, many short texts or few long ones; a longer example trains "
        "alone. metrics.json records the mean examples and tokens per step.",
    )
    gradient_accumulation_steps: int = Field(1, gt=0, description="Forward passes per optimizer step.")
    eval_batch_size: int = Field(
        64, gt=0,
        description="Examples per forward pass in evaluation (not used when eval_batch_tokens is set).",
    )
    eval_batch_tokens: int | None = Field(
        None, gt=0, description="Instead of eval_batch_size: padded tokens per evaluation forward pass "
        "(classification runs)."
    )
    optimizer: Literal["adamw", "sgd", "adagrad"] = Field(
        "adamw",
        description="adamw (dense gradients only); sgd (plain, no momentum) or adagrad, which also take "
        "sparse embedding gradients (bag_of_ngrams' model.sparse; adagrad, lr 0.2 in "
        "configs/imdb_bag_of_ngrams.yaml).",
    )
    lr: float = Field(5e-5, gt=0, description="Peak learning rate of the optimizer.")
    weight_decay: float = Field(
        0.01,
        ge=0,
        description="Weight decay (decoupled in adamw, L2 in sgd/adagrad); never applied to biases, "
        "LayerNorm weights or sparse-gradient embeddings.",
    )
    adam_betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas.")
    adam_eps: float = Field(1e-8, gt=0, description="AdamW epsilon.")
    scheduler: Literal["linear", "cosine", "constant"] = Field(
        "linear", description="Learning-rate schedule after warmup."
    )
    warmup_ratio: float = Field(0.06, ge=0, lt=1, description="Share of the steps spent warming up.")
    warmup_steps: int | None = Field(None, ge=0, description="Warmup steps; overrides warmup_ratio.")
    max_grad_norm: float | None = Field(
        1.0, gt=0, description="Gradient clipping norm (null = off; must be null with sparse gradients)."
    )
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="Label smoothing of the cross-entropy.")
    class_weights: Literal["auto"] | list[float] | None = Field(
        None, description="Loss weights per class: auto (inverse frequency in train) or a list."
    )
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = Field(
        "auto", description="auto: bf16 on a GPU that supports it, fp32 on CPU."
    )
    group_by_length: bool = Field(
        True, description="Batch examples of similar length together (less padding, same randomness)."
    )
    eval_every_steps: int | None = Field(
        None, gt=0, description="Evaluate on validation every N optimizer steps; default: every epoch."
    )
    log_every_steps: int = Field(10, gt=0, description="Steps between training log lines.")
    metric: str = Field(
        "accuracy",
        description="Validation metric for early stopping and the best checkpoint: accuracy, f1_macro, "
        "f1_micro, f1_weighted, f1 (binary), loss, log_loss, ece.",
    )
    early_stopping_patience: int | None = Field(
        None, gt=0, description="Stop after this many evaluations without improvement (null = never)."
    )
    calibrate: bool = Field(
        True, description="Fit temperature scaling on validation and report calibrated metrics too."
    )
    save_checkpoints: bool = Field(
        True, description="Save resumable state at every evaluation (needed for --resume)."
    )
    keep_checkpoints: bool = Field(
        False, description="Keep checkpoints/ after a run finishes (the final model is in model/)."
    )
    num_threads: int | None = Field(None, gt=0, description="CPU threads for torch; default: all cores.")
    compile: bool = Field(
        False, description="torch.compile the model (dynamic shapes); pays off on a GPU for long runs."
    )
    report_to: list[str] = Field(
        default_factory=list,
        description="Trackers that receive a copy of the run's record: tensorboard, mlflow (extra "
        "texttune[tracking]); [] or none: no tracker. MLflow logs to MLFLOW_TRACKING_URI, else to "
        "<output_dir>/mlflow.db.",
    )
    tracking_dir: str | None = Field(
        None, description="TensorBoard's folder (one sub-folder per run, named after it); default: "
        "RUN_DIR/tensorboard."
    )


    def evaluated_by_examples(self, kind: str) -> TrainConfig:
        """This config, for a kind of run whose evaluation batches are slices of examples (their held-out
        masks or losses follow that order): ``eval_batch_tokens`` is refused, naming the key."""
        if self.eval_batch_tokens is not None:
            raise ValueError(f"{kind} runs evaluate in batches of train.eval_batch_size examples: unset "
                             "train.eval_batch_tokens (train.batch_tokens works)")
        return self

    @field_validator("mixed_precision", mode="before")
    @classmethod
    def _yaml_no(cls, value: Any) -> Any:
        return "no" if value is False else value  # YAML reads a bare `no` as false

    @field_validator("report_to", mode="before")
    @classmethod
    def _tracker_list(cls, value: Any) -> Any:
        if value is None or value == "none":
            return []
        return [value] if isinstance(value, str) else value  # --set train.report_to=mlflow

    @field_validator("report_to")
    @classmethod
    def _known_trackers(cls, value: list[str]) -> list[str]:
        for name in value:
            if name not in TRACKERS:
                raise ValueError(f"unknown tracker '{name}'{suggest(name, TRACKERS)}; known: {', '.join(TRACKERS)}")
        return list(dict.fromkeys(value))

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        from texttune.evaluation.metrics import METRIC_DIRECTIONS

        if value not in METRIC_DIRECTIONS:
            raise ValueError(f"unknown metric '{value}'{suggest(value, list(METRIC_DIRECTIONS))}; "
                             f"known: {', '.join(sorted(METRIC_DIRECTIONS))}")
        return value


def union_of(registry: Registry[type], default: str) -> tuple[Any, Any] | None:
    """A discriminated union (on ``name``) of the config classes in ``registry``, defaulting to
    ``default``: the ``model`` and ``strategy`` sections of a classification config."""
    classes = tuple(registry.configs().values())
    if not classes:
        return None
    annotation = Annotated[Union[classes], Field(discriminator="name")]  # noqa: UP007
    factory = registry.config_class(default) if default in registry else classes[0]
    return annotation, Field(default_factory=factory)


# --------------------------------------------------------------------------- merging and overrides


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Merge ``override`` into a copy of ``base``: dicts merge key by key, anything else replaces.

    Changing a union's ``name`` (``model.name: cnn``) drops the keys of the old member, since they
    belong to another class.
    """
    out = dict(base)
    for key, value in override.items():
        old = out.get(key)
        if isinstance(old, dict) and isinstance(value, dict):
            if "name" in value and "name" in old and value["name"] != old["name"]:
                out[key] = dict(value)
            else:
                out[key] = deep_merge(old, value)
        else:
            out[key] = value
    return out


_DATA_FILES = ("train_file", "validation_file", "test_file")


def merge_layer(base: dict[str, Any], layer: dict[str, Any]) -> dict[str, Any]:
    """``deep_merge``, except that a later source naming its own data replaces the earlier source's:
    ``--set data.train_file=my.csv`` over a config with ``dataset: trec`` trains on the file, and
    ``--set data.dataset=imdb`` over a config of files on IMDB. Within one source, both is an error."""
    new, old = layer.get("data"), base.get("data")
    if isinstance(new, dict) and isinstance(old, dict):
        old = dict(old)
        if new.get("train_file") is not None and "dataset" not in new:
            old.pop("dataset", None)  # the DataConfig default steps aside for train_file too
        if new.get("dataset") is not None and not any(key in new for key in _DATA_FILES):
            for key in _DATA_FILES:
                old.pop(key, None)
        base = {**base, "data": old}
    return deep_merge(base, layer)


def parse_override(item: str) -> tuple[list[str], Any]:
    """``"train.lr=3e-4"`` → (["train", "lr"], 0.0003). Values are parsed as YAML."""
    if "=" not in item:
        raise ConfigError(f"--set {item}: expected KEY=VALUE, e.g. --set data.max_train_samples=500")
    key, raw = item.split("=", 1)
    path = [p for p in key.strip().split(".")]
    if not all(path):
        raise ConfigError(f"--set {item}: empty key in '{key}'")
    try:
        value = load_yaml(raw, f"--set {_shorten(item)}") if raw.strip() else ""
    except YAMLSyntaxError:
        value = raw  # not YAML (an unbalanced bracket, say): the text itself
    # YAML 1.1 reads "3e-4" as a string; a user writing it means a number.
    if isinstance(value, str):
        try:
            value = float(value) if any(c in value for c in ".eE") else int(value)
        except ValueError:
            pass
    return path, value


def _nest(path: list[str], value: Any) -> dict[str, Any]:
    out: Any = value
    for key in reversed(path):
        out = {key: out}
    return out


def read_yaml(path: Path) -> dict[str, Any]:
    """Read one YAML mapping, naming the file (and line) in every error."""
    try:
        if Path(path).is_file() and Path(path).stat().st_size > MAX_YAML_BYTES:
            raise ConfigError(f"{path}: {Path(path).stat().st_size:,} bytes; a config file holds at most "
                              f"{MAX_YAML_BYTES:,}")
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a config file") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start})") from None
    data = load_yaml(text, str(path))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top, got {type(data).__name__}")
    return data


def _read_with_extends(path: Path, seen: tuple[Path, ...] = ()) -> tuple[dict[str, Any], dict[str, Path]]:
    """Read a file and the chain its ``extends:`` names; returns the merged dict and key origins."""
    path = Path(path)
    resolved = path.resolve()
    if resolved in seen:
        raise ConfigError(f"{path}: 'extends' forms a cycle")
    data = read_yaml(path)
    parents = data.pop("extends", None) or []
    if isinstance(parents, str):
        parents = [parents]
    if not isinstance(parents, list) or not all(isinstance(p, str) and p for p in parents):
        raise ConfigError(f"{path}: extends: expected a config file name or a list of them, got {_short_repr(parents)}")
    merged: dict[str, Any] = {}
    origins: dict[str, Path] = {}
    for parent in parents:
        parent_path = (path.parent / parent) if not Path(parent).is_absolute() else Path(parent)
        if not parent_path.is_file():
            raise ConfigError(f"{path}: extends: {parent_path}: config file not found")
        parent_data, parent_origins = _read_with_extends(parent_path, (*seen, resolved))
        merged = merge_layer(merged, parent_data)
        origins.update(parent_origins)
    merged = merge_layer(merged, data)
    for key_path in _leaf_paths(data):
        origins[key_path] = path
    return merged, origins


def _leaf_paths(data: dict[str, Any], prefix: str = "") -> list[str]:
    paths = []
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        paths.append(dotted)
        if isinstance(value, dict):
            paths.extend(_leaf_paths(value, dotted + "."))
    return paths


# --------------------------------------------------------------------------- error messages


def _model_classes(annotation: Any) -> list[type[BaseModel]]:
    """BaseModel classes inside an annotation (through Optional, Union, Annotated)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    origin = typing.get_origin(annotation)
    if origin is not None or isinstance(annotation, types.UnionType):
        for arg in typing.get_args(annotation):
            found.extend(_model_classes(arg))
    return found


def _tag_of(cls: type[BaseModel]) -> Any:
    field = cls.model_fields.get("name")
    return field.default if field is not None else None


def _walk(root: type[BaseModel], loc: tuple[Any, ...]) -> tuple[list[str], type[BaseModel] | None]:
    """Follow a pydantic error location through the model classes.

    Returns the location as the user wrote it (union tags removed) and the model class that holds
    the last key, which gives the list of valid field names for a suggestion.
    """
    cls: type[BaseModel] | None = root
    path: list[str] = []
    parts = list(loc)
    i = 0
    while i < len(parts):
        part = parts[i]
        if cls is None or not isinstance(part, str) or part not in cls.model_fields:
            path.extend(str(p) for p in parts[i:])
            if i < len(parts) - 1:
                cls = None
            return path, cls
        path.append(part)
        if i == len(parts) - 1:
            return path, cls
        members = _model_classes(cls.model_fields[part].annotation)
        cls = None
        if len(members) == 1:
            cls = members[0]
        elif len(members) > 1 and i + 1 < len(parts):
            by_tag = {_tag_of(m): m for m in members}
            if parts[i + 1] in by_tag:  # pydantic puts the union tag into the location
                cls = by_tag[parts[i + 1]]
                i += 1
        i += 1
    return path, cls


DEFAULT_ORIGIN = "default"  # a value no source set: the field's own default


def _origin(dotted: str, origins: dict[str, str]) -> str:
    probe = dotted
    while probe:
        if probe in origins:
            return origins[probe]
        probe = probe.rpartition(".")[0]
    return "the defaults"


def format_validation_error(
    err: ValidationError, root: type[BaseModel], origins: dict[str, str]
) -> str:
    lines = []
    for item in err.errors():
        path, holder = _walk(root, tuple(item["loc"]))
        dotted = ".".join(path) or "(top level)"
        kind = item["type"]
        if kind == "extra_forbidden":
            hint = suggest(path[-1], list(holder.model_fields)) if holder is not None else ""
            message = f"unknown field{hint}"
        elif kind == "union_tag_invalid":
            tag = item.get("ctx", {}).get("tag", item["input"])
            known = [t.strip(" '") for t in str(item["ctx"]["expected_tags"]).split(",")]
            message = f"unknown name {tag!r}{suggest(str(tag), known)}; expected one of {item['ctx']['expected_tags']}"
        elif kind == "union_tag_not_found":
            message = "missing 'name' (which kind to use)"
        else:
            message = item["msg"]
            if kind not in ("missing", "value_error") and not isinstance(item.get("input"), dict):
                message += f" (got {_short_repr(item.get('input'))})"
            if message.startswith("Value error, "):
                message = message[len("Value error, ") :]
        lines.append(f"{dotted}: {message} in {_origin(dotted, origins)}")
    if len(lines) > MAX_ERROR_LINES:  # a long list of wrong items: the first ones tell the story
        lines[MAX_ERROR_LINES:] = [f"... and {len(lines) - MAX_ERROR_LINES} more errors"]
    return "\n".join(lines)


MAX_ERROR_LINES = 20


def _short_repr(value: Any) -> str:
    return _shorten(repr(value))


def _shorten(text: str, limit: int = 120) -> str:
    """What the user wrote, cut short: an error message stays one readable line."""
    text = text.replace("\n", "\\n")
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


# --------------------------------------------------------------------------- loading


def merge_sources(path: str | Path | None, overrides: list[str] | tuple[str, ...] = (),
                  base: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, str]]:
    """``base`` ← file (with its ``extends``) ← ``--set`` items, and where each dotted key came from."""
    merged: dict[str, Any] = dict(base or {})
    origins: dict[str, str] = {}
    if path is not None:
        file_data, file_origins = _read_with_extends(Path(path))
        merged = merge_layer(merged, file_data)
        origins.update({k: str(v) for k, v in file_origins.items()})
    command_line: dict[str, Any] = {}  # one source: --set data.train_file=a --set data.dataset=b is an error
    for item in overrides:
        key_path, value = parse_override(item)
        nested = _nest(key_path, value)
        command_line = deep_merge(command_line, nested)
        for key in _leaf_paths(nested):  # every key a mapping value sets too: --set 'train={lr: 1}'
            origins[key] = f"--set {_shorten(item)}"
    merged = merge_layer(merged, command_line)
    # A key a later source dropped (another model's, another data source's) came from nowhere.
    present = set(_leaf_paths(merged))
    return merged, {key: where for key, where in origins.items() if key in present}


def merge_below(data: dict[str, Any], layer: dict[str, Any], origins: dict[str, str], origin: str
                ) -> tuple[dict[str, Any], dict[str, str]]:
    """``layer`` under ``data``: every key ``data`` does not set takes the layer's value, with ``origin``
    as where it came from (a model family's training defaults under the user's sources)."""
    present = set(_leaf_paths(data))
    added = {key: origin for key in _leaf_paths(layer) if key not in present}
    return deep_merge(layer, data), {**origins, **added}


def load_root_config(root: type[BaseModel], path: str | Path | None, overrides: list[str] | tuple[str, ...],
                     defaults: dict[str, Any] | None = None) -> Any:
    """Another root config (pre-training, SFT): ``defaults`` ← file (with ``extends``) ← ``--set``;
    errors name the key and where it was set, as for experiments."""
    merged, origins = merge_sources(path, overrides, defaults)
    try:
        return root.model_validate(merged)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, root, origins)) from None


def config_to_dict(config: BaseModel) -> dict[str, Any]:
    return config.model_dump(mode="json")


def dump_yaml(config: BaseModel, comments: bool = True, origins: dict[str, str] | None = None) -> str:
    """The resolved config as YAML; with ``comments`` each key carries its field description and, given
    ``origins`` (dotted key -> source), where its value came from: ``[default]``, ``[default for model
    cnn]``, ``[configs/trec.yaml]`` or ``[--set train.lr=1e-3]``."""
    if not comments:
        return yaml.safe_dump(config_to_dict(config), sort_keys=False, allow_unicode=True)
    lines: list[str] = []
    _dump_model(config, 0, lines, origins, "")
    return "\n".join(lines) + "\n"


def _dump_model(model: BaseModel, indent: int, lines: list[str], origins: dict[str, str] | None,
                prefix: str) -> None:
    pad = "  " * indent
    for key, field in type(model).model_fields.items():
        value = getattr(model, key)
        dotted = prefix + key
        notes = [field.description] if field.description else []
        if origins is not None and not isinstance(value, BaseModel):
            notes.insert(0, f"[{origins.get(dotted, DEFAULT_ORIGIN)}]")
        note = f"  # {' '.join(notes)}" if notes else ""
        if isinstance(value, BaseModel):
            lines.append(f"{pad}{key}:{note}")
            _dump_model(value, indent + 1, lines, origins, dotted + ".")
            continue
        dumped = yaml.safe_dump(
            {key: _jsonable(value)}, sort_keys=False, default_flow_style=True, width=10_000
        ).strip()
        if dumped.startswith("{") and dumped.endswith("}"):
            dumped = dumped[1:-1]
        lines.append(f"{pad}{dumped}{note}")


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def default_data_dir() -> Path:
    env = os.environ.get("TEXTTUNE_DATA_DIR")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "texttune" / "data"
