"""Model registry CLI: publish, inspect, promote and roll back model versions.

Usage:
    python -m pipelines.registry [--json] list [--all]
    python -m pipelines.registry [--json] show VERSION
    python -m pipelines.registry [--json] publish BUNDLE_DIR
    python -m pipelines.registry [--json] promote VERSION
    python -m pipelines.registry [--json] rollback
    python -m pipelines.registry [--json] history
    python -m pipelines.registry [--json] verify VERSION

The store is MODEL_STORE_URI (a folder or s3://bucket/prefix); publications, promotions and
rollbacks are also recorded in the model versions table of DATABASE_URL. Promote and rollback
go through `pipelines.registry_ops` like the API and the retraining pipeline: the target is
downloaded, checked against its manifest and loaded by the serving runtime first (`verify` runs
the same check alone), and a version that fails never becomes production.

Exit codes: 0 done; 1 the database record failed (the store change was made); 2 usage;
3 unknown or incomplete version; 4 tampered or missing files; 5 refused (version exists,
invalid bundle, nothing to roll back); 6 store unreachable; 7 the version's files are intact
but the serving runtime cannot load or self-check it.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from store.blob import BlobStoreUnavailableError
from store.model_store import (
    ChecksumMismatchError,
    InvalidBundleError,
    InvalidVersionError,
    ModelStore,
    ModelStoreError,
    NothingToRollBackError,
    UnservableVersionError,
    VersionExistsError,
    VersionNotFoundError,
    open_model_store,
)

logger = logging.getLogger(__name__)

(
    EXIT_OK,
    EXIT_DB,
    EXIT_USAGE,
    EXIT_NOT_FOUND,
    EXIT_TAMPERED,
    EXIT_REFUSED,
    EXIT_UNAVAILABLE,
    EXIT_UNSERVABLE,
) = range(8)
# Most specific first: InvalidVersionError is also a ValueError, VersionNotFoundError a LookupError.
ERROR_EXIT_CODES: tuple[tuple[type[BaseException], int], ...] = (
    (VersionNotFoundError, EXIT_NOT_FOUND),
    (InvalidVersionError, EXIT_NOT_FOUND),
    (ChecksumMismatchError, EXIT_TAMPERED),
    (UnservableVersionError, EXIT_UNSERVABLE),
    (VersionExistsError, EXIT_REFUSED),
    (InvalidBundleError, EXIT_REFUSED),
    (NothingToRollBackError, EXIT_REFUSED),
    (BlobStoreUnavailableError, EXIT_UNAVAILABLE),
    (ModelStoreError, EXIT_REFUSED),
)


@contextmanager
def _session_factory() -> Iterator[Any]:
    """A session factory on DATABASE_URL, for the commands that record what they change."""
    from config import get_settings
    from db.session import make_engine, make_session_factory

    engine = make_engine(get_settings().DATABASE_URL)
    try:
        yield make_session_factory(engine)
    finally:
        engine.dispose()


# -- commands -------------------------------------------------------------------------------


def cmd_list(store: ModelStore, args: argparse.Namespace) -> dict[str, Any]:
    production = store.production()
    versions = [
        {**info.to_dict(), "production": info.version == production}
        for info in store.list_versions(include_incomplete=args.all)
    ]
    return {"store": store.uri, "production": production, "versions": versions}


def cmd_show(store: ModelStore, args: argparse.Namespace) -> dict[str, Any]:
    manifest = store.manifest(args.version)
    return {
        **manifest.to_dict(),
        "location": store.location(args.version),
        "size": manifest.size,
        "production": store.production() == args.version,
    }


def cmd_publish(store: ModelStore, args: argparse.Namespace) -> dict[str, Any]:
    from pipelines.registry_ops import publish_bundle

    with _session_factory() as session_factory:
        version = publish_bundle(store, session_factory, Path(args.bundle_dir))
    return {"version": version, "location": store.location(version)}


def cmd_promote(store: ModelStore, args: argparse.Namespace) -> dict[str, Any]:
    from pipelines.registry_ops import promote_version

    with _session_factory() as session_factory:
        promotion = promote_version(
            store, session_factory, args.version, gate={"reason": "manual promotion (registry CLI)"}
        )
    return promotion.to_dict()


def cmd_rollback(store: ModelStore, args: argparse.Namespace) -> dict[str, Any]:
    from pipelines.registry_ops import rollback_production

    with _session_factory() as session_factory:
        promotion = rollback_production(store, session_factory)
    return promotion.to_dict()


def cmd_history(store: ModelStore, args: argparse.Namespace) -> dict[str, Any]:
    return {"history": [p.to_dict() for p in store.history()]}


def cmd_verify(store: ModelStore, args: argparse.Namespace) -> dict[str, Any]:
    from pipelines.registry_ops import verify_servable

    manifest = verify_servable(store, args.version)  # exactly what a promotion would check
    return {"version": manifest.version, "verified_files": len(manifest.files), "size": manifest.size}


# -- human-readable output ------------------------------------------------------------------


def _fmt_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def _fmt_f1(metrics: dict[str, Any]) -> str:
    parts = [
        f"{kind} {figures['weighted_f1']:.3f}"
        for kind, figures in sorted(metrics.items())
        if isinstance(figures, dict) and isinstance(figures.get("weighted_f1"), int | float)
    ]
    return ", ".join(parts) or "-"


def render(command: str, result: dict[str, Any]) -> str:
    if command == "list":
        lines = [f"store: {result['store']}"]
        if not result["versions"]:
            lines.append("no versions published")
        for v in result["versions"]:
            mark = "*" if v["production"] else " "
            if not v["complete"]:
                lines.append(f"  {v['version']:<28} INCOMPLETE ({v['n_files']} objects, no manifest)")
                continue
            lines.append(
                f"{mark} {v['version']:<28} {v['created_at'] or '-':<26} {_fmt_size(v['size']):>9}  "
                f"weighted F1: {_fmt_f1(v['metrics'])}"
            )
        lines.append(f"production: {result['production'] or 'none'}")
        return "\n".join(lines)
    if command == "show":
        lines = [
            f"version:      {result['version']}{'  (production)' if result['production'] else ''}",
            f"location:     {result['location']}",
            f"created at:   {result['created_at'] or '-'}",
            f"published at: {result['published_at']}",
            f"size:         {_fmt_size(result['size'])} in {len(result['files'])} files",
        ]
        for kind, figures in sorted(result["metrics"].items()):
            shown = ", ".join(
                f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items()
            )
            lines.append(f"  {kind}: {shown}")
        lines.append("files:")
        lines.extend(
            f"  {f['path']:<40} {_fmt_size(f['size']):>9}  sha256 {f['sha256'][:16]}…"
            for f in result["files"]
        )
        return "\n".join(lines)
    if command == "publish":
        return f"published {result['version']} to {result['location']}"
    if command in {"promote", "rollback"}:
        if result["action"] == "rollback":
            return f"rolled back production from {result['rolled_back_from']} to {result['version']}"
        return f"promoted {result['version']} to production at {result['promoted_at']}"
    if command == "history":
        if not result["history"]:
            return "nothing promoted yet"
        lines = []
        for i, p in enumerate(result["history"]):
            label = "current " if i == 0 else "previous"
            extra = f" (rollback from {p['rolled_back_from']})" if p["action"] == "rollback" else ""
            lines.append(f"{label} {p['version']:<28} {p['promoted_at']}{extra}")
        return "\n".join(lines)
    if command == "verify":
        return (
            f"{result['version']}: {result['verified_files']} files match the manifest "
            f"({_fmt_size(result['size'])}); the serving runtime loads and self-checks it"
        )
    return json.dumps(result, indent=2)


# -- entry point ----------------------------------------------------------------------------

COMMANDS: dict[str, Callable[[ModelStore, argparse.Namespace], dict[str, Any]]] = {
    "list": cmd_list,
    "show": cmd_show,
    "publish": cmd_publish,
    "promote": cmd_promote,
    "rollback": cmd_rollback,
    "history": cmd_history,
    "verify": cmd_verify,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipelines.registry", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    # --json is also accepted after the command; SUPPRESS keeps it from resetting the global one.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("list", parents=[common], help="complete versions, production marked")
    p.add_argument("--all", action="store_true", help="also show incomplete versions")
    sub.add_parser("show", parents=[common], help="a version's manifest and metrics").add_argument("version")
    sub.add_parser("publish", parents=[common], help="upload a bundle directory").add_argument("bundle_dir")
    sub.add_parser(
        "promote", parents=[common], help="verify a version, then make it the production one"
    ).add_argument("version")
    sub.add_parser(
        "rollback", parents=[common], help="verify the previously promoted version, then go back to it"
    )
    sub.add_parser("history", parents=[common], help="current and previous promotions")
    sub.add_parser(
        "verify", parents=[common], help="check a version's files and load it as the API would"
    ).add_argument("version")
    return parser


def _write(text: str, *, err: bool = False) -> None:
    (sys.stderr if err else sys.stdout).write(text + "\n")


def main(argv: list[str] | None = None) -> int:
    from config import get_settings
    from pipelines.registry_ops import DatabaseRecordError

    args = build_parser().parse_args(argv)
    settings = get_settings()
    logging.basicConfig(
        level=settings.LOG_LEVEL, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    store = open_model_store(settings.MODEL_STORE_URI)
    try:
        result = COMMANDS[args.command](store, args)
    except DatabaseRecordError as exc:
        return _fail(args, exc, EXIT_DB)
    except tuple(cls for cls, _ in ERROR_EXIT_CODES) as exc:
        return _fail(args, exc, next(code for cls, code in ERROR_EXIT_CODES if isinstance(exc, cls)))
    _write(json.dumps(result, indent=2, default=str) if args.json else render(args.command, result))
    return EXIT_OK


def _fail(args: argparse.Namespace, exc: BaseException, code: int) -> int:
    message = str(exc.args[0]) if exc.args else str(exc)  # str(KeyError) would add quotes
    if args.json:
        _write(json.dumps({"error": type(exc).__name__, "message": message, "exit_code": code}))
    _write(f"error: {message}", err=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
