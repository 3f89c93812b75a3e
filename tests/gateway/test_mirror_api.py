import datetime as dt

import pytest

from endpoints_app.models import Endpoint, MirrorComparison

pytestmark = pytest.mark.django_db

URL = "/api/v1/workspaces/team/online-endpoints/shadowy/mirror-comparison"


@pytest.fixture
def endpoint(workspace):
    endpoint = Endpoint.objects.create(workspace=workspace, name="shadowy", traffic={"blue": 100},
                                       mirror_traffic={"green": 20}, provisioning_state="Succeeded")
    now = dt.datetime.now(dt.UTC)
    # Three agreeing copies an hour ago, one disagreeing just now; the shadow is 5 ms slower each time.
    for minutes_ago, agreed in ((60, True), (60, True), (60, True), (0, False)):
        MirrorComparison.objects.create(
            endpoint=endpoint, live_deployment="blue", shadow_deployment="green",
            time=now - dt.timedelta(minutes=minutes_ago), live_status=200, shadow_status=200,
            live_latency_ms=10.0, shadow_latency_ms=15.0, agreed=agreed,
        )
    return endpoint


def test_it_shows_agreement_rate_and_latency_difference(endpoint, reader_api):
    body = reader_api.get(URL).json()

    assert body["mirror_traffic"] == {"green": 20}
    assert body["requests"] == 4
    assert body["agreement_rate"] == 0.75
    assert body["latency_diff_ms_p50"] == pytest.approx(5.0)
    assert body["deployments"] == [{"live": "blue", "shadow": "green"}]


def test_it_filters_by_time(endpoint, reader_api):
    since = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)).isoformat()

    body = reader_api.get(URL, {"since": since}).json()

    assert (body["requests"], body["agreement_rate"]) == (1, 0.0)
    assert reader_api.get(URL, {"since": "yesterday"}).status_code == 400


def test_it_answers_nothing_to_compare_yet(workspace, reader_api):
    Endpoint.objects.create(workspace=workspace, name="shadowy", traffic={"blue": 100})

    body = reader_api.get(URL).json()

    assert (body["requests"], body["agreement_rate"], body["latency_diff_ms_p50"]) == (0, None, None)


def test_it_checks_membership(endpoint, outsider_api):
    assert outsider_api.get(URL).status_code == 404
