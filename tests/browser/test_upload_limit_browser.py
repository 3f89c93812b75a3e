"""An upload over STUDIO_MAX_UPLOAD_MB is refused in the browser before a byte is sent, with the sizes
named, on the Data page (the same script guards every upload form)."""

import pytest

from endpoints_app.models import DataAsset

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_data_page_refuses_files_over_the_upload_limit_before_sending(page, live_server, settings, shoot):
    settings.STUDIO_MAX_UPLOAD_BYTES = 1024 * 1024
    page.goto(f"{live_server.url}/data/")
    page.fill("#asset-name", "too-big")
    page.set_input_files("#asset-files", files=[
        {"name": "rows.csv", "mimeType": "text/csv", "buffer": b"a,b\n" + b"1,2\n" * 400_000}])

    note = page.locator("#upload [data-upload-error]")
    assert not note.is_visible()

    page.click("#upload-button")

    note.wait_for(state="visible")
    assert "1.5 MB" in note.inner_text() and "limited to 1 MB" in note.inner_text()
    assert page.url == f"{live_server.url}/data/"
    shoot(page, "data-upload-too-large")
    assert not DataAsset.objects.exists()
