"""Model versions: what the store holds, what is in production, what this API serves.

Promotion and rollback go through `pipelines.registry_ops`, the one path the CLI and the
retraining pipeline take too: the target is verified (checksums, bundle, the serving runtime's
load and self-check) before the pointer moves, and a refusal is a 409 with the reason.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict

from api.deps import AdminUser, CurrentUser
from api.model_info import version_training_data
from api.model_manager import ReloadError
from db import monitoring
from pipelines.registry_ops import DatabaseRecordError, promote_version, rollback_production
from store.model_store import ModelStoreError

router = APIRouter(prefix="/models", tags=["models"])
logger = logging.getLogger(__name__)


class ReloadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: str | None = None


@router.get("")
async def list_models(request: Request, user: CurrentUser) -> dict[str, Any]:
    """Versions in the model store, the production one, and the one this API has loaded."""
    state = request.app.state
    # Where the models live (bucket, paths) is for admins: sellers get the rest without it.
    is_admin = user.role == "admin"

    def read_store() -> dict[str, Any]:
        store = state.model_store
        try:
            versions = [
                {**v.to_dict(), "location": store.location(v.version)} if is_admin else v.to_dict()
                for v in store.list_versions()
            ]
            pointer = store.production_pointer()
            production = pointer.current.version if pointer else None
            # What a rollback would return to (None: the button is disabled in the console).
            rollback_target = pointer.history[0].version if pointer and pointer.history else None
            reachable = True
        except Exception as exc:  # the store being down must not break this page
            logger.warning("model store unreachable: %s", exc)
            versions, production, rollback_target, reachable = [], None, None, False
        for entry in versions:  # what each version was trained on (a synthetic demo, ...)
            entry["training_data"] = version_training_data(store, entry["version"])
            if not is_admin:  # the detail names local folders
                entry["training_data"]["detail"] = ""
        listing = {
            "store_reachable": reachable,
            "versions": versions,
            "production": production,
            "rollback_target": rollback_target,
        }
        return {"store": store.uri, **listing} if is_admin else listing

    result = await run_in_threadpool(read_store)
    result["loaded"] = state.models.status(redact=not is_admin)
    if is_admin:
        result["shadow"] = await run_in_threadpool(_shadow_figures, request, None)
    served = next((v for v in result["versions"] if v["version"] == result["loaded"].get("version")), None)
    # True when the model answering now was trained on the synthetic catalogue: the pages say so.
    result["demo"] = bool(served and served["training_data"]["demo"])
    return result


@router.post("/reload")
async def reload_model(
    request: Request, _admin: AdminUser, body: ReloadRequest | None = None
) -> dict[str, Any]:
    """Load the production version (or a given one) now, checked before the swap (admins only)."""
    manager = request.app.state.models
    try:
        result = await run_in_threadpool(manager.reload, body.version if body else None)
    except ReloadError as exc:
        raise HTTPException(
            status.HTTP_409_CONFLICT, f"{exc}; still serving {manager.status()['version']}"
        ) from exc
    except ValueError as exc:  # a malformed version id
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
    return {
        "changed": result.changed,
        "version": result.version,
        "previous": result.previous,
        "detail": result.detail,
    }


def _registry_call(request: Request, action: str, version: str | None = None) -> dict[str, Any]:
    """Promote or roll back in the store (and the versions table), then load the result."""
    state = request.app.state
    try:
        if action == "promote":
            promotion = promote_version(
                state.model_store,
                state.session_factory,
                version or "",
                gate={"reason": "manual promotion by an admin"},
            )
        else:
            promotion = rollback_production(state.model_store, state.session_factory)
    except ModelStoreError as exc:  # unknown version, or refused by the verification
        code = status.HTTP_404_NOT_FOUND if isinstance(exc, LookupError) else status.HTTP_409_CONFLICT
        raise HTTPException(code, str(exc)) from exc
    except DatabaseRecordError as exc:  # the pointer moved; the poller loads it once it sees it
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, str(exc), headers={"Retry-After": "5"}
        ) from exc
    try:
        reload = state.models.reload()
        detail = reload.detail
    except ReloadError as exc:
        detail = f"promoted, but this API could not load it: {exc}"
    return {
        "production": promotion.version,
        "action": promotion.action,
        "loaded": state.models.status(),
        "detail": detail,
    }


@router.post("/{version}/promote")
async def promote(version: str, request: Request, _admin: AdminUser) -> dict[str, Any]:
    """Make a published version the production one and load it (admins only)."""
    return await run_in_threadpool(_registry_call, request, "promote", version)


@router.post("/rollback")
async def rollback(request: Request, _admin: AdminUser) -> dict[str, Any]:
    """Return production to the previously promoted version and load it (admins only)."""
    return await run_in_threadpool(_registry_call, request, "rollback")


def _shadow_figures(request: Request, version: str | None) -> dict[str, Any]:
    """What this API shadows, and both live hit rates on the requests the shadow answered."""
    state = request.app.state
    status_ = state.shadow.status()
    version = version or status_["version"]
    if version is None:
        return {**status_, "live": None}
    try:
        pointer = state.model_store.shadow()
    except Exception:  # the store being down: the figures since the time this API knows
        pointer = None
    since_text = (pointer or {}).get("since") if (pointer or {}).get("version") == version else None
    since = datetime.fromisoformat(since_text or status_["since"] or "1970-01-01T00:00:00+00:00")
    with state.session_factory() as session:
        rows = monitoring.shadow_confirmed(
            session=session, version=version, since=since, until=datetime.now(UTC)
        )
    return {
        **status_,
        "version": version,
        "live": {**monitoring.shadow_hit_rates(rows), "since": since.isoformat()},
    }


@router.post("/{version}/shadow")
async def start_shadow(version: str, request: Request, _admin: AdminUser) -> dict[str, Any]:
    """Shadow a published version: every API runs it off the request path on SHADOW_SHARE of requests (admins only)."""
    state = request.app.state
    try:
        pointer = await run_in_threadpool(state.model_store.set_shadow, version)
    except ModelStoreError as exc:
        code = status.HTTP_404_NOT_FOUND if isinstance(exc, LookupError) else status.HTTP_409_CONFLICT
        raise HTTPException(code, str(exc)) from exc
    except ValueError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
    await run_in_threadpool(state.shadow.refresh)
    return {"pointer": pointer, **(await run_in_threadpool(_shadow_figures, request, version))}


@router.get("/{version}/shadow")
async def read_shadow(version: str, request: Request, _admin: AdminUser) -> dict[str, Any]:
    """Live top-1 hit rates of production and of a shadowed version on the same confirmed requests (admins only)."""
    return await run_in_threadpool(_shadow_figures, request, version)


@router.delete("/shadow")
async def stop_shadow(request: Request, _admin: AdminUser) -> dict[str, Any]:
    """Stop shadowing (admins only)."""
    state = request.app.state
    await run_in_threadpool(state.model_store.set_shadow, None)
    await run_in_threadpool(state.shadow.refresh)
    return state.shadow.status()
