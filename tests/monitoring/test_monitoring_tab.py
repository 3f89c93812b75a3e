"""The Monitoring tab's partial: server-built plotly figures for each range, permissions, samples."""

import json
import os
import re
from datetime import timedelta

import plotly.graph_objects as go
import pytest
from django.utils import timezone

from endpoints_app.metering.tasks import sample_instances
from endpoints_app.models import InstanceSample
from tests.usage import factories as f


@pytest.fixture
def iris(workspace):
    ep = f.endpoint(workspace, "iris", traffic={"blue": 70, "green": 30})
    blue = f.deployment(ep, "blue")
    f.deployment(ep, "green")
    now = timezone.now().replace(second=0, microsecond=0)
    for i in range(1, 30):
        f.minute_row(ep, "blue", now - timedelta(minutes=i), ok=7, latency_ms=12)
        f.minute_row(ep, "green", now - timedelta(minutes=i), ok=3, server_errors=1, latency_ms=90,
                     codes={"200": 3, "503": 1})
    f.minute_row(ep, "blue", now - timedelta(days=3), ok=1000, latency_ms=12)
    f.instance(blue, now - timedelta(hours=2))
    return ep


def figures(html: str) -> dict:
    found = re.findall(r'<script type="application/json" id="fig-(\w+)">(.*?)</script>', html, re.S)
    return {name: json.loads(body) for name, body in found}


