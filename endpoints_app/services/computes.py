"""Computes: where deployments run. IT-managed (staff only), visible to every workspace.

A compute spec follows the cloud CLI's compute YAML where it can: `name`, `type: ray` (the built-in
`local` is the only local compute), `address` (`host:port` of a Ray cluster head's GCS, what
`ray start --address=...` takes; omitted: the studio starts a head on its own machine), `description`.
Other cloud compute types (kubernetes, amlcompute, ...) are refused: the studio scales out on Ray.
Deployments name a compute with `compute: <name>` or `compute: azureml:<name>` (resolve_compute)."""

from __future__ import annotations

import re
from typing import Any

from django.core.exceptions import PermissionDenied
from django.db import transaction

from endpoints_app.errors import Conflict, InvalidInput
from endpoints_app.models import LOCAL_COMPUTE, Compute, Deployment
from endpoints_app.models.computes import COMPUTE_NAME
from endpoints_app.services.audit import Actor, record
from endpoints_app.services.specs import parse_mapping, parse_name

SPEC_FIELDS = {"name", "type", "address", "description", "$schema"}
LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
HOST = re.compile(rf"^{LABEL}(?:\.{LABEL})*$")
SCALE_OUT = ("the studio scales out on Ray: create a compute with type: ray and the address of a Ray cluster's "
             "head (Ray runs on Kubernetes too, with KubeRay)")


def check_it(actor: Actor) -> None:
    """Computes are IT's: a staff user (or the system) may write them; anyone else gets 403."""
    user = actor.user
    if user is None:
        return
    if not getattr(user, "is_authenticated", False) or not user.is_staff:
        raise PermissionDenied("Computes are managed by IT: this needs a staff account of the studio.")


def parse_type(value: Any) -> str:
    if value == Compute.Type.RAY:
        return value
    if value == Compute.Type.LOCAL:
        raise InvalidInput(f"There is one local compute, the built-in '{LOCAL_COMPUTE}'; a new compute has "
                           f"type: ray ({SCALE_OUT}).", field="type")
    if value in (None, ""):
        raise InvalidInput(f"type is required: ray ({SCALE_OUT}).", field="type")
    raise InvalidInput(f"type {value!r} is not supported: {SCALE_OUT}.", field="type")


def parse_address(value: Any) -> str:
    """`host:port` (a DNS name, an IPv4 address or a bracketed IPv6 one; port 1-65535), or '' for a head the
    studio starts on its own machine."""
    if value in (None, ""):
        return ""
    if not isinstance(value, str):
        raise InvalidInput("address must be a string, host:port of a Ray cluster's head.", field="address")
    text = value.strip()
    if "://" in text:
        raise InvalidInput(f"address {value!r}: give host:port of the Ray head's GCS (what `ray start --address` "
                           "takes, e.g. 10.0.0.5:6379), without a scheme.", field="address")
    host, sep, port = text.rpartition(":")
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    valid_host = bool(HOST.match(bare)) or (host.startswith("[") and bool(re.fullmatch(r"[0-9A-Fa-f:.]+", bare)))
    if not sep or not valid_host or len(bare) > 253:
        raise InvalidInput(f"address {value!r} is not host:port (e.g. 10.0.0.5:6379 or ray-head.example.com:6379).",
                           field="address")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise InvalidInput(f"address {value!r}: the port must be a number from 1 to 65535.", field="address")
    return f"{host}:{int(port)}"


def _description(spec: dict) -> str:
    value = spec.get("description") or ""
    if not isinstance(value, str) or len(value) > 2000:
        raise InvalidInput("description must be a string of at most 2000 characters.", field="description")
    return value


def parse_spec(spec: Any) -> tuple[str, str, str, str]:
    """(name, type, address, description) of a compute spec, or InvalidInput naming the field."""
    spec = parse_mapping(spec, "compute")
    unknown = sorted(str(k) for k in set(spec) - SPEC_FIELDS)
    if unknown:
        raise InvalidInput(f"Unknown compute field {unknown[0]!r}; a compute has name, type, address and "
                           "description.", field=unknown[0])
    name = parse_name(spec.get("name"), COMPUTE_NAME, "name", "Compute")
    kind = parse_type(spec.get("type"))
    return name, kind, parse_address(spec.get("address")), _description(spec)


@transaction.atomic
def do_create_compute(actor: Actor, spec: Any) -> Compute:
    check_it(actor)
    name, kind, address, description = parse_spec(spec)
    check_new_compute(name, address)
    compute = Compute.objects.create(
        name=name, type=kind, address=address, description=description, state=Compute.State.STARTING,
        created_by=actor.user if getattr(actor.user, "is_authenticated", False) else None,
    )
    record(actor, "compute.create", compute, None, type=kind, address=address or "(studio-managed head)")
    return compute


def check_new_compute(name: str, address: str) -> None:
    """Conflict when the name is taken (or `local`), or when a second compute would be the studio's own head."""
    if name == LOCAL_COMPUTE:
        raise Conflict(f"'{LOCAL_COMPUTE}' is the studio's built-in compute; pick another name.", field="name")
    if Compute.objects.filter(name=name).exists():
        raise Conflict(f"A compute named '{name}' exists.", field="name")
    taken = Compute.objects.filter(type=Compute.Type.RAY, address="").first() if not address else None
    if taken is not None:
        raise Conflict(f"Compute '{taken.name}' is the Ray head the studio starts on its own machine; a second one "
                       "would be the same cluster. Give this compute the address of another Ray head.",
                       field="address")


