"""scripts/stack.sh and its helper, checked without starting the stack (that is test_stack_e2e)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.helpers import ROOT


@pytest.mark.parametrize("script", ["scripts/stack.sh", "deploy/postgres/init-airflow-db.sh"])
def test_shell_scripts_parse(script: str) -> None:
    shell = "bash" if script.endswith("stack.sh") else "sh"
    result = subprocess.run([shell, "-n", str(ROOT / script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_stack_script_without_a_command_prints_its_usage() -> None:
    result = subprocess.run([str(ROOT / "scripts" / "stack.sh")], capture_output=True, text=True)
    assert result.returncode == 2
    assert "make stack" in result.stdout and "make stack-down" in result.stdout


def test_serve_only_site_blocks_training_packages_and_nothing_the_api_needs(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "serve_only_site.py"), str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    blocked = set(result.stdout.split(":", 1)[1].split())
    assert {"tensorflow", "keras", "sklearn"} <= blocked
    assert not blocked & {"numpy", "onnxruntime", "PIL", "fastapi", "sqlalchemy", "boto3", "tests", "models"}

    probe = (
        "import importlib\n"
        "for name in ('numpy', 'onnxruntime', 'PIL', 'fastapi'):\n"
        "    importlib.import_module(name)\n"
        "try:\n"
        "    import tensorflow\n"
        "except ModuleNotFoundError as exc:\n"
        "    print('refused:', exc)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert run.returncode == 0, run.stderr
    assert "refused: tensorflow is not installed in the API image" in run.stdout
