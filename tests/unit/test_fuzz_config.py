"""Property-based fuzzing of every YAML reader (experiment configs, comparison specs, ``--set`` items):
any input gives a valid config or one ``TexttuneError`` naming where it came from -- never another
exception -- within a time bound. A fixed example budget (derandomized), so CI runs are repeatable."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from texttune.tasks.compare import load_spec
from texttune.tasks.classify import load_config
from texttune.errors import TexttuneError

BUDGET = settings(max_examples=150, deadline=None, derandomize=True,
                  suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
SECONDS = 10.0  # per input: every reader is bounded, whatever it is given (typically a few ms)

KEYS = ["name", "seed", "data", "dataset", "train_file", "model", "strategy", "train", "lr", "epochs",
        "path", "rank", "checks", "policy", "extends", "axes", "base", "seeds", "<<", "x", ""]
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True),
                    st.text(max_size=20), st.sampled_from(["trec", "cnn", "lora", "full", "warn", "1e-3", "~"]))
TREES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=5), st.dictionaries(st.sampled_from(KEYS), inner, max_size=5)), max_leaves=30)
YAML_SNIPPETS = st.sampled_from(["&a", "*a", "!!python/object:os.system", "<<: *a", "? ", "- ", ": ", "{", "[",
                                 "\t", "\n", "'", '"', "%YAML 1.1\n", "---\n", "...\n", "\x00", "\ud800"])
TEXTS = st.one_of(
    st.text(max_size=300),
    st.lists(st.one_of(st.text(max_size=10), YAML_SNIPPETS), max_size=40).map("".join),
    TREES.map(lambda tree: yaml.safe_dump(tree, allow_unicode=True)),
    TREES.map(lambda tree: yaml.safe_dump({"data": tree, "model": tree})),
)


load_config(None)  # imports and registries once, outside the timed calls


def _within_bound(call, where: str) -> None:
    start = time.perf_counter()
    try:
        call()
    except TexttuneError as err:
        assert str(err).strip(), "an empty message"
        assert where in str(err) or "--set" in str(err) or "." in str(err).split(":")[0], str(err)
    assert time.perf_counter() - start < SECONDS


def _write(path: Path, content: str | bytes) -> Path:
    data = content if isinstance(content, bytes) else content.encode("utf-8", "surrogatepass")
    path.write_bytes(data)
    return path


@BUDGET
@given(content=st.one_of(TEXTS, st.binary(max_size=300)))
def test_any_config_file_gives_a_config_or_a_message_naming_it(content, tmp_path):
    path = _write(tmp_path / "fuzz.yaml", content)
    _within_bound(lambda: load_config(path), str(path))


@BUDGET
@given(content=st.one_of(TEXTS, st.binary(max_size=300)))
def test_any_spec_file_gives_a_spec_or_a_message_naming_it(content, tmp_path):
    path = _write(tmp_path / "spec.yaml", content)
    _within_bound(lambda: load_spec(path), str(path))


@BUDGET
@given(items=st.lists(st.one_of(
    st.text(max_size=60),
    st.tuples(st.lists(st.sampled_from(KEYS), min_size=1, max_size=3).map(".".join), TEXTS).map("=".join),
), max_size=4))
def test_any_set_items_give_a_config_or_a_message(items):
    items = [item.encode("utf-8", "replace").decode("utf-8") for item in items]  # argv is valid text
    _within_bound(lambda: load_config(None, items), "--set")


@pytest.mark.parametrize("extends", ["../" * 50 + "etc/passwd", "/dev/zero", ".", "fuzz.yaml"])
def test_extends_to_a_strange_place_is_a_message(extends, tmp_path):
    path = _write(tmp_path / "fuzz.yaml", f"extends: {extends}\n")
    _within_bound(lambda: load_config(path), "")
