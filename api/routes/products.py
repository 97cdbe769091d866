"""The labelled product database: sellers submit confirmed products, admins curate them."""

from __future__ import annotations

import re
import time
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import IntegrityError

from api.deps import AdminUser, SessionDep, rate_limited
from api.inputs import InputError, check_stored_text, decode_upload, read_fields, shown
from api.params import IdPath, IdQuery, Offset, TextQuery, limit_query
from api.schemas import REQUEST_ID_PATTERN, CategoryOut, LabelStatus, Page, ProductOut, ProductUpdate
from db import logs, products
from db.tables import User
from models.preprocessing import combine_text

router = APIRouter(tags=["products"])
REQUEST_ID = re.compile(REQUEST_ID_PATTERN)


class ProductJSON(BaseModel):
    """A product a seller confirms: its text and/or image and the category finally chosen."""

    model_config = ConfigDict(extra="forbid")

    designation: str | None = None
    description: str | None = None
    image_base64: str | None = None
    prdtypecode: int
    request_id: str | None = Field(default=None, description="The /predict request this product answers")


@router.get("/categories", response_model=list[CategoryOut])
def list_categories(request: Request, session: SessionDep) -> list[CategoryOut]:
    """The product types and their names (the category mapper)."""
    return [
        CategoryOut(prdtypecode=c, category=n) for c, n in products.list_categories(session=session).items()
    ]


@router.post(
    "/products",
    response_model=ProductOut,
    status_code=status.HTTP_201_CREATED,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": ProductJSON.model_json_schema()},
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["prdtypecode"],
                        "properties": {
                            "designation": {"type": "string"},
                            "description": {"type": "string"},
                            "image": {"type": "string", "format": "binary"},
                            "prdtypecode": {"type": "integer"},
                            "request_id": {"type": "string"},
                        },
                    }
                },
            },
        }
    },
)
async def submit_product(
    request: Request, response: Response, user: Annotated[User, rate_limited("products")]
) -> ProductOut:
    """Store a labelled product for retraining (status "unverified"); one per prediction.

    A product that names the `request_id` of one of the seller's own predictions confirms
    it; confirming the same prediction again relabels that product (200) instead of adding
    another, so that a prediction counts once in the live hit rates.
    """
    state = request.app.state
    try:
        _, fields = await read_fields(
            request,
            state.settings,
            ProductJSON,
            {"designation", "description", "image", "prdtypecode", "request_id"},
        )
        designation, description = fields.get("designation") or "", fields.get("description") or ""
        check_stored_text("designation", designation, state.settings)
        check_stored_text("description", description, state.settings)
        try:
            prdtypecode = int(fields.get("prdtypecode"))
        except (TypeError, ValueError) as exc:
            raise InputError(422, "prdtypecode is required and must be an integer") from exc
        if prdtypecode not in state.categories:
            raise InputError(422, f"Unknown prdtypecode {shown(str(prdtypecode))}; see GET /categories")
        request_id = fields.get("request_id") or None
        if request_id is not None and not REQUEST_ID.match(request_id):
            raise InputError(422, NOT_YOUR_PREDICTION)
        image_bytes = fields.get("image_bytes")
        if image_bytes is not None:
            # Refuse what could not be trained on.
            await decode_upload(image_bytes, state.settings, state.decode_limiter)
        if not combine_text(designation, description) and image_bytes is None:
            raise InputError(422, "A product needs a designation, a description or an image")
    except InputError as exc:
        raise HTTPException(exc.status_code, exc.detail) from exc

    def store() -> tuple[ProductOut, bool]:
        if request_id is not None:
            _check_own_prediction(state, request_id, user.id)
        image_ref = None
        if image_bytes is not None:
            image_ref = state.image_store.put_content_addressed(
                image_bytes, suffix=".jpg", namespace="products"
            )
        fields = {
            "designation": designation,
            "description": description,
            "image_ref": image_ref,
            "prdtypecode": prdtypecode,
        }
        with state.session_factory() as session:
            for _attempt in range(2):  # a concurrent first confirmation wins: update it
                existing = (
                    products.get_product_by_request_id(session=session, request_id=request_id)
                    if request_id is not None
                    else None
                )
                if existing is not None:
                    if existing.created_by != user.id:
                        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, NOT_YOUR_PREDICTION)
                    product = products.update_confirmation(session=session, product=existing, **fields)
                    return ProductOut.model_validate(product), False
                try:
                    product = products.create_product(
                        session=session,
                        product_id=f"seller-{uuid.uuid4().hex}",
                        source="seller",
                        label_status="unverified",
                        request_id=request_id,
                        created_by=user.id,
                        **fields,
                    )
                except IntegrityError:
                    session.rollback()
                    continue
                return ProductOut.model_validate(product), True
        raise HTTPException(status.HTTP_409_CONFLICT, "This prediction is being confirmed by another request")

    product, created = await run_in_threadpool(store)
    if not created:
        response.status_code = status.HTTP_200_OK
    return product


