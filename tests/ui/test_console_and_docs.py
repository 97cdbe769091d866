"""The admin console of issue 14, the offline API docs, and axe-core on both pages."""

import pytest

try:
    from playwright.sync_api import expect
except ImportError:  # tests/ui/conftest.py skips these tests (or fails them on CI) and says why
    expect = None

from tests.api.conftest import ADMIN
from tests.api.serving import copy_bundle_as, publish
from tests.ui.conftest import PHONE, axe_violations, block_the_internet
from tests.ui.test_admin import open_console
from tests.ui.test_listing import signed_in_seller

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SELLER = ("erin", "erin-password-1")
TITLE = "Lampe de chevet en laiton, abat-jour lin"


def test_rollback_is_disabled_with_nothing_to_roll_back_and_names_its_target(
    live_server, new_page, ui_settings, quick_bundle, tmp_path
):
    first = live_server.app.state.models.status()["version"]
    page = open_console(live_server, new_page)
    rollback = page.locator("#rollback")
    expect(page.locator("#versions-table th[data-version]")).to_have_count(1)
    expect(rollback).to_be_disabled()

    second = publish(ui_settings.MODEL_STORE_URI, copy_bundle_as(quick_bundle, tmp_path / "v2", "ui-v2"))
    live_server.app.state.models.reload()
    page.reload()
    expect(page.locator("#console")).to_be_visible()
    expect(rollback).to_be_enabled()
    rollback.click()
    dialog = page.locator("#confirm-dialog")
    expect(dialog).to_contain_text(f"Roll back production to {first}?")
    dialog.get_by_role("button", name="Roll back").click()
    expect(page.locator("#models-message")).to_contain_text(f"Production: {first}")
    expect(page.locator("#models-message")).not_to_contain_text("..")
    assert second != first


def test_each_version_shows_its_training_data_and_the_demo_is_flagged(live_server, new_page):
    page = open_console(live_server, new_page)
    table = page.locator("#versions-table")
    expect(table).to_contain_text("Training data")
    expect(table).to_contain_text("synthetic demo catalogue")
    expect(table).to_contain_text("Trained")
    expect(table).to_contain_text("Weighted F1")
    expect(page.locator("#models-demo")).to_be_visible()
    width = page.evaluate(
        "() => [document.querySelector('#versions-table').offsetWidth,"
        " document.querySelector('#versions-table').parentElement.clientWidth]"
    )
    assert width[0] >= width[1] - 2, f"the models table fills {width[0]} of {width[1]} px"


def test_the_log_shows_the_title_typed_and_links_to_the_saved_product(live_server, new_page):
    live_server.register(*SELLER)
    token = live_server.token(*SELLER)
    headers = {"Authorization": f"Bearer {token}"}
    with live_server.client() as client:
        answer = client.post("/predict", data={"designation": TITLE}, headers=headers).json()
        live_server.flush_logs()
        code = answer["predictions"][0]["prdtypecode"]
        saved = client.post(
            "/products",
            data={"designation": TITLE, "prdtypecode": str(code), "request_id": answer["request_id"]},
            headers=headers,
        )
    assert saved.status_code == 201, saved.text
    page = open_console(live_server, new_page)
    row = page.locator(f"#logs-table tr[data-request-id='{answer['request_id']}']")
    expect(row).to_contain_text(TITLE)
    row.get_by_role("button", name=f"Product saved from request {answer['request_id']}").click()
    dialog = page.locator("#confirm-dialog")
    expect(dialog).to_contain_text(saved.json()["product_id"])
    expect(dialog).to_contain_text(TITLE)


def test_an_admin_runs_the_quality_report_now(live_server, new_page):
    live_server.register(*SELLER)
    token = live_server.token(*SELLER)
    with live_server.client() as client:
        client.post("/predict", data={"designation": TITLE}, headers={"Authorization": f"Bearer {token}"})
    live_server.flush_logs()
    page = open_console(live_server, new_page)
    report = page.locator("#report")
    expect(report).to_contain_text("No report yet")
    expect(report).to_contain_text("python -m pipelines.monitor")
    page.get_by_role("button", name="Run the quality report now").click()
    expect(page.locator("#report-message")).to_contain_text("stored")
    expect(report.locator("#report-table")).to_be_visible()
    expect(report).to_contain_text("Requests (answered)")


def test_the_console_tables_reflow_on_a_phone(live_server, new_page, shoot):
    live_server.register(*SELLER)
    token = live_server.token(*SELLER)
    with live_server.client() as client:
        client.post("/predict", data={"designation": TITLE}, headers={"Authorization": f"Bearer {token}"})
    live_server.flush_logs()
    page = open_console(live_server, new_page, PHONE)
    expect(page.locator("#logs-table tbody tr").first).to_contain_text(TITLE)
    for table in ("#users-table", "#logs-table"):
        wrap = page.locator(table).locator("xpath=..")
        scroll, client_width = wrap.evaluate("w => [w.scrollWidth, w.clientWidth]")
        assert scroll <= client_width, f"{table} is cut off: {scroll} > {client_width} px"
    shoot(page, "phone-reflow")


def test_the_api_docs_work_with_the_network_blocked(live_server, new_page):
    page = new_page()
    refused = block_the_internet(page)
    page.goto(live_server.url + "/docs")
    expect(page.locator(".opblock").first).to_be_visible()
    expect(page.locator("#swagger-ui")).to_contain_text("/predict/batch")
    assert refused == []
    page.goto(live_server.url + "/redoc")
    expect(page.get_by_text("Recommend product types for many listings at once").first).to_be_visible()
    # ReDoc's only outside request is the "API docs by Redocly" footer logo: cosmetic.
    assert all(url.endswith("/logo-mini.svg") for url in refused), refused


def test_the_seller_page_has_no_serious_accessibility_violation(live_server, new_page, axe_script):
    _, page = signed_in_seller(live_server, new_page)
    page.locator("#designation").fill(TITLE)
    expect(page.locator("#suggestions .suggestion").first).to_be_visible()
    violations = axe_violations(page, axe_script)
    assert not violations, "\n".join(violations)


def test_the_admin_console_has_no_serious_accessibility_violation(live_server, new_page, axe_script):
    page = open_console(live_server, new_page)
    expect(page.locator("#versions-table tbody tr").first).to_be_visible()
    violations = axe_violations(page, axe_script)
    assert not violations, "\n".join(violations)


def test_the_sign_in_page_has_no_serious_accessibility_violation(live_server, new_page, axe_script):
    page = new_page()
    page.goto(live_server.url + "/")
    expect(page.locator("#signin")).to_be_visible()
    assert not axe_violations(page, axe_script)
    assert ADMIN  # the console's sign-in shares the same panel
