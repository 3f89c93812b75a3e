"""Keys follow the secret: the gateway accepts each slot's key under SECRET_KEY and every
SECRET_KEY_FALLBACKS entry, so rotating the secret keeps the keys users hold working and
the keys the UI now shows working too; a secret dropped from the fallbacks takes its keys
along. aml_tokens name the endpoint's id and token generation."""

import secrets
import time

import pytest
import requests
from django.conf import settings
from django.core.management import call_command
from django.test import override_settings

from endpoints_app import keys
from endpoints_app.gateway.routes import load_route_table
from endpoints_app.models import Endpoint
from endpoints_app.services.audit import SYSTEM
from endpoints_app.services.keys import do_regenerate_key, get_keys, issue_endpoint_token
from endpoints_app.services.online import do_delete_endpoint
from endpoints_app.services.serverless import do_ensure_inference_keys
from tests.gateway.conftest import auth

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
SETTINGS = {"max_concurrent_requests_per_instance": 4}
BODY = {"data": [1.5]}


def status(url: str, name: str, credential: str) -> int:
    return requests.post(f"{url}/inference/{name}/score", json=BODY, headers=auth(credential), timeout=10).status_code


def test_rotating_the_secret_keeps_shown_keys_working_until_the_old_secret_leaves(procs, make_endpoint):
    old_secret, new_secret, newer_secret = settings.SECRET_KEY, secrets.token_urlsafe(50), secrets.token_urlsafe(50)
    port, _ = procs.upstream()
    endpoint, held = make_endpoint("rotating", {"blue": ([port], 100, SETTINGS)})
    with override_settings(SECRET_KEY=new_secret, SECRET_KEY_FALLBACKS=[old_secret]):
        shown_after_rotation = get_keys(endpoint)
    assert shown_after_rotation["primary_key"] != held["primary"]

    url, gateway = procs.gateway(SECRET_KEY=new_secret, SECRET_KEY_FALLBACKS=old_secret)
    assert status(url, "rotating", held["primary"]) == 200
    assert status(url, "rotating", held["secondary"]) == 200
    assert status(url, "rotating", shown_after_rotation["primary_key"]) == 200
    assert status(url, "rotating", shown_after_rotation["secondary_key"]) == 200
    assert status(url, "rotating", keys.derive_key(endpoint.primary_key_nonce, secrets.token_urlsafe(50))) == 401
    procs.stop(gateway)

    # The first secret leaves the fallbacks: its keys stop, the ones shown since keep working.
    url, _ = procs.gateway(SECRET_KEY=newer_secret, SECRET_KEY_FALLBACKS=new_secret)
    assert status(url, "rotating", held["primary"]) == 401
    assert status(url, "rotating", held["secondary"]) == 401
    assert status(url, "rotating", shown_after_rotation["primary_key"]) == 200


def test_aml_tokens_follow_the_secret_too(procs, make_endpoint):
    old_secret, new_secret = settings.SECRET_KEY, secrets.token_urlsafe(50)
    port, _ = procs.upstream()
    endpoint, _ = make_endpoint("tokened", {"blue": ([port], 100, SETTINGS)}, auth_mode="aml_token")
    token = issue_endpoint_token(SYSTEM, endpoint)["access_token"]

    url, gateway = procs.gateway(SECRET_KEY=new_secret, SECRET_KEY_FALLBACKS=old_secret)
    assert status(url, "tokened", token) == 200
    procs.stop(gateway)
    url, _ = procs.gateway(SECRET_KEY=new_secret)
    assert status(url, "tokened", token) == 401


def test_a_token_of_a_deleted_endpoint_does_not_open_a_new_same_named_one(procs, make_endpoint):
    first, _ = make_endpoint("reborn", {}, auth_mode="aml_token")
    old_token = issue_endpoint_token(SYSTEM, first)["access_token"]
    do_delete_endpoint(SYSTEM, first)
    assert not Endpoint.objects.filter(name="reborn").exists()

    port, _ = procs.upstream()
    second, _ = make_endpoint("reborn", {"blue": ([port], 100, SETTINGS)}, auth_mode="aml_token")
    url, _ = procs.gateway()
    assert status(url, "reborn", old_token) == 401
    assert status(url, "reborn", issue_endpoint_token(SYSTEM, second)["access_token"]) == 200


def test_regenerating_keys_revokes_the_endpoints_tokens(procs, make_endpoint):
    port, _ = procs.upstream()
    endpoint, _ = make_endpoint("regen", {"blue": ([port], 100, SETTINGS)}, auth_mode="aml_token")
    before = issue_endpoint_token(SYSTEM, endpoint)["access_token"]
    url, _ = procs.gateway()
    assert status(url, "regen", before) == 200
    do_regenerate_key(SYSTEM, endpoint, "primary")
    endpoint.refresh_from_db()
    after = issue_endpoint_token(SYSTEM, endpoint)["access_token"]
    deadline = time.monotonic() + 5  # the gateway reloads its route table within about 0.5 s
    while status(url, "regen", before) != 401:
        assert time.monotonic() < deadline, "the old token still works"
        time.sleep(0.1)
    assert status(url, "regen", after) == 200


def test_the_regenerate_command_replaces_every_key(make_endpoint):
    one, held_one = make_endpoint("one", {})
    two, held_two = make_endpoint("two", {})
    call_command("regenerate_endpoint_keys", "--yes", stdout=open("/dev/null", "w"))
    for endpoint, held in ((one, held_one), (two, held_two)):
        endpoint.refresh_from_db()
        now = get_keys(endpoint)
        assert now["primary_key"] != held["primary"] and now["secondary_key"] != held["secondary"]
        assert endpoint.token_generation == 2


def test_unified_inference_keys_follow_the_secret_like_endpoint_keys(workspace):
    old_secret, new_secret = settings.SECRET_KEY, secrets.token_urlsafe(50)
    held = do_ensure_inference_keys(SYSTEM, workspace)
    with override_settings(SECRET_KEY=new_secret, SECRET_KEY_FALLBACKS=[old_secret]):
        shown_after_rotation = do_ensure_inference_keys(SYSTEM, workspace)
        table = load_route_table()
    assert shown_after_rotation["primary_key"] != held["primary_key"]
    for key in (*held.values(), *shown_after_rotation.values()):
        assert table.unified_keys[keys.digest(key)] == workspace.id

    with override_settings(SECRET_KEY=new_secret, SECRET_KEY_FALLBACKS=[]):
        table = load_route_table()
    assert keys.digest(held["primary_key"]) not in table.unified_keys
    assert table.unified_keys[keys.digest(shown_after_rotation["primary_key"])] == workspace.id
