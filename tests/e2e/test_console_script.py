"""Usage errors through the installed ``texttune`` console script, the way a user meets them: one usage
line, the message, exit 2 and no traceback, whatever typer/click release is installed (typer 0.29
raises its vendored click's exceptions, older releases click's own: ``texttune.compat``)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(sys.executable).parent / "texttune"


def texttune(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    assert SCRIPT.exists(), f"the console script is not installed beside {sys.executable}"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "COLUMNS": "200"}
    return subprocess.run([str(SCRIPT), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    ("args", "usage", "message"),
    [
        (["run", "cfg.yaml", "--output-dir", "x"], "Usage: texttune run", r"No such option:? '?--output-dir"),
        (["predict", "--bogus"], "Usage: texttune predict", r"No such option:? '?--bogus"),
        (["predict"], "Usage: texttune predict", "Missing argument"),
        (["evaluate", "runs/x"], "Usage: texttune evaluate", "Missing option '--data'"),
        (["--bogus"], "Usage: texttune", r"No such option:? '?--bogus"),
        (["no-such-command"], "Usage: texttune", "No such command 'no-such-command'"),
        (["data", "check", "x.csv", "--policy"], None, "Option '--policy' requires an argument"),
        (["predict", "runs/x", "--top-k", "many"], "Usage: texttune predict", "Invalid value for '--top-k'"),
    ],
    ids=["unknown-option", "unknown-option-2", "missing-argument", "missing-option", "root-option",
         "unknown-command", "option-without-value", "wrong-type"],
)
def test_usage_errors_print_one_usage_line_and_exit_2(args, usage, message, tmp_path):
    proc = texttune(*args, cwd=tmp_path)
    output = proc.stdout + proc.stderr
    assert "Traceback" not in output, output
    assert proc.returncode == 2, output
    assert proc.stderr.count("Usage:") == (usage is not None), proc.stderr  # click gives none for a bare option
    assert usage is None or usage in proc.stderr, proc.stderr
    assert re.search(message, proc.stderr), proc.stderr  # the wording differs between click releases


def test_version_option_prints_the_version(tmp_path):
    from texttune import __version__

    proc = texttune("--version", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"texttune {__version__}"


def test_no_arguments_shows_help_without_a_traceback(tmp_path):
    proc = texttune(cwd=tmp_path)
    output = proc.stdout + proc.stderr
    assert "Traceback" not in output, output
    assert proc.returncode in (0, 2), output  # click >= 8.2 exits 2 for no_args_is_help, older 0
    assert "Usage: texttune" in output and "predict" in output
