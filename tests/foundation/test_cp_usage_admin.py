"""Serverless metering and cost (tokens x price per 1K, price changes from their minute), on the
usage API and the Usage page; IT edits offers' and workspaces' limits in the admin console; the
platform's pools are visible only there."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model

from endpoints_app.metering import costs
from endpoints_app.models import AuditLog, CatalogModel, Endpoint, RouteVersion, ServerlessRateLimit, UsageMinute
from tests.foundation.test_cp_serverless_api import create, offer, subscribe

WS = "/api/v1/workspaces/team"
T0 = datetime(2026, 10, 5, 0, 0, tzinfo=UTC)


@pytest.fixture
def it_client(db):
    from django.test import Client

    client = Client()
    user = get_user_model().objects.create_superuser("it-admin", "it@example.com", "pw-for-tests-only")
    client.force_login(user)
    return client


@pytest.fixture
def serverless(owner_api, workspace):
    model = offer()
    subscribe(owner_api)
    assert create(owner_api).status_code == 201
    return Endpoint.objects.get(name="chat"), model


def tokens(endpoint, minute, tokens_in, tokens_out, deployment=""):
    UsageMinute.objects.create(endpoint=endpoint, deployment=deployment, minute=minute, requests=1, status_2xx=1,
                               tokens_in=tokens_in, tokens_out=tokens_out, latency_ms_sum=5,
                               status_codes={"200": 1})


def iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def test_it_bills_tokens_by_the_offer_price_from_the_minute_it_changes(owner_api, serverless):
    endpoint, model = serverless
    # 0.0002 in / 0.0006 out per 1K; then 0.002 / 0.006 from T0+30 min on.
    tokens(endpoint, T0 + timedelta(minutes=10), 100_000, 50_000)
    tokens(endpoint, T0 + timedelta(minutes=40), 100_000, 50_000, deployment=endpoint.pool.name)
    costs.record_token_price(model, (Decimal("0.0002"), Decimal("0.0006")), (Decimal("0.002"), Decimal("0.006")),
                             T0 + timedelta(minutes=30))
    body = owner_api.get(f"{WS}/usage", {"endpoint": "chat", "from": iso(T0), "to": iso(T0 + timedelta(hours=1)),
                                         "interval": "1h"}).json()
    # before: 100 x 0.0002 + 50 x 0.0006 = 0.05; after: 100 x 0.002 + 50 x 0.006 = 0.50
    assert body["totals"]["cost"] == 0.55
    assert (body["totals"]["tokens_in"], body["totals"]["tokens_out"]) == (200_000, 100_000)
    assert body["totals"]["instance_hours"] == 0
    assert {item["model"] for item in body["series"]} == {"smollm2-135m-instruct"}
    assert sum(item["cost"] for item in body["series"]) == pytest.approx(0.55)


def test_the_usage_page_shows_serverless_cost_by_endpoint_and_model(owner_client, serverless):
    endpoint, _model = serverless
    from django.utils import timezone

    now = timezone.now().replace(second=0, microsecond=0)
    tokens(endpoint, now, 1_000_000, 1_000_000)
    html = owner_client.get("/usage/").content.decode()
    # 1000 x 0.0002 + 1000 x 0.0006 = 0.80
    assert 'href="/endpoints/chat/">chat</a>' in html and "<td>smollm2-135m-instruct</td>" in html
    assert "$0.80" in html


def test_it_edits_an_offers_limits_and_validates_them(it_client, serverless):
    _endpoint, model = serverless
    url = f"/admin/endpoints_app/catalogmodel/{model.pk}/change/"
    form = it_client.get(url).context["adminform"].form
    data = {name: form[name].value() for name in form.fields if form[name].value() is not None}
    for name in ("input_schema", "output_schema", "sample_request", "sample_response", "tags"):
        data[name] = "{}"
    data["deployment_kinds"] = '["online", "serverless"]'
    bad = it_client.post(url, {**data, "rate_limit_requests_per_minute": "0"})
    assert bad.status_code == 200
    assert "at least 1 per minute" in str(bad.context["adminform"].form.errors)
    before = RouteVersion.objects.get(pk=1).version
    ok = it_client.post(url, {**data, "rate_limit_requests_per_minute": "50", "offer_terms": "Be nice."})
    assert ok.status_code == 302
    model.refresh_from_db()
    assert (model.rate_limit_requests_per_minute, model.offer_terms) == (50, "Be nice.")
    assert RouteVersion.objects.get(pk=1).version > before
    assert AuditLog.objects.filter(action="rate_limit.change", object_name=str(model)).exists()


def test_it_sets_a_workspace_override_and_validates_it(it_client, owner_api, serverless, workspace):
    _endpoint, model = serverless
    add = "/admin/endpoints_app/serverlessratelimit/add/"
    empty = it_client.post(add, {"workspace": workspace.pk, "model": model.pk})
    assert empty.status_code == 200 and "Set at least one limit" in str(empty.context["adminform"].form.errors)
    iris = CatalogModel.objects.create(name="iris", task="classification", format="sklearn", license="MIT",
                                       deployment_kinds=["online"])
    not_offered = it_client.post(add, {"workspace": workspace.pk, "model": iris.pk, "requests_per_minute": "5"})
    assert not_offered.status_code == 200 and not ServerlessRateLimit.objects.exists()
    assert it_client.post(add, {"workspace": workspace.pk, "model": model.pk, "requests_per_minute": "5"}
                          ).status_code == 302
    assert owner_api.get(f"{WS}/serverless-endpoints/chat").json()["rate_limits"] == {
        "requests_per_minute": 5, "tokens_per_minute": 200_000}
    assert AuditLog.objects.filter(action="rate_limit.override", workspace=workspace).exists()


def test_pools_are_visible_to_it_only(it_client, owner_client, owner_api, serverless):
    endpoint, _model = serverless
    pools = it_client.get("/admin/endpoints_app/deployment/", {"pool": "yes"})
    assert pools.status_code == 200
    assert endpoint.pool.name in pools.content.decode()
    assert "platform (serverless pool)" in pools.content.decode()
    assert it_client.get(f"/admin/endpoints_app/deployment/{endpoint.pool.pk}/change/").status_code == 200
    assert it_client.get("/admin/endpoints_app/marketplacesubscription/").status_code == 200
    # Users see neither the platform workspace nor its endpoint.
    assert "_platform" not in str(owner_api.get("/api/v1/workspaces").json())
    assert "_serverless" not in owner_client.get("/endpoints/?kind=online").content.decode()
