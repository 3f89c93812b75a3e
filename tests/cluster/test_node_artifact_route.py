"""The internal route Ray nodes fetch a model's files from: only a file the controller signed a token
for, and only while its content is what was signed (no Ray needed)."""

from __future__ import annotations

import hashlib

import pytest
from django.core import signing

from endpoints_app.controller.ray_backend import artifact_token, file_digest

pytestmark = pytest.mark.django_db

URL = "/internal/node-artifacts/{}"


def test_a_signed_token_fetches_exactly_that_file(client, tmp_path):
    path = tmp_path / "model.joblib"
    path.write_bytes(b"weights" * 1000)
    digest = file_digest(str(path))
    answer = client.get(URL.format(artifact_token(str(path), digest)))
    assert answer.status_code == 200
    body = b"".join(answer.streaming_content)
    assert body == path.read_bytes() and hashlib.sha256(body).hexdigest() == digest


def test_an_unsigned_forged_or_foreign_token_gets_404(client, tmp_path, settings):
    secret = tmp_path / "secret.txt"
    secret.write_text("not for nodes")
    digest = hashlib.sha256(b"not for nodes").hexdigest()
    assert client.get(URL.format("garbage")).status_code == 404
    # Signed with another key (another studio), or for another purpose: refused.
    foreign = signing.dumps({"p": str(secret), "h": digest}, key="another-secret-key-" * 3,
                            salt="studio.node-artifact", compress=True)
    assert client.get(URL.format(foreign)).status_code == 404
    other_salt = signing.dumps({"p": str(secret), "h": digest}, salt="studio.something-else", compress=True)
    assert client.get(URL.format(other_salt)).status_code == 404
    # Settings' own files (or any path) are out of reach without a token for them.
    assert client.get(URL.format(str(settings.BASE_DIR / "portal" / "settings.py"))).status_code == 404
    # Only GET.
    assert client.post(URL.format(artifact_token(str(secret), digest))).status_code == 405


def test_a_file_changed_since_it_was_signed_is_not_served(client, tmp_path):
    path = tmp_path / "score.py"
    path.write_text("def run(x): return x\n")
    token = artifact_token(str(path), file_digest(str(path)))
    path.write_text("def run(x): return 'swapped'\n")
    assert client.get(URL.format(token)).status_code == 404
    assert client.get(URL.format(artifact_token(str(tmp_path / "gone"), "0" * 64))).status_code == 404
