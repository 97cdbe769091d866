"""The seller's listing page in headless Chromium, against the real app and a trained quick bundle."""

import base64
import re

import pytest

try:
    from playwright.sync_api import expect
except ImportError:  # tests/ui/conftest.py skips these tests (or fails them on CI) and says why
    expect = None
from sqlalchemy import select

from api.security import create_access_token
from db.categories import CATEGORIES
from db.tables import PredictionLog, Product
from tests.api.serving import jpeg_bytes
from tests.ui.conftest import PHONE, SECRET_KEY, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SELLER = ("carla", "carla-password-1")
TITLE = "Bâche de piscine hors sol 4x8 m avec filtre à sable"
EXPIRED = "Votre session a expiré, veuillez vous reconnecter."


def drop_file(page, selector: str, name: str, data: bytes, mime: str) -> None:  # type: ignore[no-untyped-def]
    """Drag a file onto an element, as a user dropping it from their file manager would."""
    transfer = page.evaluate_handle(
        """([name, encoded, mime]) => {
            const bytes = Uint8Array.from(atob(encoded), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, { type: mime }));
            return transfer;
        }""",
        [name, base64.b64encode(data).decode(), mime],
    )
    page.dispatch_event(selector, "dragenter", {"dataTransfer": transfer})
    page.dispatch_event(selector, "dragover", {"dataTransfer": transfer})
    page.dispatch_event(selector, "drop", {"dataTransfer": transfer})


def signed_in_seller(live_server, new_page, viewport=None):  # type: ignore[no-untyped-def]
    seller = live_server.register(*SELLER)
    page = new_page(viewport) if viewport else new_page()
    page.goto(live_server.url + "/")
    sign_in(page, *SELLER)
    expect(page.locator("#app")).to_be_visible()
    return seller, page


def predict_requests(page) -> list[str]:  # type: ignore[no-untyped-def]
    sent: list[str] = []
    page.on("request", lambda request: sent.append(request.url) if request.url.endswith("/predict") else None)
    return sent


def test_a_seller_gets_suggestions_adds_a_photo_and_confirms_a_category(
    live_server, new_page, shoot, session_factory
):
    page = new_page()
    page.goto(live_server.url + "/")
    expect(page.get_by_role("heading", name="Connexion")).to_be_visible()
    shoot(page, "1-sign-in")
    seller = live_server.register(*SELLER)
    sign_in(page, *SELLER)
    expect(page.locator("#whoami")).to_have_text("carla (vendeur)")
    expect(page.get_by_label("Titre")).to_be_focused()

    sent = predict_requests(page)
    page.get_by_label("Titre").press_sequentially(TITLE, delay=15)
    suggestions = page.locator("#suggestions .suggestion")
    expect(suggestions.first).to_be_visible()
    assert len(sent) <= 3, f"typing {len(TITLE)} characters sent {len(sent)} requests: not debounced"
    expect(page.locator("#suggestions-status")).to_contain_text("Meilleure correspondance")
    expect(page.locator("#details-list")).to_contain_text("Modèle : texte, version")
    assert page.locator("#suggestions .suggestion.in-set").count() >= 1
    names = page.locator("#suggestions .suggestion .name").all_text_contents()
    assert len(names) >= 5 and set(names) <= set(CATEGORIES.values())
    shoot(page, "2-suggestions")

    # Keyboard order: title, description, then the photo picker (a real button).
    page.get_by_label("Titre").focus()
    page.keyboard.press("Tab")
    expect(page.get_by_label("Description")).to_be_focused()
    page.keyboard.press("Tab")
    expect(page.get_by_role("button", name="Choisir une photo…")).to_be_focused()

    with page.expect_response(lambda r: r.url.endswith("/predict")) as answer:
        drop_file(page, "#dropzone", "pool.jpg", jpeg_bytes(), "image/jpeg")
    request_id = answer.value.json()["request_id"]
    expect(page.locator("#image-preview")).to_be_visible()
    expect(page.locator("#image-name")).to_have_text("pool.jpg")
    expect(page.locator("#details-list")).to_contain_text("texte + image")
    shoot(page, "3-photo")

    chosen = page.locator("#suggestions .suggestion.in-set").first
    code = int(chosen.get_attribute("data-code"))
    chosen.focus()
    page.keyboard.press("Enter")
    confirmation = page.locator("#confirmation")
    expect(confirmation).to_be_visible()
    expect(confirmation).to_contain_text("Annonce enregistrée")
    expect(confirmation).to_contain_text(CATEGORIES[code])
    expect(chosen).to_have_class(re.compile(r"\bchosen\b"))
    shoot(page, "4-confirmed")

    live_server.flush_logs()
    with session_factory() as session:
        (product,) = session.scalars(select(Product)).all()
        log = session.scalar(select(PredictionLog).where(PredictionLog.request_id == request_id))
    assert (product.designation, product.prdtypecode, product.request_id) == (TITLE, code, request_id)
    assert product.created_by == seller["id"] and product.label_status == "unverified"
    assert product.image_ref is not None
    assert (log.model_kind, log.user_id) == ("fusion", seller["id"])


