"""The Usage page, its CSV export, the monthly budget and its warnings, and IT's cost page."""

import csv
import io
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import PermissionDenied
from django.utils import timezone

from endpoints_app.models import AuditLog, Endpoint, Workspace
from endpoints_app.services.audit import Actor
from endpoints_app.services.usage import check_budget, do_set_budget, month_start
from tests.usage import factories as f


@pytest.fixture
def spending(workspace):
    """This month: blue ran 10 hours at 0.14/h (1.40), and a serverless model used tokens (0.25)."""
    start = month_start(timezone.now())
    if timezone.now() - start < timedelta(hours=11):
        pytest.skip("these costs need the first 11 hours of the month to be over")
    ep = f.endpoint(workspace, "iris")
    blue = f.deployment(ep, "blue")
    f.instance(blue, start, start + timedelta(hours=10), state="Stopped")
    model = f.catalog_model("smollm2", price_input_per_1k=Decimal("0.01"), price_output_per_1k=Decimal("0.02"))
    chat = f.endpoint(workspace, "chat", kind=Endpoint.Kind.SERVERLESS)
    f.deployment(chat, "default", model=model)
    f.minute_row(chat, "default", start + timedelta(minutes=3), ok=2, tokens_in=5_000, tokens_out=10_000)
    return start


def test_usage_page_shows_cost_by_endpoint_model_and_day(owner_client, spending):
    response = owner_client.get("/usage/")
    assert response.status_code == 200
    html = response.content.decode()
    assert 'data-stat="total">$1.65<' in html
    assert "$1.40" in html and "$0.25" in html  # iris and chat
    assert "iris-classifier" in html and "smollm2" in html
    assert spending.strftime("%Y-%m-%d") in html


def test_csv_export_has_one_row_per_day_deployment_and_meter(owner_client, spending):
    response = owner_client.get("/usage/export.csv")
    assert response.status_code == 200 and response["Content-Type"] == "text/csv"
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert {(r["endpoint"], r["meter"]) for r in rows} == {("iris", "instance"), ("chat", "tokens")}
    assert sum(Decimal(r["cost"]) for r in rows) == Decimal("1.65")
    assert [r["instance_hours"] for r in rows if r["meter"] == "instance"] == ["10.000000"]


def test_owner_sets_budget_and_it_is_audited(owner_client, workspace):
    response = owner_client.post("/usage/budget/", {"monthly_budget": "250.5"})
    assert response.status_code == 302
    workspace.refresh_from_db()
    assert workspace.monthly_budget == Decimal("250.50")
    assert AuditLog.objects.filter(action="budget.set", workspace=workspace, via="ui").exists()


def test_contributor_cannot_set_budget(client, contributor, workspace):
    client.force_login(contributor)
    assert client.post("/usage/budget/", {"monthly_budget": "1"}).status_code == 403
    with pytest.raises(PermissionDenied):
        do_set_budget(Actor(contributor), workspace, "1")
    workspace.refresh_from_db()
    assert workspace.monthly_budget is None


def test_a_bad_budget_is_refused_with_a_message(owner_client, workspace):
    response = owner_client.post("/usage/budget/", {"monthly_budget": "lots"}, follow=True)
    assert "must be a number" in response.content.decode()
    workspace.refresh_from_db()
    assert workspace.monthly_budget is None


def test_budget_warnings_at_80_and_100_percent_once_per_month(owner_client, owner, workspace, spending):
    do_set_budget(Actor(owner), workspace, "2.00")  # spent 1.65 = 82.5%
    check_budget(Workspace.objects.get(pk=workspace.pk))
    check_budget(Workspace.objects.get(pk=workspace.pk))
    warnings = AuditLog.objects.filter(action="budget.warning", workspace=workspace)
    assert [w.details["threshold"] for w in warnings] == [80]
    html = owner_client.get("/usage/").content.decode()
    assert 'data-budget-level="80"' in html and "83% of its budget" in html

    do_set_budget(Actor(owner), workspace, "1.50")  # now over budget
    check_budget(Workspace.objects.get(pk=workspace.pk))
    check_budget(Workspace.objects.get(pk=workspace.pk))
    assert sorted(w.details["threshold"] for w in warnings.all()) == [80, 100]
    assert 'data-budget-level="100"' in owner_client.get("/usage/").content.decode()


def test_no_warning_under_80_percent(owner, workspace, spending):
    do_set_budget(Actor(owner), workspace, "100")
    status = check_budget(Workspace.objects.get(pk=workspace.pk))
    assert status["level"] is None and status["spent"] == Decimal("1.65")
    assert not AuditLog.objects.filter(action="budget.warning").exists()


def test_admin_shows_cost_across_workspaces(admin_client, workspace, spending):
    other = Workspace.objects.create(name="other")
    dep = f.deployment(f.endpoint(other, "elsewhere"), "red", instance_type="Standard_DS3_v2")
    f.instance(dep, spending, spending + timedelta(hours=2), state="Stopped")  # 0.586
    response = admin_client.get("/admin/endpoints_app/workspacecost/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "team" in html and "other" in html
    assert "$1.65" in html and "$0.59" in html and "$2.24" in html  # 1.65 + 0.586 = 2.236


def test_users_without_staff_cannot_see_admin_costs(owner_client, workspace):
    response = owner_client.get("/admin/endpoints_app/workspacecost/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


@pytest.mark.parametrize("month", ["9999-12", "0001-01", "2026-13", "junk"])
def test_odd_months_show_this_month(owner_client, admin_client, workspace, month):
    assert owner_client.get("/usage/", {"month": month}).status_code == 200
    assert owner_client.get("/usage/export.csv", {"month": month}).status_code == 200
    assert admin_client.get("/admin/endpoints_app/workspacecost/", {"month": month}).status_code == 200
