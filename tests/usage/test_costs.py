"""Cost meters: instance-hours x price, tokens x price per 1K, price changes from their minute on."""

from datetime import timedelta
from decimal import Decimal

import pytest

from endpoints_app.metering import costs
from endpoints_app.metering.report import Window, usage_report
from endpoints_app.models import AuditLog, Endpoint, InstanceType
from tests.usage import factories as f
from tests.usage.factories import T0

URL = "/api/v1/workspaces/team/usage"


def iso(t):
    return t.isoformat().replace("+00:00", "Z")


def test_online_cost_is_instance_hours_times_price(owner_api, workspace):
    ep = f.endpoint(workspace, "iris")
    blue = f.deployment(ep, "blue", instance_type="Standard_DS2_v2")  # 0.14 / h
    green = f.deployment(ep, "green", instance_type="Standard_DS3_v2")  # 0.293 / h
    f.instance(blue, T0, T0 + timedelta(hours=10), state="Stopped")
    f.instance(blue, T0 + timedelta(hours=2), T0 + timedelta(hours=3, minutes=30), state="Stopped")
    f.instance(green, T0 + timedelta(minutes=15), T0 + timedelta(hours=7, minutes=15), state="Stopped")
    body = owner_api.get(URL, {"from": iso(T0), "to": iso(T0 + timedelta(days=1)), "interval": "1h"}).json()
    hours = Decimal("11.5") + Decimal(7)
    cost = Decimal("11.5") * Decimal("0.14") + Decimal(7) * Decimal("0.293")  # 1.61 + 2.051 = 3.661
    assert body["totals"]["instance_hours"] == float(hours)
    assert body["totals"]["cost"] == float(cost) == 3.661  # unrounded (six decimals), like the series
    by_hour = {(p["time"], p["deployment"]): p for p in body["series"]}
    assert by_hour[(iso(T0 + timedelta(hours=2)), "blue")]["instance_hours"] == 2.0
    assert by_hour[(iso(T0), "green")]["instance_hours"] == 0.75


def test_a_range_clips_instance_uptime(owner_api, workspace):
    dep = f.deployment(f.endpoint(workspace, "iris"), "blue")  # 0.14 / h
    f.instance(dep, T0 - timedelta(hours=5), None, state="Ready")
    body = owner_api.get(URL, {"from": iso(T0), "to": iso(T0 + timedelta(hours=3))}).json()
    assert body["totals"]["instance_hours"] == 3.0
    assert body["totals"]["cost"] == 0.42


def test_a_price_change_applies_from_its_minute_on_never_before(owner_api, workspace):
    dep = f.deployment(f.endpoint(workspace, "iris"), "blue")
    f.instance(dep, T0, T0 + timedelta(hours=4), state="Stopped")
    itype = InstanceType.objects.get(name="Standard_DS2_v2")
    window = {"from": iso(T0), "to": iso(T0 + timedelta(hours=4))}
    assert owner_api.get(URL, window).json()["totals"]["cost"] == 0.56  # 4 h x 0.14
    # IT doubles the price at T0 + 1 h 30 min 45 s: it applies from T0 + 1 h 30 min.
    costs.record_instance_price(itype, itype.price_per_hour, Decimal("0.28"), T0 + timedelta(hours=1.5, seconds=45))
    itype.price_per_hour = Decimal("0.28")
    itype.save()
    assert owner_api.get(URL, window).json()["totals"]["cost"] == float(
        Decimal("1.5") * Decimal("0.14") + Decimal("2.5") * Decimal("0.28")
    )  # 0.21 + 0.70 = 0.91
    # Before the change nothing moved.
    early = {"from": iso(T0), "to": iso(T0 + timedelta(hours=1))}
    assert owner_api.get(URL, early).json()["totals"]["cost"] == 0.14


def test_serverless_cost_is_tokens_times_price_per_1k(owner_api, workspace):
    model = f.catalog_model("smollm2", price_input_per_1k=Decimal("0.0005"), price_output_per_1k=Decimal("0.0015"))
    ep = f.endpoint(workspace, "chat", kind=Endpoint.Kind.SERVERLESS)
    f.deployment(ep, "default", model=model)
    f.minute_row(ep, "default", T0, ok=10, tokens_in=123_000, tokens_out=45_000)
    f.minute_row(ep, "default", T0 + timedelta(hours=26, minutes=7), ok=1, tokens_in=1_000, tokens_out=2_000)
    body = owner_api.get(URL, {"from": iso(T0), "to": iso(T0 + timedelta(days=2))}).json()
    assert (body["totals"]["tokens_in"], body["totals"]["tokens_out"]) == (124_000, 47_000)
    # 124 x 0.0005 + 47 x 0.0015 = 0.062 + 0.0705 = 0.1325, not rounded to cents
    assert body["totals"]["cost"] == 0.1325
    assert body["totals"]["instance_hours"] == 0


