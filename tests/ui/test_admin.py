"""The admin console in headless Chromium, against the real app and a trained quick bundle."""

from datetime import UTC, datetime, timedelta

import pytest

try:
    from playwright.sync_api import expect
except ImportError:  # tests/ui/conftest.py skips these tests (or fails them on CI) and says why
    expect = None

from pipelines import monitor
from tests.api.conftest import ADMIN
from tests.api.serving import copy_bundle_as, jpeg_bytes, publish
from tests.ui.conftest import PHONE, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SELLER = ("dora", "dora-password-1")


def open_console(live_server, new_page, viewport=None):  # type: ignore[no-untyped-def]
    page = new_page(viewport) if viewport else new_page()
    page.goto(live_server.url + "/admin")
    sign_in(page, *ADMIN)
    expect(page.locator("#console")).to_be_visible()
    return page


def chart_drawn(page, canvas: str) -> bool:  # type: ignore[no-untyped-def]
    return page.evaluate("(selector) => Boolean(Chart.getChart(document.querySelector(selector)))", canvas)


def test_an_admin_creates_a_seller_and_sees_their_predictions_in_the_logs(live_server, new_page, shoot):
    page = open_console(live_server, new_page)
    page.locator("#new-username").fill(SELLER[0])
    page.locator("#new-password").fill(SELLER[1])
    page.get_by_label("Role").select_option("seller")
    page.get_by_role("button", name="Create user").click()
    expect(page.locator("#users-message")).to_have_text("Created seller dora.")
    row = page.locator("#users-table tr[data-username=dora]")
    expect(row).to_contain_text("active")

    token = live_server.token(*SELLER)
    with live_server.client() as client:
        headers = {"Authorization": f"Bearer {token}"}
        text = client.post("/predict", data={"designation": "Roman policier"}, headers=headers)
        image = client.post(
            "/predict", files={"image": ("p.jpg", jpeg_bytes(), "image/jpeg")}, headers=headers
        )
        blank = client.post("/predict", data={"designation": "<p> </p>"}, headers=headers)
    assert (text.status_code, image.status_code, blank.status_code) == (200, 200, 422)
    live_server.flush_logs()

    page.get_by_label("User", exact=True).select_option(label="dora")
    page.get_by_role("button", name="Apply").click()
    rows = page.locator("#logs-table tbody tr")
    expect(rows).to_have_count(3)
    assert set(page.locator("#logs-table tbody tr td:nth-child(2)").all_inner_texts()) == {"dora"}
    expect(page.locator("#logs-range")).to_have_text("1–3 of 3")
    page.get_by_label("Model", exact=True).select_option("image")
    page.get_by_role("button", name="Apply").click()
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("image")
    page.get_by_label("Model", exact=True).select_option("")
    page.get_by_label("Outcome").select_option("invalid_input")
    page.get_by_role("button", name="Apply").click()
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("422")
    shoot(page, "logs")

    page.get_by_role("button", name="Refresh").click()
    expect(page.locator("#stats-summary")).to_contain_text("3 (1 failed)")
    expect(page.locator("#chart-traffic")).to_be_visible()
    assert chart_drawn(page, "#chart-traffic") and chart_drawn(page, "#chart-latency")
    assert chart_drawn(page, "#chart-classes")
    expect(page.locator("#chart-hits").locator("xpath=ancestor::figure").locator(".empty")).to_be_visible()
    expect(page.locator("#report")).to_contain_text("No report yet")
    shoot(page, "console")

    page.get_by_role("button", name="Deactivate dora").click()
    dialog = page.locator("#confirm-dialog")
    expect(dialog).to_be_visible()
    dialog.get_by_role("button", name="Deactivate").click()
    expect(row).to_contain_text("deactivated")
    with live_server.client() as client:
        response = client.post("/login", data={"username": SELLER[0], "password": SELLER[1]})
    assert response.status_code == 403
    page.get_by_role("button", name="Reactivate dora").click()
    expect(row).not_to_contain_text("deactivated")


