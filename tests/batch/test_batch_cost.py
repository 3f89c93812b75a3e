"""A job's cost: its model servers' instance-minutes x the instance type's price, in the job API,
the usage API's totals, and /metrics' jobs by state."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from endpoints_app.controller.jobs import settle_cost
from endpoints_app.models import BatchJob, Instance, InstanceState, Node
from tests.batch.conftest import WS, iris_csv

pytestmark = pytest.mark.django_db

EP = f"{WS}/batch-endpoints"


def test_it_bills_a_jobs_instance_minutes_at_the_instance_price(owner_api, batch_endpoint, make_asset, client):
    batch_endpoint()
    make_asset("rows", {"a.csv": iris_csv(3)})
    body = {"inputs": {"input_data": {"type": "uri_folder", "path": "studio:data/rows/versions/1"}}}
    name = owner_api.post(f"{EP}/scorer/jobs", body, format="json").json()["name"]
    job = BatchJob.objects.get(name=name)
    end = timezone.now().replace(microsecond=0) - timedelta(minutes=1)
    # Two model servers the controller ran for the job: 3 and 6 minutes of a $0.07/hour type.
    for minutes in (3, 6):
        Instance.objects.create(deployment=job.deployment, batch_job=job, name=f"{name}-{minutes}",
                                node=Node.objects.get(), state=InstanceState.STOPPED,
                                started_at=end - timedelta(minutes=minutes), stopped_at=end)
    BatchJob.objects.filter(pk=job.pk).update(status="Completed", finished_at=end)
    settle_cost(job)

    shown = owner_api.get(f"{EP}/scorer/jobs/{name}").json()
    assert shown["instance_minutes"] == pytest.approx(9.0)
    assert Decimal(shown["cost"]) == Decimal("0.0105") and Decimal(shown["price_per_hour"]) == Decimal("0.07")

    usage = owner_api.get(f"{WS}/usage", {"endpoint": "scorer", "from": (end - timedelta(hours=1)).isoformat(),
                                          "to": timezone.now().isoformat()}).json()
    assert usage["totals"]["instance_hours"] == pytest.approx(0.15)
    assert usage["totals"]["cost"] == pytest.approx(0.01, abs=0.006)

    metrics = client.get("/metrics").content.decode()
    assert 'studio_batch_jobs{workspace="team",endpoint="scorer",status="Completed"} 1' in metrics


def test_a_finished_jobs_cost_is_final_only_once_its_servers_stopped_and_names_the_price_charged(
        owner_api, owner_client, batch_endpoint, make_asset):
    from endpoints_app.models import InstanceType
    from endpoints_app.services.audit import Actor
    from endpoints_app.services.usage import do_change_instance_price

    batch_endpoint()
    make_asset("rows", {"a.csv": iris_csv(3)})
    body = {"inputs": {"input_data": {"type": "uri_folder", "path": "studio:data/rows/versions/1"}}}
    name = owner_api.post(f"{EP}/scorer/jobs", body, format="json").json()["name"]
    job = BatchJob.objects.get(name=name)
    end = timezone.now().replace(microsecond=0) - timedelta(minutes=1)
    server = Instance.objects.create(deployment=job.deployment, batch_job=job, name=f"{name}-1",
                                     node=Node.objects.get(), state=InstanceState.STOPPING,
                                     started_at=end - timedelta(minutes=3))
    BatchJob.objects.filter(pk=job.pk).update(status="Completed", finished_at=end)
    settle_cost(job)
    running = owner_api.get(f"{EP}/scorer/jobs/{name}").json()
    assert running["cost_final"] is False  # its model server still bills until it stops

    Instance.objects.filter(pk=server.pk).update(state=InstanceState.STOPPED, stopped_at=end)
    # The price changes after the job: the job was charged at the old one, and says so.
    do_change_instance_price(Actor(user=None), InstanceType.objects.get(name="Standard_DS1_v2"), Decimal("0.1"))
    shown = owner_api.get(f"{EP}/scorer/jobs/{name}").json()
    assert shown["cost_final"] is False  # the stored cost does not yet hold the whole uptime
    settle_cost(BatchJob.objects.get(pk=job.pk))
    final = owner_api.get(f"{EP}/scorer/jobs/{name}").json()
    assert final["cost_final"] is True and final["charged_prices_per_hour"] == ["0.0700"]
    assert Decimal(final["cost"]) == Decimal("0.0035")
    page = owner_client.get(f"/jobs/{name}/").content.decode()
    assert "charged at $0.0700/h" in page and "final" in page and "$0.1000" not in page
