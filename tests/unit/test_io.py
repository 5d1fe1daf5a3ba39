"""File modes: what texttune writes gets the user's umask, like any file a program creates."""

from __future__ import annotations

import os

import pytest
import torch
from safetensors.torch import save_file

from texttune.io import apply_umask, atomic_write_text, current_umask


@pytest.fixture
def umask_027():
    previous = os.umask(0o027)
    yield
    os.umask(previous)


def test_current_umask_reads_without_changing_it(umask_027):
    assert current_umask() == 0o027
    assert current_umask() == 0o027


def test_atomic_writes_and_safetensors_files_follow_the_umask(tmp_path, umask_027):
    assert atomic_write_text(tmp_path / "a.json", "{}").stat().st_mode & 0o777 == 0o640
    folder = tmp_path / "model"
    folder.mkdir()
    save_file({"w": torch.zeros(2)}, str(folder / "model.safetensors"))  # safetensors 0.8: mkstemp, 0600
    apply_umask(folder)
    assert (folder / "model.safetensors").stat().st_mode & 0o777 == 0o640
    assert folder.stat().st_mode & 0o777 == 0o750
