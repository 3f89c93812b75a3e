"""/metrics in Prometheus text format: exact counters, and who may read it."""

from datetime import timedelta

import pytest
from django.core.cache import cache

from endpoints_app.metering.rollup import rollup_usage
from tests.usage import factories as f
from tests.usage.factories import T0


@pytest.fixture(autouse=True)
def fresh_snapshot():
    cache.clear()  # the snapshot lives in the cache, which outlives a test's database


@pytest.fixture
def iris(workspace):
    ep = f.endpoint(workspace, "iris")
    f.minute_row(ep, "blue", T0, ok=5, client_errors=2, latency_ms=12, tokens_in=10, tokens_out=20)
    f.minute_row(ep, "blue", T0 + timedelta(days=2), ok=1, server_errors=1, latency_ms=2000)
    return ep


def test_it_exports_exact_counters_on_loopback(client, iris):
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    text = response.content.decode()
    labels = 'workspace="team",endpoint="iris",deployment="blue"'
    assert f'studio_requests_total{{{labels},status="2xx"}} 6' in text
    assert f'studio_requests_total{{{labels},status="4xx"}} 2' in text
    assert f'studio_requests_total{{{labels},status="5xx"}} 1' in text
    assert f'studio_tokens_total{{{labels},direction="out"}} 20' in text
    assert f'studio_request_latency_ms_bucket{{{labels},le="15"}} 7' in text
    assert f'studio_request_latency_ms_bucket{{{labels},le="+Inf"}} 9' in text
    assert f"studio_request_latency_ms_count{{{labels}}} 9" in text
    # Rolling up changes where the counts are read from, never the counts.
    rollup_usage(now=T0 + timedelta(days=5))
    cache.clear()
    assert client.get("/metrics").content.decode() == text


def test_other_hosts_need_the_token(client, iris, settings):
    remote = {"REMOTE_ADDR": "10.1.2.3"}
    settings.STUDIO_METRICS_TOKEN = None
    assert client.get("/metrics", **remote).status_code == 403
    settings.STUDIO_METRICS_TOKEN = "s3cret-metrics"
    assert client.get("/metrics", **remote).status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong", **remote).status_code == 401
    response = client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-metrics", **remote)
    assert response.status_code == 200 and b"studio_requests_total" in response.content


def test_loopback_through_a_proxy_is_not_trusted(client, iris, settings):
    settings.STUDIO_METRICS_TOKEN = None
    for header in ("HTTP_X_FORWARDED_FOR", "HTTP_FORWARDED", "HTTP_X_REAL_IP"):
        response = client.get("/metrics", REMOTE_ADDR="127.0.0.1", **{header: "203.0.113.9"})
        assert response.status_code == 403, header
        assert b"STUDIO_METRICS_TOKEN" in response.content


def test_with_a_token_set_loopback_needs_it_too(client, iris, settings):
    settings.STUDIO_METRICS_TOKEN = "s3cret-metrics"
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 401
    authorized = client.get("/metrics", REMOTE_ADDR="127.0.0.1", HTTP_AUTHORIZATION="Bearer s3cret-metrics")
    assert authorized.status_code == 200


def test_scrapes_within_the_cache_period_share_one_snapshot(client, iris, settings, django_assert_num_queries):
    settings.STUDIO_METRICS_CACHE_SECONDS = 10
    first = client.get("/metrics").content
    f.minute_row(iris, "blue", T0 + timedelta(days=3), ok=100, latency_ms=5)
    with django_assert_num_queries(0):
        assert client.get("/metrics").content == first
    cache.clear()  # the period ends
    assert b'status="2xx"} 106' in client.get("/metrics").content
