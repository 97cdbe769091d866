"""Dockerfile.api, Dockerfile.train and the Airflow image: linted and checked statically."""

from __future__ import annotations

import ast
import fnmatch
import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.helpers import DOCKERFILES, PROJECT_PACKAGES, ROOT, Dockerfile, find_binary, module_path

PINNED_PYTHON = re.compile(r"^python:3\.11\.\d+-slim-[a-z]+$")


@pytest.fixture(scope="module")
def api() -> Dockerfile:
    return Dockerfile.parse(DOCKERFILES["api"])


@pytest.fixture(scope="module")
def train() -> Dockerfile:
    return Dockerfile.parse(DOCKERFILES["train"])


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_hadolint_finds_nothing(name: str) -> None:
    hadolint = find_binary("hadolint")
    result = subprocess.run(
        [hadolint, "--config", str(ROOT / ".hadolint.yaml"), "--no-color", str(DOCKERFILES[name])],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip().rstrip("/") for line in lines if line.strip() and not line.startswith("#")]


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule, enough for this file: the last matching pattern wins, `!` re-includes."""
    ignored = False
    parts = Path(path).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!")
        glob = pattern.replace("**/", "*") if pattern.startswith("**/") else pattern
        if any(fnmatch.fnmatchcase(prefix, glob) for prefix in prefixes):
            ignored = not negate
    return ignored


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_every_copied_path_exists_and_is_in_the_build_context(name: str) -> None:
    dockerfile = Dockerfile.parse(DOCKERFILES[name])
    patterns = _dockerignore_patterns()
    copies = [rest for rest in dockerfile.all("COPY") if not rest.startswith("--from=")]
    assert copies
    for rest in copies:
        *sources, _dest = [arg for arg in rest.split() if not arg.startswith("--")]
        for source in sources:
            assert (ROOT / source).exists(), f"{name}: COPY {source}: no such path"
            assert not _ignored(source.rstrip("/"), patterns), (
                f"{name}: COPY {source} is excluded by .dockerignore"
            )


def test_dockerignore_keeps_local_state_and_secrets_out() -> None:
    patterns = _dockerignore_patterns()
    for path in (".venv", ".venv-airflow", "var", ".git", ".env", "tests", "data", "bundles"):
        assert _ignored(path, patterns), f"{path} would be sent to the Docker daemon"


@pytest.mark.parametrize("name", ["api", "train"])
def test_base_image_is_a_pinned_slim_python(name: str) -> None:
    dockerfile = Dockerfile.parse(DOCKERFILES[name])
    image = dockerfile.arg_default("PYTHON_IMAGE")
    assert image and PINNED_PYTHON.match(image), image
    stages = dockerfile.all("FROM")
    assert len(stages) >= 2, "multi-stage: build the venv apart from the runtime image"
    assert all(stage.startswith("${PYTHON_IMAGE}") for stage in stages)
    assert "sha256:<" in DOCKERFILES[name].read_text(), "say how to pin the digest"


@pytest.mark.parametrize("name", ["api", "train"])
def test_runs_as_a_non_root_numeric_user(name: str) -> None:
    user = Dockerfile.parse(DOCKERFILES[name]).last("USER")
    assert user and re.fullmatch(r"[1-9]\d*(:\d+)?", user), user
    assert "COPY --from=build /opt/venv /opt/venv" in " ".join(
        f"{kw} {rest}" for kw, rest in Dockerfile.parse(DOCKERFILES[name]).instructions
    )


def test_api_image_serves_on_8000_with_a_healthcheck(api: Dockerfile) -> None:
    assert api.exec_form("CMD") == ["python", "-m", "api"]
    assert api.last("EXPOSE") == "8000"
    env = " ".join(api.all("ENV"))
    assert "HOST=0.0.0.0" in env and "PORT=8000" in env
    healthcheck = api.last("HEALTHCHECK")
    assert healthcheck and "/health" in healthcheck and "CMD" in healthcheck


def test_train_image_entrypoint_is_the_training_cli(train: Dockerfile) -> None:
    assert train.exec_form("ENTRYPOINT") == ["python", "-m", "models.train"]


@pytest.mark.parametrize("name", ["api", "train"])
def test_the_modules_the_images_run_exist(name: str) -> None:
    dockerfile = Dockerfile.parse(DOCKERFILES[name])
    form = dockerfile.exec_form("ENTRYPOINT") or dockerfile.exec_form("CMD")
    assert form[:2] == ["python", "-m"]
    assert module_path(form[2]) is not None, f"python -m {form[2]}: no such module"
    copied = {rest.split()[0].rstrip("/") for rest in dockerfile.all("COPY") if not rest.startswith("--")}
    assert form[2].split(".")[0] in copied


# ---- the API image holds what the API imports, and not the training-only packages -------


def _imports(path: Path, *, lazy: bool) -> set[str]:
    """Absolute module names a file imports: at module level, and inside functions if `lazy`."""
    tree = ast.parse(path.read_text())
    nodes = ast.walk(tree) if lazy else _module_level(tree.body)
    names: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def _module_level(body: list[ast.stmt]) -> list[ast.stmt]:
    """Statements run at import (descending into if/try blocks, not functions or TYPE_CHECKING)."""
    found: list[ast.stmt] = []
    for node in body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            found += _module_level(node.orelse)
        elif isinstance(node, ast.If | ast.Try):
            for block in ("body", "orelse", "finalbody", "handlers"):
                for child in getattr(node, block, []):
                    found += _module_level(child.body if isinstance(child, ast.ExceptHandler) else [child])
        else:
            found.append(node)
    return found


def _project_file(module: str) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def api_import_closure() -> tuple[set[Path], set[str]]:
    """(project files the API imports, third-party top-level modules they import).

    Inside api/ function-level imports count too (that is how the API loads the serving
    runtime lazily); elsewhere only what runs at import. What a model-loading function
    imports at run time is checked by running the API of the process stack with the training
    packages blocked (scripts/stack.sh, tests/deploy/test_stack_e2e.py).
    """
    todo = list((ROOT / "api").rglob("*.py"))
    seen: set[Path] = set()
    third_party: set[str] = set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in _imports(path, lazy=ROOT / "api" in path.parents):
            top = name.split(".")[0]
            if top in PROJECT_PACKAGES:
                parts = name.split(".")
                for i in range(1, len(parts) + 1):
                    if (found := _project_file(".".join(parts[:i]))) is not None:
                        todo.append(found)
            elif top not in sys.stdlib_module_names and top != "__future__":
                third_party.add(top)
    return seen, third_party


def _requirement_names(path: Path) -> set[str]:
    """Distribution names a requirements file pins, following `-r` includes."""
    names = set()
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("-r "):
            names |= _requirement_names(path.parent / line[3:].strip())
        elif m := re.match(r"^([A-Za-z0-9_.-]+)(\[[^\]]*\])?==", line):
            names.add(m.group(1).lower().replace("_", "-"))
    return names


def _with_dependencies(names: set[str]) -> set[str]:
    """The distributions installed along with `names` (their requirements, recursively)."""
    from packaging.requirements import Requirement

    result, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name in result:
            continue
        result.add(name)
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for spec in requires:
            requirement = Requirement(spec)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name.lower().replace("_", "-"))
    return result


def test_api_image_installs_everything_the_api_imports_and_nothing_of_training(api: Dockerfile) -> None:
    copied = [rest.split()[0] for rest in api.all("COPY") if rest.startswith("requirements")]
    assert copied == ["requirements-serve.txt"], "the API image installs requirements-serve.txt only"
    serving = _requirement_names(ROOT / "requirements-serve.txt")
    training_only = _requirement_names(ROOT / "requirements.txt") - serving
    assert {"tensorflow-cpu", "keras"} <= training_only
    installed = _with_dependencies(serving)
    distributions = importlib.metadata.packages_distributions()
    _, imported = api_import_closure()
    for module in sorted(imported):
        dists = {d.lower().replace("_", "-") for d in distributions.get(module, [])}
        assert dists, f"the API imports {module}, which no installed distribution provides"
        assert dists & installed, (
            f"the API imports {module} ({', '.join(sorted(dists))}), which requirements-serve.txt does not install"
        )
        assert not dists & (training_only - installed), f"the API imports the training package {module}"
