"""``texttune compare --parallel 2`` on CPU: the same leaderboard as one cell after another, from cells
that really ran in two worker processes at once; Ctrl-C and a rerun keep the finished cells; a failing
cell stops the comparison with its own message; ``--executor ray`` without ray says how to get it."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import TOY_ROWS
from test_compare import write_spec
from test_run import assert_error, write_csv
from texttune import runs
from texttune.errors import TexttuneError
from texttune.tasks.compare import CELL_LOG, run_comparison


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    return write_csv(tmp_path_factory.mktemp("data") / "toy.csv", TOY_ROWS)


def scores(board: dict) -> dict[str, tuple[int, list[float]]]:
    """cell -> (rank, the test accuracy of each seed's run, in seed order)."""
    out = {}
    for rank, row in enumerate(board["rows"], 1):
        per_seed = [runs.read_json(board["root"] / run, runs.METRICS)["test"]["accuracy"] for run in row["runs"]]
        out[row["cell"]] = (rank, row["seeds"], per_seed)
    return out


@pytest.fixture(scope="module")
def sequential(tmp_path_factory, toy):
    root, board = run_comparison(write_spec(tmp_path_factory.mktemp("sequential"), toy), callbacks=[])
    return scores({**board, "root": root})


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory, toy):
    """A parallel comparison stopped by Ctrl-C once its first cell finished, then rerun to the end."""
    folder = tmp_path_factory.mktemp("parallel")
    spec = write_spec(folder, toy)
    cells = folder / "out" / "tiny" / "cells" / "main"
    # The console script, in a session of its own: SIGINT reaches the parent only, as Ctrl-C does.
    texttune = Path(sys.executable).parent / "texttune"
    process = subprocess.Popen([str(texttune), "compare", str(spec), "--parallel", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    deadline = time.monotonic() + 60
    while not list(cells.glob(f"*/*/{runs.METRICS}")) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=90)
    kept = {p: p.stat().st_mtime_ns for p in cells.glob(f"*/*/{runs.METRICS}")}
    root, board = run_comparison(spec, parallel=2)
    return {"code": process.returncode, "out": out, "err": err, "kept": kept, "root": root,
            "board": {**board, "root": root}}


def test_two_workers_give_the_leaderboard_of_one_cell_after_another(interrupted, sequential):
    assert scores(interrupted["board"]) == sequential


def test_cells_ran_in_two_worker_processes_at_once(interrupted):
    logs = sorted((interrupted["root"] / "cells" / "main").glob(f"*/{CELL_LOG}"))
    assert len(logs) == 4
    pids = set()
    for path in logs:
        lines = [line for line in path.read_text().splitlines() if " worker pid " in line]
        pids.update(int(line.split(" worker pid ")[1].split(":")[0]) for line in lines)
    assert len(pids) >= 4 and os.getpid() not in pids  # one process per cell attempt, none of them this one
    # Two at once: the parent started a second worker before any cell finished. (Read from the parent's
    # own lines, not from the workers' clocks: a tiny cell may finish before a second worker has even
    # imported torch, which made a timing comparison flaky.)
    events = [line for line in interrupted["out"].splitlines() if " started (worker pid " in line
              or line.strip().startswith("cell ") and " finished in " in line]
    assert len(events) >= 2 and all(" started (worker pid " in line for line in events[:2]), events


def test_ctrl_c_stops_the_workers_and_a_rerun_keeps_the_finished_cells(interrupted):
    assert interrupted["code"] == 130, interrupted["err"]
    assert "interrupted; rerun texttune compare" in interrupted["err"]
    assert "Traceback" not in interrupted["err"]
    assert interrupted["kept"]  # at least one cell finished before Ctrl-C ...
    for path, mtime in interrupted["kept"].items():
        assert path.stat().st_mtime_ns == mtime  # ... and the rerun did not train it again
    assert " started (worker pid " in interrupted["out"]


def test_a_failing_cell_stops_the_comparison_with_its_message(tmp_path, toy, run_cli):
    spec = write_spec(tmp_path, toy, seeds=[1], baseline=None,
                      axes={"data.text_column": ["text", "nosuch"]})
    code, out, err = run_cli("compare", spec, "--parallel", "2")
    assert code != 0
    assert "error: main/nosuch-seed1: " in err and "nosuch" in err.split("main/nosuch-seed1: ")[1]
    assert err.count("error:") == 1 and "Traceback" not in err
    # The other cell, running beside it, was finished and kept for the next attempt.
    assert list((tmp_path / "out" / "tiny" / "cells" / "main" / "text-seed1").glob(f"*/{runs.METRICS}"))


def test_parallel_must_be_positive_and_callbacks_stay_in_process(tmp_path, toy):
    spec = write_spec(tmp_path, toy)
    with pytest.raises(TexttuneError, match="--parallel: expected a number of workers >= 1, got 0"):
        run_comparison(spec, parallel=0)
    with pytest.raises(ValueError, match="cannot run in worker processes"):
        run_comparison(spec, callbacks=[object()], parallel=2)


def test_executor_ray_without_ray_names_the_extra(tmp_path, toy, run_cli, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError, installed or not
    assert_error(run_cli("compare", write_spec(tmp_path, toy), "--executor", "ray"),
                 "--executor ray needs the ray package: pip install 'texttune[ray]'")


@pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                    reason="ray is not installed (pip install 'texttune[ray]')")
def test_executor_ray_on_a_local_instance_gives_the_same_leaderboard(tmp_path, toy, sequential):
    import ray

    ray.init(num_cpus=2, include_dashboard=False)
    try:
        root, board = run_comparison(write_spec(tmp_path, toy), parallel=2, executor="ray")
    finally:
        ray.shutdown()
    assert scores({**board, "root": root}) == sequential