NOT_YOUR_PREDICTION = "request_id must be the request_id of one of your own successful /predict answers"
# A prediction's log row is written in the background (within LOG_FLUSH_SECONDS, by whichever
# worker answered it): a confirmation sent right after the answer waits this long for it.
LOG_ARRIVAL_SECONDS = 3.0


def _check_own_prediction(state: Any, request_id: str, user_id: int) -> None:
    """422 unless `request_id` is a successful prediction of this user."""
    deadline = time.monotonic() + LOG_ARRIVAL_SECONDS
    while True:
        with state.session_factory() as session:
            log = logs.get_log(session=session, request_id=request_id)
        if log is not None or time.monotonic() > deadline:
            break
        state.log_writer.flush(timeout=0.25)  # ours is still queued, perhaps
        time.sleep(0.05)
    if log is None or log.user_id != user_id or log.status_code != 200:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, NOT_YOUR_PREDICTION)


@router.get("/products", response_model=Page[ProductOut])
def list_products(
    session: SessionDep,
    _admin: AdminUser,
    label_status: LabelStatus | None = None,
    source: TextQuery = None,
    prdtypecode: IdQuery = None,
    created_by: IdQuery = None,
    offset: Offset = 0,
    limit: Annotated[int, limit_query(200)] = 50,
) -> Page[ProductOut]:
    """Products of the database, newest first (admins only)."""
    total, rows = products.list_products(
        session=session,
        label_status=label_status,
        source=source,
        prdtypecode=prdtypecode,
        created_by=created_by,
        offset=offset,
        limit=limit,
    )
    return Page[ProductOut](
        items=[ProductOut.model_validate(p) for p in rows], total=total, offset=offset, limit=limit
    )


def _get_or_404(session, product_id: int):  # type: ignore[no-untyped-def]
    product = products.get_product(session=session, id=product_id)
    if product is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "Product not found")
    return product


@router.get("/products/{product_id}", response_model=ProductOut)
def read_product(product_id: IdPath, session: SessionDep, _admin: AdminUser) -> ProductOut:
    """One product (admins only)."""
    return ProductOut.model_validate(_get_or_404(session, product_id))


@router.get("/products/{product_id}/image", responses={200: {"content": {"image/*": {}}}})
def read_product_image(
    product_id: IdPath, request: Request, session: SessionDep, _admin: AdminUser
) -> Response:
    """The product's stored image (admins only)."""
    product = _get_or_404(session, product_id)
    if not product.image_ref:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "This product has no image")
    return Response(request.app.state.image_store.get(product.image_ref), media_type="image/jpeg")


@router.patch("/products/{product_id}", response_model=ProductOut)
def update_product(
    product_id: IdPath, body: ProductUpdate, session: SessionDep, _admin: AdminUser
) -> ProductOut:
    """Verify or quarantine a product (admins only)."""
    product = _get_or_404(session, product_id)
    return ProductOut.model_validate(
        products.set_label_status(
            session=session, product=product, label_status=body.label_status, reason=body.reason
        )
    )


@router.delete("/products/{product_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_product(product_id: IdPath, session: SessionDep, _admin: AdminUser) -> Response:
    """Delete a product (admins only)."""
    products.delete_product(session=session, product=_get_or_404(session, product_id))
    return Response(status_code=status.HTTP_204_NO_CONTENT)
