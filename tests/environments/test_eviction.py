"""Unused builds go, least recently used first, once built venvs pass the cache size; a build that a
deployment or its model names stays, whatever its age."""

from datetime import timedelta

import pytest
from django.utils import timezone

from endpoints_app.models import BuildState, CatalogModel, Deployment, Endpoint, Environment, EnvironmentBuild
from endpoints_app.tasks import evict_unused

pytestmark = pytest.mark.django_db


def _build(key: str, age_minutes: int, size: int) -> EnvironmentBuild:
    build = EnvironmentBuild.objects.create(key=key * 8, python_version="3.11", state=BuildState.SUCCEEDED,
                                            size_bytes=size,
                                            last_used_at=timezone.now() - timedelta(minutes=age_minutes))
    (build.venv / "bin").mkdir(parents=True, exist_ok=True)
    (build.venv / "bin" / "python").write_text("")
    (build.folder / "venv.tar").write_bytes(b"packed for Ray nodes")
    return build


def test_it_evicts_the_least_recently_used_unused_builds_and_never_one_in_use(workspace, instance_types):
    oldest_in_use = _build("a" * 8, 300, 400)
    old = _build("b" * 8, 200, 400)
    recent = _build("c" * 8, 10, 400)
    env = Environment.objects.create(workspace=workspace, name="used", version="1", build=oldest_in_use)
    model = CatalogModel.objects.create(name="m", task="custom", format="custom", license="MIT", workspace=workspace,
                                        registry=workspace.name)
    endpoint = Endpoint.objects.create(workspace=workspace, name="ep")
    Deployment.objects.create(endpoint=endpoint, name="blue", model=model, environment=env,
                              instance_type=instance_types_first())

    removed = evict_unused(limit_bytes=900)

    assert removed == [old.key]
    for build, state in ((oldest_in_use, BuildState.SUCCEEDED), (old, BuildState.NOT_STARTED),
                         (recent, BuildState.SUCCEEDED)):
        build.refresh_from_db()
        assert build.state == state
    assert oldest_in_use.venv.exists() and recent.venv.exists() and not old.venv.exists()
    # What Ray nodes fetch of an evicted build goes with it.
    assert (recent.folder / "venv.tar").exists() and not (old.folder / "venv.tar").exists()
    # Within the limit, nothing goes.
    assert evict_unused(limit_bytes=10_000) == []


def instance_types_first():
    from endpoints_app.models import InstanceType

    return InstanceType.objects.first()
