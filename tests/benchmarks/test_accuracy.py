"""benchmarks/accuracy.py leaves nothing behind: its bundle went with the run (240 MB each with
the real data; twelve runs had left 2.9 GB in /tmp)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

from benchmarks import accuracy


def _scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    return scratch


@pytest.mark.slow
def test_a_run_removes_its_bundle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, quick_bundle: Path, quick_catalogue: Path, capsys
) -> None:
    import models.training.train as training

    scratch = _scratch(tmp_path, monkeypatch)
    written: list[Path] = []

    def trained(datasets: Any, out_dir: Path, **kwargs: Any) -> Path:  # the quick bundle stands in
        shutil.copytree(quick_bundle, out_dir)
        written.append(out_dir)
        return out_dir

    monkeypatch.setattr(training, "train", trained)
    assert accuracy.main(["--data", str(quick_catalogue), "--skip-lstm", "--feature-cache", "none"]) == 0
    assert "| image |" in capsys.readouterr().out
    assert written and written[0].is_relative_to(scratch)
    assert list(scratch.iterdir()) == []


def test_a_failed_run_removes_its_folder_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, quick_catalogue: Path
) -> None:
    import models.training.train as training

    scratch = _scratch(tmp_path, monkeypatch)

    def failing(datasets: Any, out_dir: Path, **kwargs: Any) -> Path:
        out_dir.mkdir(parents=True)
        raise RuntimeError("training failed")

    monkeypatch.setattr(training, "train", failing)
    with pytest.raises(RuntimeError, match="training failed"):
        accuracy.main(["--data", str(quick_catalogue), "--skip-lstm", "--feature-cache", "none"])
    assert list(scratch.iterdir()) == []
