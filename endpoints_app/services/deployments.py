"""Deployments of an endpoint: create, update, delete, with quota and capacity checks,
and the reads of their current instances and logs."""

from __future__ import annotations

from django.db import transaction

from endpoints_app.controller.placement import (
    check_capacity,
    check_quota,
    cores_in_use,
    quota_limit,
    reserved_instances,
)
from endpoints_app.errors import Conflict, InvalidInput
from endpoints_app.models import (
    Deployment,
    Endpoint,
    Instance,
    InstanceState,
    InstanceType,
    ProvisioningState,
    RouteVersion,
    Workspace,
)
from endpoints_app.services.audit import Actor, record
from endpoints_app.services.online import (
    LIVE_INSTANCE_STATES,
    enqueue_provision,
    enqueue_reconcile,
    live_deployments,
    lock_endpoint,
    request_stop,
)
from endpoints_app.services.specs import (
    DEPLOYMENT_FIELDS,
    UPDATABLE_FIELDS,
    check_fields,
    check_model_kind,
    parse_code_configuration,
    parse_environment_variables,
    parse_instance_count,
    parse_int,
    parse_new_deployment_name,
    parse_probe,
    parse_request_settings,
    parse_scale_settings,
    resolve_instance_type,
    resolve_model,
)


def check_resources(workspace: Workspace, instance_type: InstanceType, count: int, reserved: int | None = None) -> None:
    """Refuse (QuotaExceeded) what the workspace's quota or the nodes cannot hold: `count` new instances,
    reserving `reserved` (an autoscaled deployment's maximum) against the quota."""
    check_quota(workspace, instance_type, count if reserved is None else reserved)
    check_capacity(instance_type, count)


def quota_usage(workspace: Workspace, families: set[str]) -> dict[str, tuple[int, int]]:
    """{family: (cores in use, quota in cores)} for the workspace, as the quota check counts them."""
    return {f: (cores_in_use(workspace, f), quota_limit(workspace, f)) for f in families}


@transaction.atomic
def do_create_deployment(actor: Actor, endpoint: Endpoint, spec: dict) -> Deployment:
    if not isinstance(spec, dict):
        raise InvalidInput("The deployment must be an object.")
    endpoint = lock_endpoint(endpoint)
    check_fields(spec, DEPLOYMENT_FIELDS)
    name = parse_new_deployment_name(endpoint, spec.get("name"))
    if spec.get("endpoint_name") not in (None, "", endpoint.name):
        raise InvalidInput(
            f"endpoint_name is '{spec['endpoint_name']}' but this is endpoint '{endpoint.name}'.", field="endpoint_name"
        )
    model = resolve_model(endpoint.workspace, spec.get("model"))
    check_model_kind(model, endpoint.kind)
    instance_type = resolve_instance_type(spec.get("instance_type"))
    scale = parse_scale_settings(spec.get("scale_settings"))
    count = parse_instance_count(spec, scale)
    deployment = Deployment(
        endpoint=endpoint,
        name=name,
        model=model,
        instance_type=instance_type,
        instance_count=count,
        code_configuration=parse_code_configuration(spec.get("code_configuration"), endpoint.workspace),
        environment_variables=parse_environment_variables(spec.get("environment_variables")),
        scale_settings=scale,
        request_settings=parse_request_settings(spec.get("request_settings"), model=model),
        liveness_probe=parse_probe(spec.get("liveness_probe"), "liveness_probe"),
        readiness_probe=parse_probe(spec.get("readiness_probe"), "readiness_probe"),
        provisioning_state=ProvisioningState.CREATING,
    )
    check_resources(endpoint.workspace, instance_type, count, reserved_instances(deployment))
    deployment.save()
    names = set(live_deployments(endpoint))
    traffic = {n: int(endpoint.traffic.get(n, 0)) for n in names}
    if sum(traffic.values()) == 0 and names == {name}:
        # The first deployment of an endpoint takes all its traffic, as the studio's wizard does.
        traffic[name] = 100
    endpoint.traffic = traffic
    endpoint.save(update_fields=["traffic", "updated_at"])
    record(
        actor, "deployment.create", deployment, endpoint.workspace,
        model=model.asset_id, instance_type=instance_type.name, instance_count=count,
    )
    RouteVersion.bump()
    enqueue_provision(deployment.pk)
    return deployment


