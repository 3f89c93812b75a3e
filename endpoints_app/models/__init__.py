from endpoints_app.models.batch import (
    BatchJob,
    DataAsset,
    JobStatus,
    MiniBatch,
    MiniBatchStatus,
    datastore_root,
)
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
from endpoints_app.models.serverless import MarketplaceSubscription, ServerlessRateLimit, effective_rate_limits
from endpoints_app.models.tokens import ApiToken
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
    "ApiToken",
    "AuditLog",
    "BatchJob",
    "DataAsset",
    "JobStatus",
    "MiniBatch",
    "MiniBatchStatus",
    "datastore_root",
    "CatalogModel",
    "Deployment",
    "Endpoint",
    "GatewayWorker",
    "Instance",
    "MarketplaceSubscription",
    "ServerlessRateLimit",
    "effective_rate_limits",
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
