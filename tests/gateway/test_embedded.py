import pytest
import requests

from tests.gateway.conftest import BIN, auth, free_port, wait_http

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def test_web_process_serves_the_gateway_beside_django(procs, make_endpoint):
    port, _ = procs.upstream()
    _, creds = make_endpoint("embedded", {"blue": ([port], 100, {"max_concurrent_requests_per_instance": 4})})
    web_port = free_port()
    web = procs.start([str(BIN / "uvicorn"), "portal.asgi:application", "--port", str(web_port), "--lifespan", "on"],
                      name="web")
    url = f"http://127.0.0.1:{web_port}"
    wait_http(url + "/login/", proc=web, ok=True)

    scored = requests.post(f"{url}/inference/embedded/score", json={"data": [2]}, headers=auth(creds["primary"]))
    page = requests.get(f"{url}/login/")

    assert scored.status_code == 200
    assert scored.json() == {"predictions": [2]}
    assert scored.headers["azureml-model-deployment"] == "blue"
    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]
