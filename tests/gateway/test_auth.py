import time

import pytest
import requests

from endpoints_app import keys
from endpoints_app.instance_auth import instance_secret
from endpoints_app.models import RouteVersion
from tests.gateway.conftest import auth, set_key

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

SETTINGS = {"max_concurrent_requests_per_instance": 4}
BODY = {"data": [1.5]}


def test_primary_and_secondary_keys_both_work_in_either_header(procs, make_endpoint):
    port, _ = procs.upstream()
    _, creds = make_endpoint("keyed", {"blue": ([port], 100, SETTINGS)})
    url, _ = procs.gateway()
    score = f"{url}/inference/keyed/score"

    assert requests.post(score, json=BODY, headers=auth(creds["primary"])).status_code == 200
    assert requests.post(score, json=BODY, headers=auth(creds["secondary"])).status_code == 200
    assert requests.post(score, json=BODY, headers={"api-key": creds["secondary"]}).status_code == 200
    # azure-ai-inference sends both headers.
    both = {"api-key": creds["primary"], **auth(creds["primary"])}
    assert requests.post(score, json=BODY, headers=both).status_code == 200


def test_missing_or_wrong_key_gets_401_json(procs, make_endpoint):
    port, _ = procs.upstream()
    _, creds = make_endpoint("guarded", {"blue": ([port], 100, SETTINGS)})
    url, _ = procs.gateway()
    score = f"{url}/inference/guarded/score"

    missing = requests.post(score, json=BODY)
    wrong = requests.post(score, json=BODY, headers=auth(creds["primary"] + "x"))
    other_scheme = requests.post(score, json=BODY, headers={"Authorization": f"Basic {creds['primary']}"})

    for response in (missing, wrong, other_scheme):
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "Unauthorized"


def test_regenerated_key_is_rejected_within_two_seconds(procs, make_endpoint):
    port, _ = procs.upstream()
    endpoint, creds = make_endpoint("rotating", {"blue": ([port], 100, SETTINGS)})
    url, _ = procs.gateway(workers=2)
    score = f"{url}/inference/rotating/score"
    assert requests.post(score, json=BODY, headers=auth(creds["primary"])).status_code == 200

    new_primary = set_key(endpoint, "primary")
    RouteVersion.bump()
    time.sleep(2.0)

    # Fresh connections land on either gateway worker: every one must have dropped the old key.
    old = [requests.post(score, json=BODY, headers=auth(creds["primary"])).status_code for _ in range(20)]
    new = [requests.post(score, json=BODY, headers=auth(new_primary)).status_code for _ in range(20)]
    assert set(old) == {401}
    assert set(new) == {200}
    assert requests.post(score, json=BODY, headers=auth(creds["secondary"])).status_code == 200


def test_aml_token_endpoint_takes_tokens_until_they_expire(procs, make_endpoint):
    port, _ = procs.upstream()
    endpoint, creds = make_endpoint("tokened", {"blue": ([port], 100, SETTINGS)}, auth_mode="aml_token")
    url, _ = procs.gateway()
    score = f"{url}/inference/tokened/score"
    token, expiry = keys.issue_token(endpoint.pk, endpoint.token_generation, lifetime=2)
    other_endpoints_token, _ = keys.issue_token(endpoint.pk + 1000, endpoint.token_generation)

    assert requests.post(score, json=BODY, headers=auth(token)).status_code == 200
    # Keys are not tokens: an aml_token endpoint refuses them.
    assert requests.post(score, json=BODY, headers=auth(creds["primary"])).status_code == 401
    assert requests.post(score, json=BODY, headers=auth(other_endpoints_token)).status_code == 401

    time.sleep(max(0.0, expiry - time.time()) + 0.5)
    expired = requests.post(score, json=BODY, headers=auth(token))
    assert expired.status_code == 401
    assert expired.json()["error"]["code"] == "Unauthorized"


def test_keys_never_reach_the_gateway_log(procs, make_endpoint):
    port, _ = procs.upstream()
    _, creds = make_endpoint("quiet", {"blue": ([port], 100, SETTINGS)})
    url, gateway = procs.gateway()
    for key in (creds["primary"], creds["primary"] + "wrong"):
        requests.post(f"{url}/inference/quiet/score", json=BODY, headers=auth(key))

    procs.stop(gateway)
    log = open(gateway.log_file.name, encoding="utf-8", errors="replace").read()
    assert creds["primary"] not in log


def test_keys_and_tokens_from_the_rest_api_work_at_the_gateway(procs, make_endpoint, owner_api):
    port, _ = procs.upstream()
    make_endpoint("viaapi", {"blue": ([port], 100, SETTINGS)})
    make_endpoint("viatoken", {"blue": ([port], 100, SETTINGS)}, auth_mode="aml_token")
    url, _ = procs.gateway(workers=2)
    base = "/api/v1/workspaces/team/online-endpoints"
    listed = owner_api.post(f"{base}/viaapi/list-keys").json()
    score = f"{url}/inference/viaapi/score"
    assert requests.post(score, json=BODY, headers=auth(listed["primary_key"])).status_code == 200

    regenerated = owner_api.post(f"{base}/viaapi/regenerate-keys", {"key_type": "primary"}, format="json")
    assert regenerated.status_code == 200
    time.sleep(2.0)

    old = {requests.post(score, json=BODY, headers=auth(listed["primary_key"])).status_code for _ in range(10)}
    new = {requests.post(score, json=BODY, headers=auth(regenerated.json()["primary_key"])).status_code
           for _ in range(10)}
    still = {requests.post(score, json=BODY, headers={"api-key": listed["secondary_key"]}).status_code
             for _ in range(10)}
    assert (old, new, still) == ({401}, {200}, {200})

    token = owner_api.post(f"{base}/viatoken/token").json()["access_token"]
    assert requests.post(f"{url}/inference/viatoken/score", json=BODY, headers=auth(token)).status_code == 200


def test_model_servers_answer_only_the_gateway(procs, make_endpoint, tmp_path):
    import joblib
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True)
    artifact = tmp_path / "model.joblib"
    joblib.dump(LogisticRegression(max_iter=500).fit(x, y), artifact)
    # The instance make_endpoint creates is named "<endpoint>-<deployment>-0".
    port, _ = procs.sklearn_server(artifact, secret_for="sealed-blue-0")
    _, creds = make_endpoint("sealed", {"blue": ([port], 100, SETTINGS)})
    url, _ = procs.gateway()
    row = {"data": [[5.1, 3.5, 1.4, 0.2]]}

    through_gateway = requests.post(f"{url}/inference/sealed/score", json=row, headers=auth(creds["primary"]))
    direct = requests.post(f"http://127.0.0.1:{port}/score", json=row)
    with_endpoint_key = requests.post(f"http://127.0.0.1:{port}/score", json=row, headers=auth(creds["primary"]))
    other_instance = requests.post(f"http://127.0.0.1:{port}/score", json=row,
                                   headers=auth(instance_secret("sealed-green-0", port)))
    info = requests.get(f"http://127.0.0.1:{port}/")

    assert through_gateway.status_code == 200 and through_gateway.json()["predictions"] == [0]
    for refused in (direct, with_endpoint_key, other_instance, info):
        assert refused.status_code == 401, refused.text
        assert refused.json()["error"]["code"] == "Unauthorized"
    # The controller's probes need no secret.
    assert requests.get(f"http://127.0.0.1:{port}/health/ready").status_code == 200
    assert requests.get(f"http://127.0.0.1:{port}/health/live").status_code == 200