def lock_deployment(deployment: Deployment) -> Deployment:
    """The deployment's row, locked for an update; Conflict when it is gone or being deleted."""
    locked = (
        Deployment.objects.select_for_update(of=("self",))
        .select_related("endpoint", "endpoint__workspace", "instance_type", "model")
        .filter(pk=deployment.pk)
        .first()
    )
    if locked is None:
        raise Conflict(f"Deployment '{deployment.name}' no longer exists.")
    if locked.provisioning_state == ProvisioningState.DELETING:
        raise Conflict(f"Deployment '{deployment.name}' is being deleted.")
    return locked


@transaction.atomic
def do_update_deployment(actor: Actor, deployment: Deployment, changes: dict) -> Deployment:
    """Apply changes; a change of model, code, environment or instance type rolls new instances
    out with a surge, a change of instance count scales; both leave it Updating until done."""
    if not isinstance(changes, dict):
        raise InvalidInput("The changes must be an object.")
    deployment = lock_deployment(deployment)
    check_fields(changes, UPDATABLE_FIELDS | {"name"})
    if changes.get("name") not in (None, deployment.name):
        raise InvalidInput("A deployment cannot be renamed.", field="name")
    endpoint = deployment.endpoint
    changed: list[str] = []
    new_process = False

    if "model" in changes:
        model = resolve_model(endpoint.workspace, changes["model"])
        if model.deployment_kinds and endpoint.kind not in model.deployment_kinds:
            raise InvalidInput(f"Model {model.asset_id} cannot be deployed to an {endpoint.kind} endpoint.",
                               field="model")
        if model.pk != deployment.model_id:
            deployment.model = model
            changed.append("model")
            new_process = True
    if "instance_type" in changes:
        instance_type = resolve_instance_type(changes["instance_type"])
        if instance_type.pk != deployment.instance_type_id:
            deployment.instance_type = instance_type
            changed.append("instance_type")
            new_process = True
    # What the model server process is started with: a change needs new processes.
    process_fields = (
        ("code_configuration", lambda value: parse_code_configuration(value, endpoint.workspace)),
        ("environment_variables", parse_environment_variables),
    )
    for field, parse in process_fields:
        if field in changes:
            value = parse(changes[field])
            if value != getattr(deployment, field):
                setattr(deployment, field, value)
                changed.append(field)
                new_process = True
    for probe in ("liveness_probe", "readiness_probe"):
        if probe in changes:
            value = parse_probe(changes[probe], probe, getattr(deployment, probe))
            if value != getattr(deployment, probe):
                setattr(deployment, probe, value)
                changed.append(probe)
    if "request_settings" in changes:
        value = parse_request_settings(changes["request_settings"], deployment.request_settings)
        if value != deployment.request_settings:
            deployment.request_settings = value
            changed.append("request_settings")
    old_count = deployment.instance_count
    if "scale_settings" in changes:
        value = parse_scale_settings(changes["scale_settings"])
        if value != deployment.scale_settings:
            deployment.scale_settings = value
            changed.append("scale_settings")
    if "instance_count" in changes or "scale_settings" in changes:
        count = parse_instance_count(changes, deployment.scale_settings, current=old_count)
        if count != old_count:
            deployment.instance_count = count
            changed.append("instance_count")

    if deployment.provisioning_state == ProvisioningState.FAILED and not (new_process or "instance_count" in changed):
        # Updating a Failed deployment retries it with fresh processes (the user may have fixed
        # score.py or a model file in place, which no field shows).
        new_process = True
        changed.append("retry")
    if not changed:
        return deployment
    if "instance_count" in changed or "scale_settings" in changed or "instance_type" in changed:
        check_quota(endpoint.workspace, deployment.instance_type, reserved_instances(deployment), exclude=deployment)
    if "instance_type" in changed:
        check_capacity(deployment.instance_type, deployment.instance_count, exclude=deployment)
    elif deployment.instance_count > old_count:
        check_capacity(deployment.instance_type, deployment.instance_count - old_count, exclude=None)
    provisions = new_process or "instance_count" in changed
    if new_process:
        deployment.generation += 1
    if provisions:
        deployment.provisioning_state = ProvisioningState.UPDATING
        deployment.error = ""
    deployment.save()
    record(actor, "deployment.update", deployment, endpoint.workspace, changed=changed,
           generation=deployment.generation, instance_count=deployment.instance_count)
    if "request_settings" in changed:
        RouteVersion.bump()
    if provisions or "scale_settings" in changed:
        enqueue_provision(deployment.pk)
    return deployment


