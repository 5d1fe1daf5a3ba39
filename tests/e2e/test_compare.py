"""``texttune compare`` end to end on a tiny from-scratch Transformer and the toy sentences:
2 strategies × 2 seeds, the leaderboard's numbers, resuming after an interruption without retraining
finished cells, stages with init_from, bad specs, and ``texttune runs list/compare``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conftest import TOY_ROWS
from test_run import assert_error, write_csv
from texttune.tasks.compare import run_comparison
from texttune.errors import TexttuneError
from texttune.training.callbacks import Callback

TINY = {"model.name": "transformer", "model.d_model": 16, "model.nhead": 2, "model.num_layers": 1,
        "model.dim_feedforward": 32, "model.max_length": 32, "train.per_device_batch_size": 4,
        "train.max_steps": 4, "train.lr": 1e-2, "train.num_threads": 1, "train.calibrate": False}


def write_spec(folder: Path, data: Path, **extra) -> Path:
    spec = {"name": "tiny", "output_dir": str(folder / "out"), "seeds": [1, 2], "baseline": "full",
            "set": {**TINY, "data.train_file": str(data), "data.validation_file": str(data),
                    "data.test_file": str(data)},
            "axes": {"strategy.name": ["full", "linear_probe"]}, **extra}
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


class Count(Callback):
    """Counts the runs that start training; interrupts the n-th one at its first step."""

    def __init__(self, interrupt_run: int | None = None) -> None:
        self.started, self.interrupt_run = 0, interrupt_run

    def on_train_begin(self, trainer) -> None:
        self.started += 1

    def on_step_end(self, trainer) -> None:
        if self.started == self.interrupt_run:
            raise KeyboardInterrupt


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    return write_csv(tmp_path_factory.mktemp("data") / "toy.csv", TOY_ROWS)


@pytest.fixture(scope="module")
def compared(tmp_path_factory, toy):
    folder = tmp_path_factory.mktemp("compare")
    spec = write_spec(folder, toy)
    counter = Count(interrupt_run=2)
    with pytest.raises(KeyboardInterrupt):
        run_comparison(spec, callbacks=[counter])
    first = sorted((folder / "out" / "tiny" / "cells" / "main").glob("*/*/metrics.json"))
    resumed = Count()
    root, board = run_comparison(spec, callbacks=[resumed])
    return root, board, first, resumed


def test_the_leaderboard_has_one_row_per_strategy_with_the_seed_means(compared):
    root, board, _, _ = compared
    assert [row["cell"] for row in board["rows"]] == sorted(["full", "linear_probe"],
                                                            key=lambda c: -next(r["mean"] for r in board["rows"]
                                                                                if r["cell"] == c))
    for row in board["rows"]:
        scores = [json.loads((root / run / "metrics.json").read_text())["test"]["accuracy"] for run in row["runs"]]
        assert row["n"] == 2 and row["seeds"] == [1, 2]
        assert row["mean"] == pytest.approx(sum(scores) / 2)
        assert row["ci_low"] <= row["mean"] <= row["ci_high"]
    lora = next(r for r in board["rows"] if r["cell"] == "linear_probe")
    assert lora["significance_test"] == "paired bootstrap" and 0 < lora["p_value"] <= 1
    assert {p.name for p in root.iterdir()} >= {"spec.yaml", "leaderboard.json", "leaderboard.md",
                                                 "leaderboard.csv", "comparison.html", "cells"}


def test_an_interrupted_comparison_resumes_without_retraining_finished_cells(compared):
    root, _, first, resumed = compared
    assert len(first) == 1  # the first cell finished before the interruption
    assert first[0].exists() and first[0].parent.parent.name == "full-seed1"
    # 4 cells: the finished one was kept; the interrupted one (no checkpoint yet) and two more ran.
    assert resumed.started == 3
    assert len(list((root / "cells" / "main" / "full-seed1").iterdir())) == 1


def test_stages_pass_the_source_run_to_init_from(tmp_path, toy):
    spec = write_spec(tmp_path, toy, seeds=[1], baseline=None, axes={}, stages=[
        {"name": "source"},
        {"name": "target", "set": {"init_from": "{stage:source}", "model.max_length": 32},
         "axes": {"strategy.name": ["linear_probe", "lora"]}},
    ])
    root, board = run_comparison(spec, callbacks=[])
    assert {row["cell"] for row in board["rows"]} == {"linear_probe", "lora", "source:main"}
    run = root / next(r for r in board["rows"] if r["cell"] == "lora")["runs"][0]
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert Path(config["init_from"]).parent.name == "main-seed1"


def test_a_spec_with_an_unknown_axis_key_is_rejected_naming_it(tmp_path, toy):
    spec = write_spec(tmp_path, toy, axes={"strategy.nmae": ["full"]})
    with pytest.raises(TexttuneError, match=r"strategy.nmae: unknown field .* in .*spec.yaml \(main: axes.strategy.nmae\)"):
        run_comparison(spec)
    assert not (tmp_path / "out").exists()  # nothing ran, nothing was created
    bad = write_spec(tmp_path, toy, axs={"strategy.name": ["full"]})
    with pytest.raises(TexttuneError, match=r"axs: unknown field .* in .*spec.yaml"):
        run_comparison(bad)


def test_an_unknown_baseline_is_refused_before_anything_runs(tmp_path, toy):
    from texttune.tasks.compare import expand, load_spec

    spec = write_spec(tmp_path, toy, baseline="ful")
    with pytest.raises(TexttuneError, match=r"baseline: no cell named 'ful' in .*spec.yaml; cells: full, linear_probe"):
        run_comparison(spec)
    assert not (tmp_path / "out").exists()
    # A cell of an earlier stage is named stage:cell.
    staged = write_spec(tmp_path, toy, baseline="first:main", axes={},
                        stages=[{"name": "first"}, {"name": "second", "axes": {"strategy.name": ["full"]}}])
    expand(load_spec(staged), staged)  # accepted


def test_a_different_spec_never_reuses_a_comparison_directory(compared, toy, tmp_path):
    root, _, _, _ = compared
    spec = write_spec(tmp_path, toy, seeds=[3])
    spec.write_text(spec.read_text().replace(str(tmp_path / "out"), str(root.parent)))
    with pytest.raises(TexttuneError, match="holds a different comparison"):
        run_comparison(spec)


def test_runs_list_and_runs_compare(compared, run_cli, tmp_path):
    root, board, _, _ = compared
    code, out, err = run_cli("runs", "list", root)
    assert code == 0, err
    # 4 finished cells, and the run interrupted before its first checkpoint (kept, never overwritten).
    assert out.count("unfinished") == 1 and out.count("finished") == 5
    runs = [root / run for row in board["rows"] for run in row["runs"]]
    code, out, err = run_cli("runs", "compare", *runs, "--baseline", "full-seed1", "--output", tmp_path / "board")
    assert code == 0, err
    assert (tmp_path / "board" / "comparison.html").is_file()
    assert "| full-seed1 |" in "".join(out.split("\n")) or "full-seed1" in out
    assert_error(run_cli("runs", "compare", *runs, "--baseline", "nosuch"), "baseline: no cell named 'nosuch'")


def test_set_overrides_apply_to_every_cell_and_belong_to_the_comparison(tmp_path, toy):
    spec = write_spec(tmp_path, toy, seeds=[1], axes={"strategy.name": ["full"]})
    root, board = run_comparison(spec, callbacks=[], overrides=["train.max_steps=2"])
    run = root / board["rows"][0]["runs"][0]
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["max_steps"] == 2
    assert "# --set train.max_steps=2" in (root / "spec.yaml").read_text()
    with pytest.raises(TexttuneError, match="holds a different comparison"):
        run_comparison(spec, overrides=["train.max_steps=3"])


class InterruptAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, trainer) -> None:
        if trainer.state.global_step == self.step:
            raise KeyboardInterrupt


def test_a_cell_interrupted_after_a_checkpoint_resumes_in_its_own_run_directory(tmp_path, toy):
    spec = write_spec(tmp_path, toy, seeds=[1], baseline=None, axes={"strategy.name": ["full"]})
    with pytest.raises(KeyboardInterrupt):
        run_comparison(spec, callbacks=[InterruptAt(3)], overrides=["train.eval_every_steps=2"])
    cell = tmp_path / "out" / "tiny" / "cells" / "main" / "full-seed1"
    (interrupted,) = list(cell.iterdir())
    assert (interrupted / "checkpoints" / "last").is_dir() and not (interrupted / "metrics.json").exists()
    root, board = run_comparison(spec, callbacks=[], overrides=["train.eval_every_steps=2"])
    assert list(cell.iterdir()) == [interrupted]  # resumed there, not started again elsewhere
    assert (interrupted / "metrics.json").is_file()
    steps = [json.loads(line)["step"] for line in (interrupted / "metrics.jsonl").read_text().splitlines()
             if json.loads(line)["type"] == "train"]
    assert steps == sorted(set(steps))  # the steps after the checkpoint were not logged twice


def test_runs_compare_refuses_an_unfinished_run(compared, run_cli):
    root, _, _, _ = compared
    unfinished = next(p for p in (root / "cells" / "main").glob("*/*") if not (p / "metrics.json").exists())
    assert_error(run_cli("runs", "compare", unfinished), f"{unfinished}: not a finished run (no metrics.json)")