def test_it_builds_every_chart(owner_client, iris):
    response = owner_client.get("/endpoints/iris/monitoring/?range=1h", HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    html = response.content.decode()
    assert "<html" not in html  # the partial only
    figs = figures(html)
    # No tokens chart for a classifier: its answers carry no token counts.
    assert set(figs) == {"requests", "latency", "errors", "traffic", "cost", "cpu", "memory"}
    for fig in figs.values():
        go.Figure(fig)  # plotly's own schema validation accepts every figure
    stacked = {t["name"]: t for t in figs["requests"]["data"]}
    assert set(stacked) == {"blue", "green"} and stacked["blue"]["stackgroup"] == "requests"
    assert sum(stacked["blue"]["y"]) == 29 * 7 and sum(stacked["green"]["y"]) == 29 * 4
    assert [t["name"] for t in figs["latency"]["data"]] == ["p50", "p90", "p99"]
    assert {t["mode"] for t in figs["latency"]["data"]} == {"lines"}
    assert len(figs["latency"]["data"][0]["x"]) == 29  # the buckets with requests, joined by lines
    errors = {t["name"]: sum(t["y"]) for t in figs["errors"]["data"]}
    assert errors == {"503": 29}  # one bar per error status code
    traffic = {t["name"]: t["y"] for t in figs["traffic"]["data"]}
    assert traffic["configured %"] == [70, 30] and traffic["actual %"] == [63.64, 36.36]
    assert sum(figs["cost"]["data"][0]["y"]) > 0  # blue's instance has run for the whole hour
    assert 'data-stat="requests">319<' in html


def test_errors_are_drawn_per_status_code_and_uncoded_errors_by_class(owner_client, iris):
    now = timezone.now().replace(second=0, microsecond=0)
    f.minute_row(iris, "blue", now - timedelta(minutes=31), ok=2, client_errors=3, codes={"200": 2, "401": 1, "429": 2})
    # A row counted before per-code counts existed: its errors are known by class only.
    f.minute_row(iris, "green", now - timedelta(minutes=32), client_errors=2, server_errors=1, codes={})
    figs = figures(owner_client.get("/endpoints/iris/monitoring/?range=1h", HTTP_HX_REQUEST="true").content.decode())
    assert figs["errors"]["layout"]["title"]["text"] == "Errors by status code"
    errors = {t["name"]: sum(t["y"]) for t in figs["errors"]["data"]}
    assert errors == {"401": 1, "429": 2, "503": 29, "4xx (code not recorded)": 2, "5xx (code not recorded)": 1}


def test_the_range_selector_changes_the_buckets(owner_client, iris):
    one_hour = figures(owner_client.get("/endpoints/iris/monitoring/?range=1h", HTTP_HX_REQUEST="true")
                       .content.decode())
    week = figures(owner_client.get("/endpoints/iris/monitoring/?range=7d", HTTP_HX_REQUEST="true").content.decode())
    blue_hour = next(t for t in one_hour["requests"]["data"] if t["name"] == "blue")
    blue_week = next(t for t in week["requests"]["data"] if t["name"] == "blue")
    assert len(blue_hour["x"]) == 60 and len(blue_week["x"]) == 7 * 24
    # The row three days ago shows in the week only; per-minute rates in hourly buckets.
    assert max(blue_week["y"]) == pytest.approx(1000 / 60)
    assert sum(blue_hour["y"]) == 29 * 7


def test_without_htmx_it_is_a_whole_page_with_plain_links(owner_client, iris):
    html = owner_client.get("/endpoints/iris/monitoring/?range=24h").content.decode()
    assert "<html" in html and 'href="/endpoints/iris/monitoring/?range=7d"' in html
    assert 'aria-current="true">24h<' in html


def test_reader_can_see_it_and_outsider_cannot(client, reader, outsider, iris):
    client.force_login(reader)
    assert client.get("/endpoints/iris/monitoring/").status_code == 200
    client.force_login(outsider)
    assert client.get("/endpoints/iris/monitoring/").status_code == 404
    assert client.get("/endpoints/nope/monitoring/").status_code == 404


def test_instance_samples_measure_a_real_process(owner_client, iris, settings):
    """Point an instance at this test process: the sampler reads its CPU and memory from /proc."""
    settings.STUDIO_NODE_NAME = "local"
    instance = iris.deployments.get(name="blue").instances.get()
    instance.pid = os.getpid()
    instance.save()
    assert sample_instances(interval=0.2) == 1
    sample = InstanceSample.objects.get()
    assert sample.memory_mb > 10 and sample.cpu_percent >= 0
    figs = figures(owner_client.get("/endpoints/iris/monitoring/?range=1h", HTTP_HX_REQUEST="true").content.decode())
    assert figs["memory"]["data"][0]["name"] == instance.name
    assert figs["memory"]["data"][0]["y"] == [sample.memory_mb]


def test_it_draws_tokens_for_a_model_that_counts_them(owner_client, workspace):
    from endpoints_app.models import CatalogModel

    chat = CatalogModel.objects.create(name="chat", version=1, task="chat-completion", format="gguf",
                                       license="Apache-2.0", artifact_path="x.gguf", deployment_kinds=["online"])
    ep = f.endpoint(workspace, "chatty", traffic={"blue": 100})
    f.deployment(ep, "blue", model=chat)
    f.minute_row(ep, "blue", timezone.now().replace(second=0, microsecond=0) - timedelta(minutes=3), ok=2,
                 tokens_in=10, tokens_out=30)
    figs = figures(owner_client.get("/endpoints/chatty/monitoring/?range=1h", HTTP_HX_REQUEST="true").content.decode())
    assert {t["name"]: sum(t["y"]) for t in figs["tokens"]["data"]} == {"tokens in": 10, "tokens out": 30}


def test_a_young_endpoint_opens_on_the_last_15_minutes(owner_client, workspace):
    from endpoints_app.models import Endpoint

    ep = f.endpoint(workspace, "young", traffic={"blue": 100})
    f.deployment(ep, "blue")
    html = owner_client.get("/endpoints/young/monitoring/").content.decode()
    assert 'class="range active"' in html and ">15m</a>" in html
    assert re.search(r'class="range active"\s+aria-current="true">15m<', html)
    Endpoint.objects.filter(pk=ep.pk).update(created_at=timezone.now() - timedelta(hours=2))
    html = owner_client.get("/endpoints/young/monitoring/").content.decode()
    assert re.search(r'class="range active"\s+aria-current="true">1h<', html)


def test_a_serverless_endpoint_shows_no_deployment_or_instance_charts(owner_client, workspace):
    """A platform pool serves it: there is no traffic split, instance or deployment of its own to show."""
    from endpoints_app.models import Endpoint

    ep = f.endpoint(workspace, "smol", kind=Endpoint.Kind.SERVERLESS)
    f.minute_row(ep, "", timezone.now().replace(second=0, microsecond=0) - timedelta(minutes=2), ok=4,
                 tokens_in=40, tokens_out=12)
    html = owner_client.get("/endpoints/smol/monitoring/?range=1h", HTTP_HX_REQUEST="true").content.decode()
    figs = figures(html)
    assert set(figs) == {"requests", "latency", "errors", "tokens", "cost"}
    assert [(t["name"], sum(t["y"])) for t in figs["requests"]["data"]] == [("smol", 4)]
    assert "Configured traffic" not in html
