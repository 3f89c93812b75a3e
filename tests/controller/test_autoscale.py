"""Autoscale decisions of the reconcile loop (target_utilization), from the gateway's usage counters."""

from datetime import timedelta

import pytest
from django.utils import timezone

from endpoints_app.controller import reconcile
from endpoints_app.models import AuditLog, Deployment, Instance, InstanceState, UsageMinute
from tests.live import register_test_node

pytestmark = pytest.mark.django_db

BASE = "/api/v1/workspaces/team/online-endpoints"


@pytest.fixture
def autoscaled(owner_api, workspace, tmp_path):
    from tests.live import make_custom_model

    register_test_node()
    model = make_custom_model(workspace, tmp_path / "code")
    assert owner_api.post(BASE, {"name": "busy"}, format="json").status_code == 201
    body = {
        "name": "blue", "model": "doubler:1", "instance_type": "Standard_DS1_v2",
        "request_settings": {"max_concurrent_requests_per_instance": 2},
        "scale_settings": {"type": "target_utilization", "min_instances": 1, "max_instances": 3,
                           "target_utilization_percentage": 50, "cooldown_seconds": 30},
    }
    assert owner_api.post(f"{BASE}/busy/deployments", body, format="json").status_code == 202
    deployment = Deployment.objects.get(name="blue")
    assert model and deployment.instance_count == 1
    # As if the worker had provisioned it: one ready instance (no process needed to plan).
    reconcile.plan_deployment(deployment.pk)
    Instance.objects.filter(deployment=deployment).update(state=InstanceState.READY, ready_at=timezone.now())
    reconcile.refresh_deployment_state(deployment.pk)
    deployment.refresh_from_db()
    assert deployment.provisioning_state == "Succeeded"
    return deployment


def busy(deployment, seconds_in_flight: float) -> None:
    minute = timezone.now().replace(second=0, microsecond=0)
    UsageMinute.objects.update_or_create(
        endpoint=deployment.endpoint, deployment=deployment.name, minute=minute,
        defaults={"requests": 1000, "status_2xx": 1000, "latency_ms_sum": seconds_in_flight * 1000},
    )


def test_load_above_target_scales_out_to_the_maximum_and_is_audited(autoscaled):
    # 600 s of answering within at most 70 s: more than 8 requests in flight; target is 1 per instance.
    busy(autoscaled, 600)

    reconcile.plan_deployment(autoscaled.pk)

    autoscaled.refresh_from_db()
    assert autoscaled.instance_count == 3 and autoscaled.provisioning_state == "Updating"
    assert Instance.objects.filter(deployment=autoscaled, state=InstanceState.STARTING).count() == 2
    entry = AuditLog.objects.get(action="deployment.autoscale")
    assert entry.details["from_instances"] == 1 and entry.details["to_instances"] == 3
    assert entry.details["target_in_flight_per_instance"] == 1.0


def test_no_load_scales_in_only_after_the_cool_down(autoscaled):
    busy(autoscaled, 600)
    reconcile.plan_deployment(autoscaled.pk)
    Instance.objects.filter(deployment=autoscaled).update(state=InstanceState.READY, ready_at=timezone.now())
    reconcile.refresh_deployment_state(autoscaled.pk)
    UsageMinute.objects.all().delete()

    reconcile.plan_deployment(autoscaled.pk)
    autoscaled.refresh_from_db()
    assert autoscaled.instance_count == 3, "within the cool-down nothing changes"

    Deployment.objects.filter(pk=autoscaled.pk).update(last_scaled_at=timezone.now() - timedelta(seconds=31))
    reconcile.plan_deployment(autoscaled.pk)

    autoscaled.refresh_from_db()
    assert autoscaled.instance_count == 1
    assert Instance.objects.filter(deployment=autoscaled, state=InstanceState.STOPPING).count() == 2
    assert AuditLog.objects.filter(action="deployment.autoscale").count() == 2


def test_default_scale_settings_never_autoscale(owner_api, autoscaled):
    assert owner_api.patch(f"{BASE}/busy/deployments/blue", {"scale_settings": {"type": "default"}},
                           format="json").status_code in (200, 202)
    Deployment.objects.filter(pk=autoscaled.pk).update(provisioning_state="Succeeded")
    busy(autoscaled, 600)
    reconcile.plan_deployment(autoscaled.pk)
    autoscaled.refresh_from_db()
    assert autoscaled.instance_count == 1
