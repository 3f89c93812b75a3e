"""Usage data for tests: endpoints, deployments, instances and minute rows made directly,
the way the controller and the gateway's flush write them."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from endpoints_app.metering.buckets import LATENCY_BUCKETS_MS, bucket_index
from endpoints_app.models import CatalogModel, Deployment, Endpoint, Instance, InstanceType, Node, UsageMinute

T0 = datetime(2026, 10, 5, 0, 0, tzinfo=UTC)


def catalog_model(name: str = "iris-classifier", **prices) -> CatalogModel:
    model, _ = CatalogModel.objects.get_or_create(
        registry="studio", name=name, version=1,
        defaults={"task": "classification", "format": "sklearn", "license": "MIT",
                  "deployment_kinds": ["online", "batch", "serverless"], **prices},
    )
    return model


def endpoint(workspace, name: str = "iris", kind: str = Endpoint.Kind.ONLINE, traffic=None) -> Endpoint:
    return Endpoint.objects.create(workspace=workspace, name=name, kind=kind, traffic=traffic or {},
                                   provisioning_state="Succeeded")


def deployment(ep: Endpoint, name: str = "blue", model: CatalogModel | None = None,
               instance_type: str = "Standard_DS2_v2") -> Deployment:
    return Deployment.objects.create(endpoint=ep, name=name, model=model or catalog_model(),
                                     instance_type=InstanceType.objects.get(name=instance_type),
                                     provisioning_state="Succeeded")


def instance(dep: Deployment, started: datetime, stopped: datetime | None = None, state: str = "Ready") -> Instance:
    node, _ = Node.objects.get_or_create(name="local", defaults={"cores": 8, "memory_gb": Decimal(16), "queue": "q"})
    n = Instance.objects.count()
    return Instance.objects.create(deployment=dep, name=f"{dep.endpoint.name}-{dep.name}-{n}", node=node,
                                   state=state, started_at=started, ready_at=started, stopped_at=stopped)


def histogram(latencies: list[float]) -> list[int]:
    counts = [0] * len(LATENCY_BUCKETS_MS)
    for latency in latencies:
        counts[bucket_index(latency)] += 1
    return counts


def minute_row(ep: Endpoint, dep: str, minute: datetime, ok: int = 0, client_errors: int = 0, server_errors: int = 0,
               latency_ms: float = 10.0, tokens_in: int = 0, tokens_out: int = 0,
               codes: dict[str, int] | None = None) -> UsageMinute:
    """`codes`: requests per status code; by default 200, 400 and 500 for the three classes."""
    requests = ok + client_errors + server_errors
    if codes is None:
        codes = {code: n for code, n in (("200", ok), ("400", client_errors), ("500", server_errors)) if n}
    return UsageMinute.objects.create(
        endpoint=ep, deployment=dep, minute=minute, requests=requests, status_2xx=ok, status_4xx=client_errors,
        status_5xx=server_errors, bytes_in=100 * requests, bytes_out=200 * requests, tokens_in=tokens_in,
        tokens_out=tokens_out, latency_ms_sum=latency_ms * requests,
        latency_histogram=histogram([latency_ms] * requests), status_codes=codes,
    )


def minutes(start: datetime, count: int, step: int = 1) -> list[datetime]:
    return [start + timedelta(minutes=i * step) for i in range(count)]
