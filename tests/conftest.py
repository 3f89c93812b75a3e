"""Shared fixtures: a workspace with an owner, a contributor, a reader and an
outsider, and clients logged in as each (API token and browser session)."""

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone
from rest_framework.test import APIClient

from endpoints_app.catalog.instance_types import seed_instance_types
from endpoints_app.models import ApiToken, Membership, Role, RouteVersion, Workspace
from tests.identity_provider import identity_provider  # noqa: F401  (the tests' OpenID provider, from npm)
from tests.live import live_gateway, live_gateway_workers, live_worker, live_worker_process  # noqa: F401  (real worker and gateway: tests/live.py)

PASSWORD = "correct horse battery staple"


@pytest.fixture(autouse=True)
def empty_cache():
    """Each test starts with an empty cache: a /metrics snapshot or a login-failure count that an
    earlier test left would make a test's outcome depend on the order tests run in."""
    from django.core.cache import cache

    cache.clear()


@pytest.fixture
def instance_types(db):
    seed_instance_types()
    RouteVersion.objects.get_or_create(pk=1)


@pytest.fixture
def workspace(db, instance_types):
    return Workspace.objects.create(name="team", display_name="Team")


def _member(workspace, username: str, role: Role | None):
    user = get_user_model().objects.create_user(username, password=PASSWORD)
    if role is not None:
        Membership.objects.create(workspace=workspace, user=user, role=role)
    return user


@pytest.fixture
def owner(workspace):
    return _member(workspace, "olivia", Role.OWNER)


@pytest.fixture
def contributor(workspace):
    return _member(workspace, "carl", Role.CONTRIBUTOR)


@pytest.fixture
def reader(workspace):
    return _member(workspace, "rita", Role.READER)


@pytest.fixture
def outsider(workspace):
    return _member(workspace, "oscar", None)


def api_client_for(user) -> APIClient:
    client = APIClient()
    # Marked used just now, so last_used (written at most once a minute) adds no query to counts.
    _, token = ApiToken.objects.create(user=user, last_used=timezone.now())
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


@pytest.fixture
def owner_api(owner):
    return api_client_for(owner)


@pytest.fixture
def contributor_api(contributor):
    return api_client_for(contributor)


@pytest.fixture
def reader_api(reader):
    return api_client_for(reader)


@pytest.fixture
def outsider_api(outsider):
    return api_client_for(outsider)


@pytest.fixture
def owner_client(client, owner):
    client.force_login(owner)
    return client
