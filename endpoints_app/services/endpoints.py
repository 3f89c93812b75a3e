"""What every endpoint kind shares: its creation. An endpoint is a name, two keys and a route;
the kinds' own modules (services/online.py, services/batch.py) check what is theirs and call this."""

from __future__ import annotations

from endpoints_app import keys
from endpoints_app.errors import InvalidInput
from endpoints_app.models import Endpoint, ProvisioningState, RouteVersion, Workspace
from endpoints_app.services.audit import Actor, record
from endpoints_app.services.specs import parse_auth_mode, parse_endpoint_name, parse_mapping


def create_endpoint(actor: Actor, workspace: Workspace, kind: str, *, name: str, auth_mode: str = "key",
                    description: str = "", tags: dict | None = None) -> Endpoint:
    """The new endpoint's row, audited; the caller holds the transaction."""
    parse_endpoint_name(name)
    parse_auth_mode(auth_mode)
    if description is not None and not isinstance(description, str):
        raise InvalidInput("description must be a string.", field="description")
    tags = parse_mapping(tags, "tags")
    primary, secondary = keys.new_nonce(), keys.new_nonce()
    endpoint = Endpoint.objects.create(
        workspace=workspace,
        name=name,
        kind=kind,
        auth_mode=auth_mode,
        description=description or "",
        tags=tags,
        traffic={},
        mirror_traffic={},
        # Nothing to provision until a deployment.
        provisioning_state=ProvisioningState.SUCCEEDED,
        primary_key_nonce=primary,
        secondary_key_nonce=secondary,
    )
    record(actor, "endpoint.create", endpoint, workspace, kind=kind, auth_mode=auth_mode)
    RouteVersion.bump()
    return endpoint