def test_a_token_price_change_is_not_retroactive(workspace):
    model = f.catalog_model("smollm2", price_input_per_1k=Decimal("1"), price_output_per_1k=Decimal("2"))
    ep = f.endpoint(workspace, "chat", kind=Endpoint.Kind.SERVERLESS)
    f.deployment(ep, "default", model=model)
    f.minute_row(ep, "default", T0 + timedelta(minutes=10), ok=1, tokens_in=1000, tokens_out=1000)
    f.minute_row(ep, "default", T0 + timedelta(minutes=20), ok=1, tokens_in=1000, tokens_out=1000)
    costs.record_token_price(model, (Decimal(1), Decimal(2)), (Decimal(10), Decimal(20)), T0 + timedelta(minutes=15))
    report = usage_report([ep], Window(T0, T0 + timedelta(hours=1), "1h"), now=T0 + timedelta(days=1))
    assert report["totals"]["cost"] == 3 + 30


@pytest.mark.django_db
def test_admin_price_edit_records_history(admin_client, instance_types):
    itype = InstanceType.objects.get(name="Standard_DS2_v2")
    response = admin_client.post(
        f"/admin/endpoints_app/instancetype/{itype.pk}/change/",
        {"name": itype.name, "family": itype.family, "cores": itype.cores, "memory_gb": itype.memory_gb,
         "price_per_hour": "0.5000", "is_active": "on"},
    )
    assert response.status_code == 302, response.content[:2000]
    timeline = costs.instance_price_timeline(InstanceType.objects.get(pk=itype.pk))
    assert [price for _, price in timeline] == [Decimal("0.14"), Decimal("0.5")]
    assert timeline[0][0] == costs.EPOCH


@pytest.mark.django_db
def test_admin_token_price_edit_applies_from_now_on(admin_client, workspace):
    model = f.catalog_model("smollm2", price_input_per_1k=Decimal("0.001"), price_output_per_1k=Decimal("0.002"))
    ep = f.endpoint(workspace, "chat", kind=Endpoint.Kind.SERVERLESS)
    f.deployment(ep, "default", model=model)
    f.minute_row(ep, "default", T0, ok=1, tokens_in=1000, tokens_out=1000)  # long before the change
    form = admin_client.get(f"/admin/endpoints_app/catalogmodel/{model.pk}/change/").context["adminform"].form
    data = {name: form[name].value() for name in form.fields if form[name].value() is not None}
    data.update(price_input_per_1k="1", price_output_per_1k="2", deployment_kinds='["serverless"]')
    for name in ("input_schema", "output_schema", "sample_request", "sample_response", "tags"):
        data[name] = "{}"
    response = admin_client.post(f"/admin/endpoints_app/catalogmodel/{model.pk}/change/", data)
    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else response
    model.refresh_from_db()
    assert model.price_input_per_1k == Decimal("1")
    report = usage_report([ep], Window(T0, T0 + timedelta(hours=1), "1h"))
    assert report["totals"]["cost"] == 0.003  # 0.001 + 0.002 at the old price, not 3.00 at the new
    assert AuditLog.objects.filter(action="price.change", object_name=str(model)).exists()


def test_deleting_an_endpoint_keeps_what_it_served_and_cost(owner_api, workspace):
    """Billing history outlives the endpoint; its name is free for a new one."""
    from endpoints_app.services import online as endpoint_svc
    from endpoints_app.services.audit import SYSTEM

    ep = f.endpoint(workspace, "iris", traffic={"blue": 100})
    blue = f.deployment(ep, "blue")  # 0.14 / h
    f.instance(blue, T0, T0 + timedelta(hours=10), state="Stopped")
    f.minute_row(ep, "blue", T0 + timedelta(minutes=5), ok=7, client_errors=2)
    window = {"from": iso(T0), "to": iso(T0 + timedelta(days=1)), "interval": "1d"}
    before = owner_api.get(URL, window).json()["totals"]

    endpoint_svc.do_delete_endpoint(SYSTEM, ep)  # no live instance: finished at once
    assert not Endpoint.objects.filter(name="iris").exists()
    assert owner_api.get("/api/v1/workspaces/team/online-endpoints/iris").status_code == 404

    after = owner_api.get(URL, window).json()["totals"]
    assert after == before
    assert (after["requests"], after["instance_hours"], after["cost"]) == (9, 10.0, 1.4)
    again = f.endpoint(workspace, "iris")
    assert again.pk != ep.pk and Endpoint.all_objects.filter(name="iris").count() == 2


def test_a_few_minutes_of_an_instance_cost_more_than_zero(owner_api, workspace):
    dep = f.deployment(f.endpoint(workspace, "iris"), "blue")  # 0.14 / h
    f.instance(dep, T0, T0 + timedelta(minutes=3), state="Stopped")
    body = owner_api.get(URL, {"from": iso(T0), "to": iso(T0 + timedelta(hours=1))}).json()
    assert body["totals"]["instance_hours"] == 0.05
    assert body["totals"]["cost"] == 0.007  # 0.05 h x 0.14: a cent-rounded total would read 0.01
    assert sum(p["cost"] for p in body["series"]) == pytest.approx(body["totals"]["cost"], abs=1e-5)
