"""A job's cost: its model servers' instance-minutes x the instance type's price, in the job API,
the usage API's totals, and /metrics' jobs by state."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from endpoints_app.batch.controller import settle_cost
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
