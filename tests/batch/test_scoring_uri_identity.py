"""An aad_token batch endpoint's scoring_uri takes identity tokens only: a granted service principal
starts a job (audited as itself); others get a 401 or 403 naming the reason."""

import pytest
import requests

from endpoints_app.models import AuditLog, Endpoint, OidcIdentity
from endpoints_app.services.audit import SYSTEM
from endpoints_app.services.identity import do_grant_service_principal
from tests.batch.conftest import WS, iris_csv
from tests.live import _run_gateway

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

BODY = {"inputs": {"input_data": {"type": "uri_folder", "path": "studio:data/rows/versions/1"}}}


@pytest.fixture
def gateway_with_provider(live_worker, identity_provider, tmp_path):
    yield from _run_gateway(tmp_path, workers=1, **identity_provider.env())


def post(url: str, credential: str | None) -> requests.Response:
    headers = {"Authorization": f"Bearer {credential}"} if credential else {}
    return requests.post(url, json=BODY, headers=headers, timeout=30)


def test_an_aad_token_scoring_uri_takes_granted_identities_only(
        gateway_with_provider, identity_provider, owner_api, reader, workspace, batch_endpoint, make_asset):
    batch_endpoint()
    make_asset("rows", {"a.csv": iris_csv(10)})
    key = owner_api.post(f"{WS}/batch-endpoints/scorer/list-keys").json()["primary_key"]
    Endpoint.objects.filter(name="scorer").update(auth_mode="aad_token")
    do_grant_service_principal(SYSTEM, workspace, "ci-pipeline", "Contributor")
    OidcIdentity.objects.create(user=reader, issuer=identity_provider.issuer, subject="bob")
    url = f"{gateway_with_provider}/inference/scorer/jobs"

    started = post(url, identity_provider.client_token("ci-pipeline"))
    assert started.status_code == 202, started.text
    assert started.json()["deployment_name"] == "blue"
    made = AuditLog.objects.filter(details__identity="service principal ci-pipeline").first()
    assert made is not None and made.action.startswith("job")

    stranger = post(url, identity_provider.client_token("other-robot"))
    bob = post(url, identity_provider.user_tokens("bob")["access_token"])
    assert (stranger.status_code, stranger.json()["error"]["code"]) == (403, "NotAMember")
    assert (bob.status_code, bob.json()["error"]["code"]) == (403, "RoleTooLow")
    assert post(url, key).status_code == 401  # identity tokens only
    assert post(url, None).status_code == 401
    assert AuditLog.objects.filter(action="endpoint.invoke.denied", details__subject="bob").exists()
