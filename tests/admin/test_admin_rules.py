"""The models' clean() holds the rules, so the admin, the services and the API refuse the same
bad values; the console's lists read right and it looks like part of the studio."""

from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from endpoints_app.errors import InvalidInput
from endpoints_app.models import Endpoint, InstanceType, PriceChange, QuotaLimit
from endpoints_app.services.audit import Actor
from endpoints_app.services.usage import do_change_instance_price

pytestmark = pytest.mark.django_db


@pytest.fixture
def it_client(client, db):
    admin_user = get_user_model().objects.create_superuser("it-admin", "it@example.com", "pw-for-tests-only")
    client.force_login(admin_user)
    return client


def _instance_type_form(instance_type, **changes):
    data = {"name": instance_type.name, "family": instance_type.family, "cores": instance_type.cores,
            "memory_gb": instance_type.memory_gb, "price_per_hour": instance_type.price_per_hour, "is_active": "on"}
    return {**data, **changes}


def test_it_refuses_a_negative_price_in_the_admin_and_the_service(it_client, instance_types):
    small = InstanceType.objects.get(name="Standard_DS1_v2")
    url = f"/admin/endpoints_app/instancetype/{small.pk}/change/"
    page = it_client.post(url, _instance_type_form(small, price_per_hour="-1")).content.decode()
    assert "The price per hour cannot be negative." in page
    small.refresh_from_db()
    assert small.price_per_hour == Decimal("0.0700") and not PriceChange.objects.exists()
    with pytest.raises(InvalidInput) as refused:
        do_change_instance_price(Actor(user=None), small, Decimal("-1"))
    assert refused.value.field == "price_per_hour"
    assert not PriceChange.objects.exists()
    # A good price goes through, with its history.
    assert it_client.post(url, _instance_type_form(small, price_per_hour="0.08")).status_code == 302
    assert InstanceType.objects.get(pk=small.pk).price_per_hour == Decimal("0.08")


def test_the_first_price_history_row_says_it_is_the_initial_price(it_client, instance_types):
    small = InstanceType.objects.get(name="Standard_DS1_v2")
    do_change_instance_price(Actor(user=None), small, Decimal("0.09"))
    page = it_client.get("/admin/endpoints_app/pricechange/").content.decode()
    assert "1970" not in page
    assert "the start (price before the first change)" in page
    assert timezone.localtime().strftime("%Y-%m-%d") in page


def test_a_quota_family_is_a_choice_among_existing_families(it_client, workspace):
    page = it_client.get("/admin/endpoints_app/quotalimit/add/").content.decode()
    assert '<select name="family"' in page and '<option value="DSv2">DSv2</option>' in page
    typo = it_client.post("/admin/endpoints_app/quotalimit/add/",
                          {"workspace": workspace.pk, "family": "DSV2", "max_cores": 4}).content.decode()
    assert "Select a valid choice" in typo
    assert not QuotaLimit.objects.exists()
    # The rule lives on the model, for every writer.
    with pytest.raises(Exception) as refused:
        QuotaLimit(workspace=workspace, family="nope", max_cores=1).full_clean()
    assert "No instance type is in family 'nope'" in str(refused.value)
    assert it_client.post("/admin/endpoints_app/quotalimit/add/",
                          {"workspace": workspace.pk, "family": "DSv2", "max_cores": 4}).status_code == 302


def test_the_workspaces_list_counts_live_endpoints_only(it_client, workspace):
    Endpoint.objects.create(workspace=workspace, name="alive", provisioning_state="Succeeded")
    Endpoint.objects.create(workspace=workspace, name="gone", provisioning_state="Succeeded",
                            deleted_at=timezone.now())
    response = it_client.get("/admin/endpoints_app/workspace/")
    row = next(w for w in response.context["cl"].result_list if w.pk == workspace.pk)
    assert row._endpoints == 1


def test_the_endpoints_list_shows_traffic_compactly_and_whole_times(it_client, workspace):
    Endpoint.objects.create(workspace=workspace, name="split", provisioning_state="Succeeded",
                            traffic={"blue": 90, "green": 10, "red": 0}, mirror_traffic={"red": 10})
    page = it_client.get("/admin/endpoints_app/endpoint/").content.decode()
    assert ('<span class="nowrap">blue 90%</span> · <span class="nowrap">green 10%</span> · '
            '<span class="nowrap">mirror red 10%</span>') in page
    assert timezone.localtime().strftime("%Y-%m-%d ") in page


def test_the_console_wears_the_studios_header_with_a_way_back(it_client):
    page = it_client.get("/admin/").content.decode()
    assert "◆ Studio" in page and 'class="studio-link">← Back to the studio</a>' in page
    assert "--header-bg: #111827" in page and "--primary: #2563eb" in page