def _lock(compute: Compute) -> Compute:
    locked = Compute.objects.select_for_update().filter(pk=compute.pk).first()
    if locked is None:
        raise Conflict(f"Compute '{compute.name}' no longer exists.", field="name")
    return locked


@transaction.atomic
def do_update_compute(actor: Actor, compute: Compute, changes: Any) -> Compute:
    """Change a Ray compute's address or description; name and type stay; `local` never changes."""
    check_it(actor)
    changes = parse_mapping(changes, "compute")
    compute = _lock(compute)
    if compute.is_builtin:
        raise Conflict(f"'{LOCAL_COMPUTE}' is the studio's built-in compute; it cannot be changed.", field="name")
    unknown = sorted(str(k) for k in set(changes) - SPEC_FIELDS)
    if unknown:
        raise InvalidInput(f"Unknown compute field {unknown[0]!r}.", field=unknown[0])
    if changes.get("name") not in (None, compute.name):
        raise InvalidInput("A compute cannot be renamed.", field="name")
    if changes.get("type") not in (None, compute.type):
        parse_type(changes["type"])  # names Ray for the types the studio does not run
        raise InvalidInput("A compute's type cannot be changed.", field="type")
    changed = {}
    if "address" in changes:
        address = parse_address(changes["address"])
        if address != compute.address:
            managed = Compute.objects.filter(type=Compute.Type.RAY, address="").exclude(pk=compute.pk)
            if not address and managed.exists():
                raise Conflict("Another compute is the Ray head the studio starts on its own machine.", field="address")
            changed["address"] = {"old": compute.address, "new": address}
            compute.address = address
            compute.state, compute.state_detail, compute.state_checked_at = Compute.State.STARTING, "", None
    if "description" in changes:
        description = _description(changes)
        if description != compute.description:
            changed["description"] = {"old": compute.description[:100], "new": description[:100]}
            compute.description = description
    if changed:
        compute.save()
        record(actor, "compute.update", compute, None, changes=changed)
    return compute


@transaction.atomic
def do_delete_compute(actor: Actor, compute: Compute) -> None:
    """Refused for `local` and while deployments (live or being deleted) use it. Deployments deleted
    long ago keep their meters; they are moved to `local` so the row can go."""
    check_it(actor)
    compute = _lock(compute)
    if compute.is_builtin:
        raise Conflict(f"'{LOCAL_COMPUTE}' is the studio's built-in compute; it cannot be deleted.", field="name")
    using = Deployment.objects.filter(compute=compute).select_related("endpoint")
    names = [f"{d.endpoint.name}/{d.name}" for d in using.order_by("endpoint__name", "name")[:5]]
    if names:
        more = using.count() - len(names)
        raise Conflict(f"Compute '{compute.name}' runs deployments ({', '.join(names)}"
                       f"{f' and {more} more' if more > 0 else ''}); delete them or move them first.", field="name")
    Deployment.all_objects.filter(compute=compute, deleted_at__isnull=False).update(compute=Compute.local())
    record(actor, "compute.delete", compute, None, type=compute.type, address=compute.address)
    compute.delete()


def find_compute(name: str) -> Compute | None:
    if name == LOCAL_COMPUTE:
        return Compute.local()
    return Compute.objects.filter(name=name).first()


def computes() -> list[Compute]:
    Compute.local()
    return list(Compute.objects.all())


def resolve_compute(value: Any, field: str = "compute") -> Compute:
    """A deployment's compute from `<name>` or `azureml:<name>`; None or '' is `local`."""
    if value in (None, ""):
        return Compute.local()
    if not isinstance(value, str):
        raise InvalidInput(f"{field} must be a compute's name (or azureml:<name>).", field=field)
    name = value.strip().removeprefix("azureml:")
    found = find_compute(name)
    if found is None:
        known = ", ".join(Compute.objects.values_list("name", flat=True))
        raise InvalidInput(f"No compute {value!r}; the computes are: {known}.", field=field)
    if found.type == Compute.Type.RAY and not ray_backend_available():
        raise InvalidInput(f"Compute '{found.name}' is a Ray cluster, and this studio has no Ray backend "
                           "installed to run deployments on it yet; use compute: local.", field=field)
    return found


def check_same_compute(deployment: Deployment, changes: dict) -> None:
    """An update may repeat a deployment's compute (a whole spec applied again) but not change it: its
    instances run there. A deployment on another compute is a new deployment (then move the traffic)."""
    if changes.get("compute") in (None, ""):
        return
    wanted = str(changes["compute"]).strip().removeprefix("azureml:")
    if wanted != deployment.compute.name:
        raise InvalidInput(f"Deployment '{deployment.name}' runs on compute '{deployment.compute.name}'; a "
                           "deployment's compute cannot be changed. Create a deployment on the other compute and "
                           "move the traffic to it.", field="compute")


def ray_backend_available() -> bool:
    """Deployments can run on Ray computes: Ray is installed and the controller has its Ray backend."""
    import importlib.util

    return (importlib.util.find_spec("ray") is not None
            and importlib.util.find_spec("endpoints_app.controller.ray_backend") is not None)


def deployable_computes() -> list[Compute]:
    """The computes a new deployment may choose: `local` always, Ray computes when the backend exists."""
    rows = computes()
    return rows if ray_backend_available() else [c for c in rows if c.type == Compute.Type.LOCAL]
