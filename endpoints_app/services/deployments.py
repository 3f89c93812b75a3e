"""Deployments of an endpoint: create, update, delete, with quota and capacity checks,
and the reads of their current instances and logs."""

from __future__ import annotations

from django.db import transaction

from endpoints_app.controller import process
from endpoints_app.controller.placement import (
    Capacity,
    capacity,
    check_capacity,
    check_capacity_for,
    check_quota,
    cores_in_use,
    quota_limit,
    reserved_instances,
)
from endpoints_app.errors import Conflict, InvalidInput, QuotaExceeded
from endpoints_app.models import (
    Compute,
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
from endpoints_app.services.computes import check_same_compute, resolve_compute
from endpoints_app.services.environments import resolve_environment
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
    MAX_INSTANCES,
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


def check_resources(workspace: Workspace, instance_type: InstanceType, count: int, reserved: int | None = None,
                    compute: Compute | None = None) -> None:
    """Refuse (QuotaExceeded) what the workspace's quota or the nodes cannot hold: `count` new instances,
    reserving `reserved` (an autoscaled deployment's maximum) against the quota. The quota holds on every
    compute; the studio's own node capacity only on `local` (a Ray cluster's capacity is Ray's to find)."""
    check_quota(workspace, instance_type, count if reserved is None else reserved)
    if compute is None or compute.type == Compute.Type.LOCAL:
        check_capacity(instance_type, count)


def check_deployment_plan(workspace: Workspace, items: list) -> dict:
    """Check, together and before any is made, every deployment a plan creates or updates (`studio
    apply`): instance types exist, and the workspace's quota and the nodes' capacity hold all of them at
    once. QuotaExceeded / InvalidInput name the deployment; nothing is written."""
    if not isinstance(items, list):
        raise InvalidInput("deployments must be a list.", field="deployments")
    quota_asks: dict[str, int] = {}
    family_types: dict[str, InstanceType] = {}
    capacity_asks: list[tuple[InstanceType, int]] = []
    replaced: list[Deployment] = []
    labels: list[str] = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise InvalidInput("Each deployment must be an object.", field=f"deployments[{index}]")
        kind = item.get("kind") or "online"
        if kind not in ("online", "batch"):
            raise InvalidInput("kind must be online or batch.", field=f"deployments[{index}].kind")
        label = f"{kind} deployment {item.get('endpoint_name')}/{item.get('name')}"
        existing = (Deployment.objects.filter(endpoint__workspace=workspace, endpoint__kind=kind,
                                              endpoint__name=item.get("endpoint_name"), name=item.get("name"))
                    .exclude(provisioning_state=ProvisioningState.DELETING).select_related("instance_type").first())
        try:
            instance_type = (resolve_instance_type(item["instance_type"]) if item.get("instance_type")
                             else existing.instance_type if existing else resolve_instance_type(None))
            scale = (parse_scale_settings(item["scale_settings"]) if "scale_settings" in item
                     else existing.scale_settings if existing else {"type": "default"})
            if kind == "batch":
                count = parse_int(item.get("instance_count", existing.instance_count if existing else 1),
                                  "instance_count", 1, MAX_INSTANCES)
            else:
                count = parse_instance_count(item, scale, existing.instance_count if existing else None)
            compute = resolve_compute(item["compute"]) if item.get("compute") else (
                existing.compute if existing else None)
        except InvalidInput as exc:
            raise InvalidInput(f"{label}: {exc.message}", field=f"deployments[{index}].{exc.field}") from None
        planned = Deployment(instance_type=instance_type, instance_count=count, scale_settings=scale)
        if existing is not None:
            replaced.append(existing)
        quota_asks[instance_type.family] = quota_asks.get(instance_type.family, 0) + (
            instance_type.cores * (count if kind == "batch" else reserved_instances(planned)))
        family_types.setdefault(instance_type.family, instance_type)
        if kind == "online" and (compute is None or compute.type == Compute.Type.LOCAL):
            capacity_asks.append((instance_type, count))  # a Ray cluster's capacity is Ray's to find
        labels.append(label)
    excluded = {d.pk for d in replaced}
    for family, asked in quota_asks.items():
        limit = quota_limit(workspace, family)
        used = sum(d.instance_type.cores * reserved_instances(d) for d in
                   Deployment.objects.filter(endpoint__workspace=workspace, instance_type__family=family)
                   .exclude(provisioning_state=ProvisioningState.DELETING).exclude(pk__in=excluded)
                   .select_related("instance_type"))
        if used + asked > limit:
            raise QuotaExceeded(
                f"Quota exceeded for {family} cores in workspace '{workspace.name}': the quota is {limit} cores, "
                f"{used} in use, and the plan's deployments ask for {asked}; nothing was changed.",
                field="instance_count")
    try:
        check_capacity_for(capacity_asks, replaced)
    except QuotaExceeded as exc:
        raise QuotaExceeded(f"{exc.message} Nothing was changed.", field=exc.field) from None
    return {"ok": True, "checked": labels}


def node_capacity() -> Capacity:
    """What the live nodes offer and deployments reserve, as the capacity check counts it (shared by every
    workspace; shown beside the quota)."""
    return capacity()


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
    compute = resolve_compute(spec.get("compute"))
    scale = parse_scale_settings(spec.get("scale_settings"))
    count = parse_instance_count(spec, scale)
    deployment = Deployment(
        endpoint=endpoint,
        name=name,
        model=model,
        compute=compute,
        instance_type=instance_type,
        instance_count=count,
        code_configuration=parse_code_configuration(spec.get("code_configuration"), endpoint.workspace),
        environment_variables=parse_environment_variables(spec.get("environment_variables")),
        scale_settings=scale,
        request_settings=parse_request_settings(spec.get("request_settings"), model=model),
        liveness_probe=parse_probe(spec.get("liveness_probe"), "liveness_probe"),
        readiness_probe=parse_probe(spec.get("readiness_probe"), "readiness_probe"),
        environment=resolve_environment(actor, endpoint.workspace, spec.get("environment")),
        provisioning_state=ProvisioningState.CREATING,
    )
    check_resources(endpoint.workspace, instance_type, count, reserved_instances(deployment), compute)
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
        model=model.asset_id, instance_type=instance_type.name, instance_count=count, compute=compute.name,
    )
    RouteVersion.bump()
    enqueue_provision(deployment.pk)
    return deployment


