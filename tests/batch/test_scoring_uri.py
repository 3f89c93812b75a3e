"""A batch endpoint's scoring_uri on the gateway process: POST a job body with a bearer API token
or endpoint key, get 202 with the job's name, status and URL; the job runs to Completed."""

import pytest
import requests

from endpoints_app.models import ApiToken
from tests.batch.conftest import WS, iris_csv
from tests.live import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

EP = f"{WS}/batch-endpoints"
BODY = {"inputs": {"input_data": {"type": "uri_folder", "path": "studio:data/rows/versions/1"}}}


def post(url: str, credential: str | None, body=BODY) -> requests.Response:
    headers = {"Authorization": f"Bearer {credential}"} if credential else {}
    return requests.post(url, json=body, headers=headers, timeout=30)


def test_it_creates_jobs_with_an_api_token_or_an_endpoint_key(live_gateway, owner_api, owner, reader, outsider,
                                                              batch_endpoint, make_asset):
    batch_endpoint()
    make_asset("rows", {"a.csv": iris_csv(20), "b.csv": iris_csv(30, seed=2)})
    uri = owner_api.get(f"{EP}/scorer").json()["scoring_uri"]
    url = live_gateway + uri[uri.index("/inference/"):]

    with_token = post(url, ApiToken.objects.create(user=owner)[1])
    assert with_token.status_code == 202, with_token.text
    job = with_token.json()
    assert job["status"] in ("Queued", "Running") and job["deployment_name"] == "blue"
    assert job["url"].endswith(f"/api/v1/workspaces/team/batch-endpoints/scorer/jobs/{job['name']}")
    done = wait_for(lambda: (j := owner_api.get(f"{EP}/scorer/jobs/{job['name']}").json())["status"] == "Completed"
                    and j, timeout=90, what="the job completed")
    assert done["rows_done"] == 50

    key = owner_api.post(f"{EP}/scorer/list-keys").json()["primary_key"]
    assert post(url, key).status_code == 202

    assert post(url, None).status_code == 401
    assert post(url, "not-a-token").status_code == 401
    assert post(url, ApiToken.objects.create(user=reader)[1]).status_code == 403
    assert post(url, ApiToken.objects.create(user=outsider)[1]).status_code == 404
    bad = post(url, key, {"inputs": {"input_data": {"type": "uri_folder", "path": "../../etc"}}})
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "inputs.input_data.path"
    assert post(live_gateway + "/inference/nope/jobs", key).status_code == 404
