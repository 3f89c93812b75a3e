from endpoints_app.models.batch import (
    BatchJob,
    DataAsset,
    JobStatus,
    MiniBatch,
    MiniBatchStatus,
    datastore_root,
)
from endpoints_app.models.catalog import CatalogModel, InstanceType
from endpoints_app.models.computes import LOCAL_COMPUTE, Compute
from endpoints_app.models.datastores import BUILTIN_DATASTORE, AllowedFolder, Datastore
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
from endpoints_app.models.environments import BuildState, Environment, EnvironmentBuild, environments_root
from endpoints_app.models.identity import GroupRoleMapping, OidcIdentity, ServicePrincipal
from endpoints_app.models.serverless import MarketplaceSubscription, ServerlessRateLimit
from endpoints_app.models.tokens import ApiToken
from endpoints_app.models.usage import (
    InstanceSample,
    PriceChange,
    RollupCursor,
    UsageJournalSegment,
    UsageMinute,
    UsageRollup,
    WorkspaceCost,
)
from endpoints_app.models.workspaces import AuditLog, Membership, QuotaLimit, Role, Workspace

__all__ = [
    "AllowedFolder",
    "BUILTIN_DATASTORE",
    "Datastore",
    "ApiToken",
    "BuildState",
    "Environment",
    "EnvironmentBuild",
    "environments_root",
    "AuditLog",
    "BatchJob",
    "DataAsset",
    "JobStatus",
    "MiniBatch",
    "MiniBatchStatus",
    "datastore_root",
    "CatalogModel",
    "Compute",
    "LOCAL_COMPUTE",
    "Deployment",
    "Endpoint",
    "GatewayWorker",
    "GroupRoleMapping",
    "OidcIdentity",
    "ServicePrincipal",
    "Instance",
    "MarketplaceSubscription",
    "ServerlessRateLimit",
    "InstanceState",
    "InstanceType",
    "Membership",
    "MirrorComparison",
    "Node",
    "ProvisioningState",
    "QuotaLimit",
    "Role",
    "RouteVersion",
    "UsageJournalSegment",
    "UsageMinute",
    "UsageRollup",
    "RollupCursor",
    "PriceChange",
    "InstanceSample",
    "WorkspaceCost",
    "Workspace",
]