def lock_deployment(deployment: Deployment) -> Deployment:
    """The deployment's row, locked for an update; Conflict when it is gone or being deleted."""
    locked = (
        Deployment.objects.select_for_update(of=("self",))
        .select_related("endpoint", "endpoint__workspace", "instance_type", "model", "compute")
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
    check_same_compute(deployment, changes)
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
    if "environment" in changes:
        env = resolve_environment(actor, endpoint.workspace, changes["environment"])
        if (env.pk if env else None) != deployment.environment_id:
            deployment.environment = env
            changed.append("environment")
            new_process = True
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
    if deployment.compute.type != deployment.compute.Type.LOCAL:
        pass  # a Ray cluster's capacity is Ray's to find
    elif "instance_type" in changed:
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


def delete_refusal(endpoint: Endpoint, deployment: Deployment) -> tuple[str, str] | None:
    """(field, why) a deployment may not be deleted now, or None: the rule the UI, the API and the CLI
    share. A deployment taking live or mirror traffic keeps it until the traffic is moved or set to 0."""
    share = int((endpoint.traffic or {}).get(deployment.name, 0))
    if share > 0:
        others = endpoint.deployments.exclude(pk=deployment.pk).exclude(
            provisioning_state=ProvisioningState.DELETING).exists()
        way_out = ("set its traffic to 0 first, moving it to another deployment." if others else
                   "it is the endpoint's only deployment: delete the endpoint instead, or add another "
                   "deployment and move the traffic to it first.")
        return "traffic", (f"Deployment '{deployment.name}' takes {share}% of live traffic on endpoint "
                           f"'{endpoint.name}'; {way_out}")
    mirror = int((endpoint.mirror_traffic or {}).get(deployment.name, 0))
    if mirror > 0:
        return "mirror_traffic", (f"Deployment '{deployment.name}' takes {mirror}% mirror traffic on endpoint "
                                  f"'{endpoint.name}'; set its mirror traffic to 0 first.")
    return None


@transaction.atomic
def do_delete_deployment(actor: Actor, deployment: Deployment) -> None:
    """Refuse while it takes live or mirror traffic (deleting it would leave the endpoint answering
    NoTraffic); otherwise drain and stop it."""
    # Locks in one order everywhere (endpoint, deployment, instances), so writers never deadlock.
    endpoint = Endpoint.objects.select_for_update().filter(pk=deployment.endpoint_id).first()
    deployment = Deployment.objects.select_for_update(of=("self",)).filter(pk=deployment.pk).first()
    if endpoint is None or deployment is None:
        return
    refusal = delete_refusal(endpoint, deployment)
    if refusal is not None:
        raise Conflict(refusal[1], field=refusal[0])
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


TRACEBACK = "Traceback (most recent call last)"
CHAINED = ("During handling of the above exception", "The above exception was the direct cause")


def log_entries(lines: list[str]) -> list[list[str]]:
    """Lines grouped into entries that must read top-down even when entries are shown newest first: a
    Python traceback (from "Traceback" to its exception line, chained ones included) and any line with
    its indented continuation lines."""
    entries: list[list[str]] = []
    state = ""  # "traceback" inside one, "after" right after its exception line
    for line in lines:
        indented = line[:1] in (" ", "\t")
        starts = line.startswith(TRACEBACK)
        if state == "traceback":
            entries[-1].append(line)
            if not indented and not starts:
                state = "after"  # the exception line ends it
            continue
        if state == "after" and (not line.strip() or line.startswith(CHAINED) or starts):
            entries[-1].append(line)
            state = "traceback" if starts else "after"
            continue
        state = "traceback" if starts else ""
        if indented and entries and not starts:
            entries[-1].append(line)
        else:
            entries.append([line])
    return entries


def read_deployment_logs(
    deployment: Deployment, lines: int = 100, instance: str | None = None, newest_first: bool = False
) -> str:
    """The last `lines` lines of each instance's log (or of one instance), as plain text, probe lines left
    out (counted in one line instead); newest line first when asked, as the Logs tab shows them."""
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
            kept = [line for entry in reversed(log_entries(kept)) for line in entry]
        if len(instances) > 1 or not instance:
            parts.append(f"==> instance {inst.name} on {inst.node.name} ({inst.state}) <==\n")
        if probes:
            parts.append(f"({probes} readiness-probe lines hidden)\n")
        parts.extend(kept or ["(no output yet)\n"])
    return "".join(parts)
