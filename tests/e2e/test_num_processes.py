"""``texttune run --num-processes 2``: the convenience launcher starts two real processes (torchrun
underneath, gloo on loopback) and they write one run directory, as a user meets it through the
installed console script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TOY_ROWS

pytest.importorskip("torch.distributed.run", reason="torch without its distributed launcher")


def test_num_processes_2_trains_data_parallel_into_one_run_directory(tmp_path):
    data = tmp_path / "train.csv"
    data.write_text("text,label\n" + "".join(f'"{text} {i}",{label}\n' for i in range(4) for text, label in TOY_ROWS),
                    encoding="utf-8")
    script = Path(sys.executable).parent / "texttune"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "COLUMNS": "200"}
    items = ["model.name=bag_of_ngrams", "model.embedding_dim=8", f"data.train_file={data}", "train.max_steps=3",
             f"output_dir={tmp_path / 'runs'}", "train.num_threads=1", "train.per_device_batch_size=4"]
    proc = subprocess.run([str(script), "run", "--num-processes", "2", *(a for i in items for a in ("--set", i))],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()  # one run directory for two processes
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["world_size"] == 2 and metrics["global_batch_size"] == 8
    assert proc.stdout.count("report:") == 1  # the result printed once, by the main process


def test_num_processes_must_be_positive(run_cli):
    code, out, err = run_cli("run", "--num-processes", "0")
    assert code == 2 and "Traceback" not in out + err
