"""The UI's upload forms take what the README promises (STUDIO_MAX_UPLOAD_MB, 200 MB by default), not
the 10 MB every other request gets: through the web process's ASGI entry point (its body limit
included), with a session and a CSRF token as a browser sends them. Above the limit: a page that
says so, and the forms check the size before sending."""

from __future__ import annotations

import asyncio
import re

import pytest
from django.test import Client

from endpoints_app.models import DataAsset
from tests.test_body_limit import MB, _scope

pytestmark = pytest.mark.django_db(transaction=True)

CSRF = "a" * 32  # a CSRF secret as the cookie holds it; the form may send it unmasked


def _post_form(path: str, cookies: dict[str, str], fields: dict[str, str], file_field: str, file_name: str,
               size: int) -> tuple[int, dict[bytes, bytes], bytes]:
    """(status, headers, body) of a browser's multipart form post through portal.asgi, streamed in 1 MB chunks."""
    from portal.asgi import application

    boundary = b"studio-test-boundary"
    head = b"".join(b"--%s\r\nContent-Disposition: form-data; name=\"%s\"\r\n\r\n%s\r\n" % (boundary, k.encode(),
                                                                                          v.encode())
                    for k, v in fields.items())
    head += (b"--%s\r\nContent-Disposition: form-data; name=\"%s\"; filename=\"%s\"\r\nContent-Type: text/csv\r\n\r\n"
             % (boundary, file_field.encode(), file_name.encode()))
    content = b"a,b\n" + b"1,2\n" * (size // 4)
    tail = b"\r\n--%s--\r\n" % boundary
    total = len(head) + len(content) + len(tail)
    chunks = [head] + [content[i:i + MB] for i in range(0, len(content), MB)] + [tail]
    headers = [(b"content-type", b"multipart/form-data; boundary=" + boundary),
               (b"content-length", str(total).encode()), (b"accept", b"text/html"),
               (b"cookie", "; ".join(f"{k}={v}" for k, v in cookies.items()).encode()),
               (b"referer", b"http://testserver/data/")]
    sent: list[dict] = []

    async def receive():
        if chunks:
            chunk = chunks.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}
        await asyncio.sleep(3600)

    async def send(message):
        sent.append(message)

    asyncio.run(asyncio.wait_for(application(_scope(path, headers), receive, send), 60))
    return sent[0]["status"], dict(sent[0]["headers"]), b"".join(m.get("body", b"") for m in sent[1:])


@pytest.fixture
def browser_cookies(owner) -> dict[str, str]:
    client = Client()
    client.force_login(owner)
    return {"sessionid": client.cookies["sessionid"].value, "csrftoken": CSRF}


def test_the_data_page_uploads_a_file_over_10_mb(browser_cookies):
    status, headers, body = _post_form("/data/upload/", browser_cookies, {"csrfmiddlewaretoken": CSRF,
                                                                         "name": "big-rows"},
                                       "files", "rows.csv", 12 * MB)

    assert status == 302, body[:500]
    asset = DataAsset.objects.get(name="big-rows")
    assert asset.size_bytes > 12 * MB and asset.file_count == 1


def test_an_upload_over_the_limit_gets_a_page_naming_the_limit(browser_cookies, settings):
    settings.STUDIO_MAX_UPLOAD_BYTES = 2 * MB

    status, headers, body = _post_form("/data/upload/", browser_cookies, {"csrfmiddlewaretoken": CSRF,
                                                                         "name": "too-big"},
                                       "files", "rows.csv", 4 * MB)

    assert status == 413
    assert headers[b"content-type"].startswith(b"text/html")
    assert b"Uploads are limited to 2 MB (STUDIO_MAX_UPLOAD_MB)" in body
    assert not DataAsset.objects.exists()


def test_the_upload_forms_check_the_size_before_sending(owner, client, settings):
    client.force_login(owner)
    pages = [client.get("/data/"), client.get("/catalog/register/")]
    for page in pages:
        assert page.status_code == 200
        forms = re.findall(rb'<form[^>]*enctype="multipart/form-data"[^>]*>', page.content)
        assert forms and all(b'data-max-upload-mb="200"' in form for form in forms), forms
        assert b"data-upload-error" in page.content
