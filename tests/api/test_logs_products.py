import base64
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from db.tables import Product
from tests.api.conftest import ADMIN, bearer, login
from tests.api.serving import jpeg_bytes, publish
from tests.api.test_predict import TITLE, predict

pytestmark = pytest.mark.slow


@pytest.fixture
def client(settings, quick_bundle):
    from fastapi.testclient import TestClient

    from api.main import create_app

    publish(settings.MODEL_STORE_URI, quick_bundle)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture
def other_seller(client, admin_token):
    client.post(
        "/register",
        json={"username": "seller2", "password": "seller2-pass-4821"},
        headers=bearer(admin_token),
    )
    return login(client, "seller2", "seller2-pass-4821")


def test_sellers_read_only_their_own_logs_newest_first(client, seller_token, other_seller):
    first = predict(client, seller_token, designation=TITLE).json()["request_id"]
    second = predict(client, seller_token, designation="Roman policier poche").json()["request_id"]
    predict(client, other_seller, designation=TITLE)
    client.app.state.log_writer.flush()
    page = client.get("/logs/me", headers=bearer(seller_token)).json()
    assert page["total"] == 2
    assert [item["request_id"] for item in page["items"]] == [second, first]
    assert all(item["username"] == "seller1" for item in page["items"])


def test_own_logs_are_paginated_and_filtered_by_date(client, seller_token):
    for _ in range(3):
        predict(client, seller_token, designation=TITLE)
    client.app.state.log_writer.flush()
    page = client.get("/logs/me?limit=2&offset=0", headers=bearer(seller_token)).json()
    assert (page["total"], len(page["items"])) == (3, 2)
    rest = client.get("/logs/me?limit=2&offset=2", headers=bearer(seller_token)).json()
    assert len(rest["items"]) == 1
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert client.get("/logs/me", params={"since": future}, headers=bearer(seller_token)).json()["total"] == 0
    assert client.get("/logs/me", params={"until": future}, headers=bearer(seller_token)).json()["total"] == 3
    assert client.get("/logs/me?since=yesterday", headers=bearer(seller_token)).status_code == 422
    assert client.get("/logs/me?limit=1000", headers=bearer(seller_token)).status_code == 422


def test_admins_filter_every_log_by_user_model_and_outcome(client, admin_token, seller_token, other_seller):
    predict(client, seller_token, designation=TITLE)
    predict(client, seller_token, image=jpeg_bytes())
    predict(client, other_seller, designation="   ")
    client.app.state.log_writer.flush()
    headers = bearer(admin_token)
    assert client.get("/logs", headers=headers).json()["total"] == 3
    assert client.get("/logs?username=seller1", headers=headers).json()["total"] == 2
    assert client.get("/logs?model_kind=image", headers=headers).json()["total"] == 1
    failed = client.get("/logs?outcome=invalid_input", headers=headers).json()
    assert failed["total"] == 1 and failed["items"][0]["username"] == "seller2"
    assert client.get("/logs", headers=bearer(seller_token)).status_code == 403


def test_a_seller_confirms_a_product_which_is_stored_unverified(
    client, seller_token, session_factory, settings
):
    answer = predict(client, seller_token, designation=TITLE, image=jpeg_bytes()).json()
    response = client.post(
        "/products",
        data={"designation": TITLE, "prdtypecode": "2583", "request_id": answer["request_id"]},
        files={"image": ("p.jpg", jpeg_bytes(), "image/jpeg")},
        headers=bearer(seller_token),
    )
    assert response.status_code == 201, response.text
    product = response.json()
    assert product["label_status"] == "unverified"
    assert product["source"] == "seller"
    assert product["request_id"] == answer["request_id"]
    with session_factory() as session:
        stored = session.scalars(select(Product)).one()
    assert stored.prdtypecode == 2583
    assert client.app.state.image_store.exists(stored.image_ref)


def test_products_can_be_submitted_as_json_with_base64_images(client, seller_token):
    response = client.post(
        "/products",
        json={"image_base64": base64.b64encode(jpeg_bytes()).decode(), "prdtypecode": 1560},
        headers=bearer(seller_token),
    )
    assert response.status_code == 201, response.text
    assert response.json()["image_ref"]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"designation": TITLE, "prdtypecode": 1234}, 422),
        ({"designation": TITLE}, 422),
        ({"designation": "  ", "prdtypecode": 2583}, 422),
        ({"designation": TITLE, "prdtypecode": 2583, "image_base64": "%%%"}, 422),
        ({"designation": TITLE, "prdtypecode": 2583, "request_id": "x" * 80}, 422),
        ({"designation": TITLE, "prdtypecode": "abc"}, 422),
    ],
)
def test_bad_products_are_refused(client, seller_token, body, status):
    assert client.post("/products", json=body, headers=bearer(seller_token)).status_code == status


def test_admins_list_read_verify_and_delete_products(client, admin_token, seller_token):
    created = client.post(
        "/products", json={"designation": TITLE, "prdtypecode": 2583}, headers=bearer(seller_token)
    ).json()
    headers = bearer(admin_token)
    listing = client.get("/products", headers=headers).json()
    assert listing["total"] == 1 and listing["items"][0]["id"] == created["id"]
    assert client.get(f"/products/{created['id']}", headers=headers).json()["designation"] == TITLE
    verified = client.patch(f"/products/{created['id']}", json={"label_status": "verified"}, headers=headers)
    assert verified.json()["label_status"] == "verified"
    assert client.get("/products?label_status=unverified", headers=headers).json()["total"] == 0
    assert client.delete(f"/products/{created['id']}", headers=headers).status_code == 204
    assert client.get(f"/products/{created['id']}", headers=headers).status_code == 404
    assert client.delete(f"/products/{created['id']}", headers=headers).status_code == 404


def test_sellers_cannot_list_read_or_delete_products(client, seller_token):
    headers = bearer(seller_token)
    assert client.get("/products", headers=headers).status_code == 403
    assert client.get("/products/1", headers=headers).status_code == 403
    assert client.delete("/products/1", headers=headers).status_code == 403


def test_categories_list_the_27_product_types(client):
    categories = client.get("/categories").json()
    assert len(categories) == 27
    assert {"prdtypecode": 2583, "category": "Piscine et accessoires"} in categories


def test_products_need_a_token(client):
    assert client.post("/products", json={"designation": TITLE, "prdtypecode": 2583}).status_code == 401
    assert login(client, *ADMIN)
