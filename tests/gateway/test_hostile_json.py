"""Every JSON-reading route of the gateway answers JSON nested too deeply with a 400 in the contract's
JSON shape, never a 500 or a plain-text traceback, and keeps serving."""

import pytest
import requests

from endpoints_app.models import ApiToken, Endpoint
from tests.gateway.conftest import auth
from tests.gateway.test_errors import SETTINGS, _error

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

WS = "/api/v1/workspaces/team"


@pytest.mark.parametrize("depth", [65, 900, 20_000])
def test_every_json_route_of_the_gateway_refuses_deep_nesting_with_a_json_400(procs, make_endpoint, owner, owner_api,
                                                                              workspace, depth):
    port, _ = procs.upstream()
    _, creds = make_endpoint("nested", {"blue": ([port], 100, SETTINGS)})
    inference_key = owner_api.post(f"{WS}/list-inference-keys").json()["primary_key"]
    Endpoint.objects.create(workspace=workspace, name="jobs", kind="batch", provisioning_state="Succeeded")
    _, api_token = ApiToken.objects.create(user=owner)
    url, _ = procs.gateway()
    body = b'{"model": "x", "input": ' + b"[" * depth + b"]" * depth + b"}"

    routes = [
        (f"{url}/models/embeddings", auth(inference_key)),
        (f"{url}/models/chat/completions", auth(inference_key)),
        (f"{url}/inference/nested/score", auth(creds["primary"])),
        (f"{url}/inference/nested/embeddings", auth(creds["primary"])),
        (f"{url}/inference/jobs/jobs", auth(api_token)),
    ]
    for route, headers in routes:
        response = requests.post(route, data=body, headers=headers)
        message = _error(response, 400, "BadRequest")
        assert "nested too deeply" in message, (route, message)

    # Still serving, and a body nested within the limit still reaches the model.
    shallow = b'{"data": ' + b"[" * 3 + b"1" + b"]" * 3 + b"}"
    assert requests.post(f"{url}/inference/nested/score", data=shallow,
                         headers=auth(creds["primary"])).status_code != 400
