from endpoints_app.models.catalog import CatalogModel, InstanceType
from endpoints_app.models.endpoints import (
    Deployment,
    Endpoint,
    GatewayWorker,
    Instance,
    InstanceState,
    MirrorComparison,
    Node,
    ProvisioningState,
    RouteVersion,
)
from endpoints_app.models.usage import (
    InstanceSample,
    PriceChange,
    RollupCursor,
    UsageMinute,
    UsageRollup,
    WorkspaceCost,
)
from endpoints_app.models.workspaces import AuditLog, Membership, QuotaLimit, Role, Workspace

__all__ = [
    "AuditLog",
    "CatalogModel",
    "Deployment",
    "Endpoint",
    "GatewayWorker",
    "Instance",
    "InstanceState",
    "InstanceType",
    "Membership",
    "MirrorComparison",
    "Node",
    "ProvisioningState",
    "QuotaLimit",
    "Role",
    "RouteVersion",
    "UsageMinute",
    "UsageRollup",
    "RollupCursor",
    "PriceChange",
    "InstanceSample",
    "WorkspaceCost",
    "Workspace",
]