def test_a_photo_the_service_cannot_read_is_refused_with_its_reason(live_server, new_page, shoot):
    _, page = signed_in_seller(live_server, new_page)
    drop_file(page, "#dropzone", "broken.jpg", b"these bytes are not a photo", "image/jpeg")
    error = page.locator("#image-error")
    expect(error).to_be_visible()
    expect(error).to_have_text("Cette photo ne peut pas être lue. Essayez une photo JPEG, PNG ou WebP.")
    expect(page.locator("#image-preview")).to_be_hidden()
    shoot(page, "bad-photo")

    # The file picker works too, and a good photo alone gets the image model's suggestions.
    page.locator("#image-input").set_input_files(
        files=[{"name": "lamp.jpg", "mimeType": "image/jpeg", "buffer": jpeg_bytes(color=(200, 180, 40))}]
    )
    expect(error).to_be_hidden()
    expect(page.locator("#details-list")).to_contain_text("Modèle : image")
    expect(page.locator("#suggestions .suggestion").first).to_be_visible()


def test_an_expired_session_goes_back_to_sign_in_with_a_message(live_server, new_page, shoot):
    seller, page = signed_in_seller(live_server, new_page)
    page.get_by_label("Titre").fill(TITLE)
    expect(page.locator("#suggestions .suggestion").first).to_be_visible()

    expired = create_access_token(
        user_id=seller["id"],
        username=seller["username"],
        role="seller",
        token_version=0,
        secret=SECRET_KEY,
        minutes=-1,
    )
    page.evaluate("token => sessionStorage.setItem('rakuten.token', token)", expired)
    page.get_by_label("Titre").press_sequentially(" bleue")
    expect(page.locator("#signin")).to_be_visible()
    expect(page.locator("#signin-message")).to_have_text(EXPIRED)
    expect(page.locator("#app")).to_be_hidden()
    expect(page.locator("#signin-username")).to_be_focused()
    shoot(page, "expired")
    assert page.evaluate("() => sessionStorage.getItem('rakuten.token')") is None

    # Signing in again brings the listing back as it was.
    sign_in(page, *SELLER)
    expect(page.get_by_label("Titre")).to_have_value(TITLE + " bleue")
    expect(page.locator("#suggestions .suggestion").first).to_be_visible()

    # An expired token found when the page opens is refused the same way.
    page.evaluate("token => sessionStorage.setItem('rakuten.token', token)", expired)
    page.reload()
    expect(page.locator("#signin-message")).to_have_text(EXPIRED)


def test_an_unavailable_service_is_explained_and_can_be_retried(live_server, new_page, shoot):
    _, page = signed_in_seller(live_server, new_page)
    page.route(
        "**/predict",
        lambda route: route.fulfill(
            status=503,
            content_type="application/json",
            body='{"detail": "No model is loaded yet; try again shortly"}',
        ),
    )
    page.get_by_label("Titre").fill(TITLE)
    error = page.locator("#predict-error")
    expect(error).to_contain_text("momentanément indisponible")
    expect(page.locator("#details-list")).to_contain_text("No model is loaded yet")
    retry = page.get_by_role("button", name="Réessayer")
    expect(retry).to_be_visible()
    shoot(page, "unavailable")

    page.unroute("**/predict")
    page.route("**/predict", lambda route: route.abort("connectionrefused"))
    retry.click()
    expect(error).to_contain_text("injoignable")

    page.unroute("**/predict")
    retry.click()
    expect(page.locator("#suggestions .suggestion").first).to_be_visible()
    expect(error).to_be_hidden()


def test_the_listing_page_fits_a_phone_screen(live_server, new_page, shoot):
    _, page = signed_in_seller(live_server, new_page, PHONE)
    page.get_by_label("Titre").fill(TITLE)
    drop_file(page, "#dropzone", "pool.jpg", jpeg_bytes(), "image/jpeg")
    expect(page.locator("#details-list")).to_contain_text("texte + image")
    page.locator("#suggestions .suggestion.in-set").first.click()
    expect(page.locator("#confirmation")).to_be_visible()
    shoot(page, "phone")
    width, viewport = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
    assert width <= viewport == PHONE["width"]
    box = page.locator("#suggestions .suggestion").first.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]
