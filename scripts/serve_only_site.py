"""Write a `sitecustomize.py` that makes the training packages unimportable (scripts/stack.sh).

The API image installs requirements-serve.txt only (the models run under ONNX Runtime, no
TensorFlow). The project's virtualenv has everything, so the process stack puts this
directory first on the API process's PYTHONPATH: the API then fails locally exactly as it
would in the image if serving ever imported a training package.

    python scripts/serve_only_site.py DIR
"""

from __future__ import annotations

import importlib.metadata
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SITECUSTOMIZE = '''\
"""Written by scripts/serve_only_site.py: the packages the API image does not install."""

import importlib.abc
import sys

BLOCKED = {blocked!r}


class _NotInTheApiImage(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(
                f"{{name}} is not installed in the API image (requirements-serve.txt)", name=name
            )
        return None


sys.meta_path.insert(0, _NotInTheApiImage())
'''


def pinned(path: Path) -> set[str]:
    """Distribution names a requirements file pins, following `-r` includes."""
    names: set[str] = set()
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("-r "):
            names |= pinned(path.parent / line[3:].strip())
        elif m := re.match(r"^([A-Za-z0-9_.-]+)(\[[^\]]*\])?==", line):
            names.add(m.group(1).lower().replace("_", "-"))
    return names


def training_only_modules(root: Path = ROOT) -> list[str]:
    """Top-level modules provided only by distributions requirements-serve.txt leaves out."""
    training_only = pinned(root / "requirements.txt") - pinned(root / "requirements-serve.txt")
    return sorted(
        module
        for module, dists in importlib.metadata.packages_distributions().items()
        if {d.lower().replace("_", "-") for d in dists} <= training_only
        and module.isidentifier()
        and not (root / module).exists()  # never shadow a project package (tf2onnx ships `tests`)
    )


def main(argv: list[str]) -> int:
    target = Path(argv[1])
    target.mkdir(parents=True, exist_ok=True)
    blocked = training_only_modules()
    (target / "sitecustomize.py").write_text(SITECUSTOMIZE.format(blocked=set(blocked)))
    sys.stdout.write(f"blocked in the API process: {' '.join(blocked)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
