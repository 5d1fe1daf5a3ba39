"""Config loading: deep merge, extends, --set overrides, and error messages naming key and file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from texttune.config import deep_merge, dump_yaml, parse_override

from texttune.tasks.classify import load_config
from texttune.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_deep_merge_merges_nested_dicts_and_replaces_leaves():
    base = {"data": {"dataset": "trec", "checks": {"policy": "warn", "normalized": True}}, "seed": 1}
    merged = deep_merge(base, {"data": {"checks": {"policy": "drop"}}, "seed": 2})
    assert merged == {"data": {"dataset": "trec", "checks": {"policy": "drop", "normalized": True}}, "seed": 2}
    assert base["data"]["checks"]["policy"] == "warn"  # the input is not mutated


def test_deep_merge_drops_old_union_member_keys_when_name_changes():
    merged = deep_merge({"model": {"name": "pretrained", "path": "minilm"}}, {"model": {"name": "cnn"}})
    assert merged == {"model": {"name": "cnn"}}


@pytest.mark.parametrize(
    ("item", "path", "value"),
    [
        ("train.lr=3e-4", ["train", "lr"], 3e-4),
        ("data.max_train_samples=500", ["data", "max_train_samples"], 500),
        ("data.max_train_samples=null", ["data", "max_train_samples"], None),
        ("data.label_names=[a, b]", ["data", "label_names"], ["a", "b"]),
        ("data.hub_fallback=false", ["data", "hub_fallback"], False),
        ("name=my run", ["name"], "my run"),
    ],
)
def test_parse_override_converts_types(item, path, value):
    assert parse_override(item) == (path, value)


def test_parse_override_without_equals_is_an_error():
    with pytest.raises(ConfigError, match="--set data.dataset: expected KEY=VALUE"):
        parse_override("data.dataset")


def test_file_extends_and_overrides_apply_in_order(tmp_path):
    write(tmp_path / "base.yaml", "seed: 1\ndata:\n  dataset: imdb\n  split_seed: 7\n")
    exp = write(tmp_path / "exp.yaml", "extends: base.yaml\nname: exp\ndata:\n  max_train_samples: 100\n")
    config = load_config(exp, ["data.max_train_samples=50", "seed=3"])
    assert (config.name, config.seed) == ("exp", 3)
    assert (config.data.dataset, config.data.split_seed, config.data.max_train_samples) == ("imdb", 7, 50)
    # Untouched keys keep their defaults.
    assert config.data.checks.policy == "warn"


def test_unknown_key_names_path_suggestion_and_file(tmp_path):
    path = write(tmp_path / "x.yaml", "data:\n  dataset: trec\n  max_train_sample: 10\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == (
        f"data.max_train_sample: unknown field (did you mean 'max_train_samples'?) in {path}"
    )


def test_unknown_key_from_set_names_the_override():
    with pytest.raises(ConfigError) as info:
        load_config(None, ["data.checks.polcy=drop"])
    assert "data.checks.polcy: unknown field (did you mean 'policy'?) in --set data.checks.polcy=drop" in str(info.value)


def test_wrong_type_names_path_value_and_origin(tmp_path):
    path = write(tmp_path / "x.yaml", "seed: many\ndata:\n  checks:\n    policy: warm\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert f"seed: Input should be a valid integer" in message and "(got 'many')" in message
    assert f"data.checks.policy: Input should be 'warn', 'drop' or 'fail' (got 'warm') in {path}" in message


def test_extends_key_origin_is_the_file_that_set_it(tmp_path):
    write(tmp_path / "base.yaml", "data:\n  split_seed: abc\n")
    exp = write(tmp_path / "exp.yaml", "extends: base.yaml\n")
    with pytest.raises(ConfigError, match=rf"data.split_seed: .* in {tmp_path / 'base.yaml'}"):
        load_config(exp)


def test_yaml_syntax_error_gives_line(tmp_path):
    path = write(tmp_path / "bad.yaml", "data:\n  dataset: trec\n  checks: {policy: warn\n")
    with pytest.raises(ConfigError, match=rf"{path}: line \d+, column \d+: invalid YAML"):
        load_config(path)


def test_top_level_must_be_a_mapping(tmp_path):
    path = write(tmp_path / "list.yaml", "- a\n- b\n")
    with pytest.raises(ConfigError, match=rf"{path}: expected a mapping of keys at the top, got list"):
        load_config(path)


def test_missing_file_and_extends_cycle(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml: config file not found"):
        load_config(tmp_path / "nope.yaml")
    write(tmp_path / "a.yaml", "extends: b.yaml\n")
    write(tmp_path / "b.yaml", "extends: a.yaml\n")
    with pytest.raises(ConfigError, match="'extends' forms a cycle"):
        load_config(tmp_path / "a.yaml")


def test_dataset_and_train_file_are_exclusive_but_train_file_replaces_default():
    assert load_config(None, ["data.train_file=x.csv"]).data.dataset is None
    with pytest.raises(ConfigError, match="set data.dataset or data.train_file, not both"):
        load_config(None, ["data.train_file=x.csv", "data.dataset=imdb"])


def test_range_constraints_are_enforced():
    with pytest.raises(ConfigError, match="data.max_train_samples: Input should be greater than 0"):
        load_config(None, ["data.max_train_samples=0"])


@pytest.mark.parametrize("path", sorted((REPO / "configs").rglob("*.yaml")), ids=lambda p: str(p.relative_to(REPO)))
def test_every_shipped_config_validates_with_the_loader_of_its_kind(path):
    from texttune.tasks import kind_of, load_any

    expected = {"playbook": "compare", "leaderboards": "compare", "sft": "sft", "tune": "tune"}.get(path.parent.name, "classify")
    if path.name == "gutenberg_mlm.yaml":
        expected = "mlm"
    assert kind_of(path) == expected  # declared in the file (classification: the default)
    loaded = load_any(path)
    assert loaded.kind == expected


def test_config_validate_recognises_every_kind_through_the_cli(run_cli):
    files = sorted((REPO / "configs").rglob("*.yaml"))
    code, out, err = run_cli("config", "validate", *files)
    assert code == 0, err
    for kind in ("classify", "mlm", "sft", "compare", "tune"):
        assert f"({kind})" in out


def test_a_config_of_an_unknown_kind_is_refused(tmp_path):
    from texttune.tasks import load_any

    path = write(tmp_path / "c.yaml", "kind: regression\n")
    with pytest.raises(ConfigError, match=f"^{path}: kind: unknown kind 'regression'; expected one of classify"):
        load_any(path)


def test_a_pretraining_config_given_to_run_is_refused_by_kind(tmp_path):
    path = write(tmp_path / "c.yaml", "kind: mlm\n")
    with pytest.raises(ConfigError, match="kind: Input should be 'classify'"):
        load_config(path)


def test_shown_config_loads_back_to_the_same_config(tmp_path):
    config = load_config(None, ["data.dataset=mrpc", "data.max_test_samples=10", "name=x"])
    for comments in (True, False):
        shown = write(tmp_path / f"shown-{comments}.yaml", dump_yaml(config, comments=comments))
        assert load_config(shown) == config
    assert "# Seed of the carved splits" in dump_yaml(config, comments=True)
    assert yaml.safe_load(dump_yaml(config, comments=False))["data"]["dataset"] == "mrpc"


def test_bare_no_for_mixed_precision_means_no_not_false(tmp_path):
    # YAML 1.1 reads `no` as false; the setting's own value "no" is what the user meant.
    path = tmp_path / "exp.yaml"
    path.write_text("train:\n  mixed_precision: no\n")
    assert load_config(path).train.mixed_precision == "no"
    assert load_config(None, ["train.mixed_precision=no"]).train.mixed_precision == "no"
    with pytest.raises(ConfigError, match="train.mixed_precision"):
        load_config(None, ["train.mixed_precision=yes"])


# --------------------------------------------------------------------------- a later source's data wins


def test_a_file_on_the_command_line_replaces_the_configs_dataset(tmp_path):
    path = write(tmp_path / "c.yaml", "data:\n  dataset: trec\n")
    data = load_config(path, ["data.train_file=my.csv"]).data
    assert (data.dataset, str(data.train_file)) == (None, "my.csv")


def test_a_dataset_on_the_command_line_replaces_the_configs_files(tmp_path):
    path = write(tmp_path / "c.yaml", "data:\n  train_file: a.csv\n  test_file: b.csv\n  text_column: t\n")
    data = load_config(path, ["data.dataset=imdb"]).data
    assert (data.dataset, data.train_file, data.test_file, data.text_column) == ("imdb", None, None, "t")


def test_a_child_config_with_files_replaces_its_parents_dataset(tmp_path):
    write(tmp_path / "base.yaml", "data:\n  dataset: trec\n")
    path = write(tmp_path / "c.yaml", "extends: base.yaml\ndata:\n  train_file: my.csv\n")
    assert load_config(path).data.dataset is None


def test_one_source_naming_both_is_still_an_error(tmp_path):
    path = write(tmp_path / "c.yaml", "data:\n  dataset: trec\n  train_file: my.csv\n")
    with pytest.raises(ConfigError, match=f"set data.dataset or data.train_file, not both in {path}"):
        load_config(path)


# --------------------------------------------------------------------------- YAML bounds


BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8)
)


def test_an_alias_bomb_is_refused_at_once(tmp_path):
    import time

    path = write(tmp_path / "bomb.yaml", BOMB)
    assert len(BOMB) < 400
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=rf"^{path}: line \d+: YAML expands to more than 100,000 values"):
        load_config(path)
    assert time.perf_counter() - start < 10  # it took 245 s and 16.9 GB before the bound


def test_an_alias_bomb_in_set_is_refused_in_a_short_message():
    with pytest.raises(ConfigError, match=r"^--set name=a: &a .*YAML expands to more than 100,000 values") as err:
        load_config(None, [f"name={BOMB}"])
    assert len(str(err.value)) < 500


def test_deeply_nested_yaml_is_refused(tmp_path):
    for depth in (60, 5000):  # past the bound, and past Python's recursion limit
        path = write(tmp_path / f"deep{depth}.yaml", "a: " + "[" * depth + "]" * depth + "\n")
        with pytest.raises(ConfigError, match=rf"^{path}: (line 1: )?YAML nested more than 50 levels deep"):
            load_config(path)


def test_duplicate_keys_are_refused_naming_both_lines(tmp_path):
    path = write(tmp_path / "c.yaml", "train:\n  lr: 0.1\n  epochs: 2\n  lr: 0.2\n")
    with pytest.raises(ConfigError, match=rf"^{path}: line 4: key 'lr' appears twice in one mapping \(first on line 2\)"):
        load_config(path)


def test_an_oversized_config_file_is_refused_before_reading(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("name: x\n" + "# padding\n" * 120_000)
    with pytest.raises(ConfigError, match=rf"^{path}: [\d,]+ bytes; a config file holds at most 1,048,576"):
        load_config(path)


def test_a_long_wrong_value_is_cut_short_in_the_message():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["train.lr=" + "x" * 100_000])
    assert len(str(err.value)) < 400 and "(100,002 characters)" in str(err.value)  # the value, cut short


def test_yaml_merge_keys_and_shared_anchors_still_work(tmp_path):
    path = write(tmp_path / "c.yaml", "defaults: &d {epochs: 2}\ntrain:\n  <<: *d\n  lr: 0.1\n")
    with pytest.raises(ConfigError, match="defaults: unknown field"):  # anchors parse; the key is unknown
        load_config(path)
    path = write(tmp_path / "d.yaml", "train: &t\n  epochs: 2\n")
    assert load_config(path).train.epochs == 2


# --------------------------------------------------------------------------- the model family's training defaults

README_CNN = ["model.name=cnn", "model.glove=true", "model.embedding_dim=50", "data.dataset=trec"]


def test_the_readme_cnn_one_liner_trains_at_the_cnn_familys_learning_rate():
    from texttune.models.scratch import CNNModelConfig

    train = load_config(None, README_CNN).train
    family = CNNModelConfig.train_defaults
    # Before: lr 5e-5 and 3 epochs (the pretrained recipe), test accuracy 0.16 on TREC-6; now 0.884.
    assert (train.lr, train.epochs, train.warmup_ratio, train.weight_decay) == (
        family["lr"], family["epochs"], family["warmup_ratio"], family["weight_decay"]) == (2e-3, 10, 0.0, 0.0)
    assert train.per_device_batch_size == family["per_device_batch_size"]


@pytest.mark.parametrize("name, lr", [("pretrained", 5e-5), ("cnn", 2e-3), ("rnn", 2e-3), ("transformer", 1e-3),
                                      ("bag_of_ngrams", 0.2)])
def test_every_model_family_brings_its_learning_rate(name, lr):
    assert load_config(None, [f"model.name={name}"]).train.lr == lr
    assert load_config(None, [f"model.name={name}", "train.lr=0.5"]).train.lr == 0.5


def test_what_the_user_sets_beats_the_family_defaults_from_any_source(tmp_path):
    assert load_config(None, [*README_CNN, "train.lr=1e-4"]).train.lr == 1e-4
    assert load_config(None, [*README_CNN, "train={lr: 0.01}"]).train.lr == 0.01  # a mapping value too
    write(tmp_path / "parent.yaml", "train:\n  epochs: 2\n")
    child = write(tmp_path / "child.yaml", "extends: parent.yaml\nmodel:\n  name: rnn\n")
    config = load_config(child)
    assert (config.train.epochs, config.train.lr) == (2, 2e-3)  # the parent's epochs, the family's lr
    # A comparison cell (validate_config without load_config) gets them too.
    from texttune.tasks.classify import validate_config

    assert validate_config({"model": {"name": "transformer"}}).train.warmup_ratio == 0.1


def test_a_saved_run_config_reloads_unchanged_whatever_the_family_defaults(tmp_path):
    config = load_config(None, [*README_CNN, "train.epochs=4"])
    shown = write(tmp_path / "config.yaml", dump_yaml(config, comments=False))
    assert load_config(shown) == config


def test_config_show_says_where_each_value_came_from(run_cli, tmp_path):
    file = write(tmp_path / "exp.yaml", "name: mine\ntrain:\n  epochs: 4\n")
    code, out, err = run_cli("config", "show", file, *[a for s in README_CNN for a in ("--set", s)],
                             "--set", "train.lr=1e-3")
    assert code == 0, err
    lines: dict[str, str] = {}
    for line in out.splitlines():  # the first of each key (the top-level name, not model.name)
        lines.setdefault(line.split(":")[0].strip(), line)
    assert "# [default for model cnn] Training examples per forward pass" in lines["per_device_batch_size"]
    assert "# [--set train.lr=1e-3]" in lines["lr"] and lines["lr"].startswith("  lr: 0.001")
    assert f"# [{file}]" in lines["epochs"] and f"# [{file}]" in lines["name"]
    assert "# [--set data.dataset=trec]" in lines["dataset"]
    assert "# [default] Seed of model initialisation" in lines["seed"]
    assert "# [default for model cnn]" in lines["warmup_ratio"]