def test_an_admin_promotes_a_version_and_rolls_back_after_confirming(
    live_server, new_page, shoot, ui_settings, quick_bundle, tmp_path
):
    first = live_server.app.state.models.status()["version"]
    second = publish(
        ui_settings.MODEL_STORE_URI,
        copy_bundle_as(quick_bundle, tmp_path / "v2", "ui-test-v2"),
        promote=False,
    )
    page = open_console(live_server, new_page)
    versions = page.locator("#versions-table")
    expect(versions.locator(f"th[data-version='{first}']")).to_contain_text("production")
    expect(versions).to_contain_text("Weighted F1")
    expect(versions).to_contain_text("Set coverage")

    promote = page.get_by_role("button", name=f"Promote {second}")
    dialog = page.locator("#confirm-dialog")
    promote.click()
    expect(dialog).to_contain_text(f"Promote {second}?")
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_be_hidden()
    assert live_server.app.state.models.status()["version"] == first

    promote.click()
    dialog.get_by_role("button", name="Promote").click()
    expect(page.locator("#models-message")).to_contain_text(f"Production: {second}")
    expect(versions.locator(f"th[data-version='{second}']")).to_contain_text("production")
    shoot(page, "promoted")
    assert live_server.app.state.models.status()["version"] == second

    page.get_by_role("button", name="Roll back production…").click()
    dialog.get_by_role("button", name="Roll back").click()
    expect(page.locator("#models-message")).to_contain_text(f"Production: {first}")
    expect(versions.locator(f"th[data-version='{first}']")).to_contain_text("production")
    assert live_server.app.state.models.status()["version"] == first


def test_the_console_shows_the_latest_monitoring_report_and_refuses_sellers(
    live_server, new_page, shoot, session_factory
):
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    reference = monitor.Reference(
        class_shares={"2583": 0.5, "10": 0.5},
        text_length_shares={"1-49": 1.0},
        image_share=0.2,
        text_chars_mean=30.0,
        source="training set",
    )
    for days, confidence in ((1, 0.9), (0, 0.3)):
        logs = [
            monitor.LogRow(
                request_id=f"r{days}-{i}",
                outcome="ok",
                model_kind="text",
                top_prdtypecode=2583,
                top_probability=confidence,
                predicted=(2583, 10),
                text_chars=20,
            )
            for i in range(60)
        ]
        confirmed = {f"r{days}-{i}": 10 for i in range(25)}
        report = monitor.build_report(logs, confirmed, reference, monitor.Thresholds())
        with session_factory() as session:
            monitor.store_report(
                session=session,
                start=end - timedelta(days=days + 1),
                end=end - timedelta(days=days),
                model_version="v1",
                report=report,
            )

    page = open_console(live_server, new_page)
    report = page.locator("#report")
    expect(report).to_contain_text("flagged")
    expect(report).to_contain_text("(low_top1_hit_rate)")
    expect(report.locator("#report-table")).to_contain_text("0.0%")  # no confirmed category was the top one
    expect(page.locator("#chart-confidence")).to_be_visible()
    expect(page.locator("#chart-trend")).to_be_visible()
    assert chart_drawn(page, "#chart-confidence") and chart_drawn(page, "#chart-trend")
    page.locator("#quality").scroll_into_view_if_needed()
    shoot(page, "report")

    live_server.register(*SELLER)
    seller_page = new_page(PHONE)
    seller_page.goto(live_server.url + "/admin")
    sign_in(seller_page, *SELLER)
    expect(seller_page.locator("#refused")).to_be_visible()
    expect(seller_page.locator("#refused-message")).to_contain_text("This console is for administrators")
    expect(seller_page.locator("#console")).to_be_hidden()


def test_the_console_fits_a_phone_screen(live_server, new_page, shoot):
    page = open_console(live_server, new_page, PHONE)
    expect(page.locator("#versions-table thead th").nth(1)).to_be_visible()
    shoot(page, "phone")
    width, viewport = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
    assert width <= viewport == PHONE["width"]