@transaction.atomic
def do_delete_deployment(actor: Actor, deployment: Deployment) -> None:
    """Refuse while it takes live traffic next to other deployments; otherwise drain and stop it."""
    # Locks in one order everywhere (endpoint, deployment, instances), so writers never deadlock.
    endpoint = Endpoint.objects.select_for_update().filter(pk=deployment.endpoint_id).first()
    deployment = Deployment.objects.select_for_update(of=("self",)).filter(pk=deployment.pk).first()
    if endpoint is None or deployment is None:
        return
    share = int(endpoint.traffic.get(deployment.name, 0))
    others = endpoint.deployments.exclude(pk=deployment.pk).exclude(provisioning_state=ProvisioningState.DELETING)
    if share > 0 and others.exists():
        raise Conflict(
            f"Deployment '{deployment.name}' takes {share}% of live traffic on endpoint '{endpoint.name}'; "
            "set its traffic to 0 first.",
            field="traffic",
        )
    endpoint.traffic = {k: v for k, v in endpoint.traffic.items() if k != deployment.name}
    endpoint.mirror_traffic = {k: v for k, v in endpoint.mirror_traffic.items() if k != deployment.name}
    endpoint.save(update_fields=["traffic", "mirror_traffic", "updated_at"])
    request_stop(deployment.instances.all())
    record(actor, "deployment.delete", deployment, endpoint.workspace)
    if deployment.instances.filter(state__in=LIVE_INSTANCE_STATES).exists():
        deployment.provisioning_state = ProvisioningState.DELETING
        deployment.save(update_fields=["provisioning_state", "updated_at"])
        enqueue_reconcile([deployment.pk])
    else:
        deployment.mark_deleted()
    RouteVersion.bump()


def current_instances(deployment: Deployment, instances: list[Instance] | None = None) -> list[Instance]:
    """The instances worth showing: all but stopped ones (kept for billing) and failures of
    earlier generations."""
    rows = list(deployment.instances.all()) if instances is None else instances
    return [
        i for i in rows
        if i.state != InstanceState.STOPPED
        and not (i.state == InstanceState.FAILED and i.generation != deployment.generation)
    ]


def read_deployment_logs(
    deployment: Deployment, lines: int = 100, instance: str | None = None, newest_first: bool = False
) -> str:
    """The last `lines` lines of each instance's log (or of one instance), as plain text, probe lines left
    out (counted in one line instead); newest line first when asked, as the Logs tab shows them."""
    from endpoints_app.controller import process

    lines = parse_int(lines, "lines", 1, 10000)
    instances = list(deployment.instances.select_related("node").order_by("-generation", "name"))
    if instance:
        instances = [i for i in instances if i.name == instance]
        if not instances:
            raise InvalidInput(f"Deployment '{deployment.name}' has no instance {instance!r}.", field="instance")
    else:
        instances = current_instances(deployment, instances)
    if not instances:
        return f"Deployment '{deployment.name}' has no instances yet ({deployment.provisioning_state}).\n"
    parts = []
    for inst in instances:
        path = inst.log_path or str(process.log_path(inst.name))
        kept, probes = process.tail_without_probes(path, lines)
        kept = [line if line.endswith("\n") else line + "\n" for line in kept]
        if newest_first:
            kept.reverse()
        if len(instances) > 1 or not instance:
            parts.append(f"==> instance {inst.name} on {inst.node.name} ({inst.state}) <==\n")
        if probes:
            parts.append(f"({probes} readiness-probe lines hidden)\n")
        parts.extend(kept or ["(no output yet)\n"])
    return "".join(parts)
