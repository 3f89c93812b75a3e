"""`auth_mode: aad_token` endpoints on the real gateway, with tokens from the real OpenID provider:
who may invoke (members with Contributor or Owner, granted service principals), and a 401 or 403
naming the reason for everyone else; no token text in the gateway's log."""

import time

import pytest
import requests

from endpoints_app.models import AuditLog, Membership, OidcIdentity, Role, RouteVersion
from endpoints_app.services.audit import SYSTEM
from endpoints_app.services.identity import do_grant_service_principal, do_revoke_service_principal
from tests.gateway.conftest import auth

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

SETTINGS = {"max_concurrent_requests_per_instance": 4}
BODY = {"data": [1.5]}


def link(user, provider, subject: str) -> None:
    """As the first portal sign-in does: the provider account `subject` is this studio user."""
    OidcIdentity.objects.create(user=user, issuer=provider.issuer, subject=subject)


def answer(url: str, token: str | None = None, headers: dict | None = None) -> tuple[int, str, str]:
    response = requests.post(url, json=BODY, headers=headers if headers is not None else auth(token), timeout=10)
    error = response.json().get("error", {}) if response.status_code >= 400 else {}
    return response.status_code, error.get("code", ""), error.get("message", "")


def test_aad_token_endpoint_admits_contributors_and_granted_principals_only(
        procs, make_endpoint, identity_provider, workspace, contributor, reader, outsider, owner):
    port, _ = procs.upstream()
    make_endpoint("by-identity", {"blue": ([port], 100, SETTINGS)}, auth_mode="aad_token")
    _, keyed_creds = make_endpoint("by-key", {"blue": ([port], 100, SETTINGS)})
    link(contributor, identity_provider, "alice")
    link(reader, identity_provider, "bob")
    link(outsider, identity_provider, "carol")
    do_grant_service_principal(SYSTEM, workspace, "ci-pipeline", "Contributor")
    url, gateway = procs.gateway(**identity_provider.env())
    score = f"{url}/inference/by-identity/score"
    now = int(time.time())
    alice, bob, carol = (identity_provider.user_tokens(u)["access_token"] for u in ("alice", "bob", "carol"))
    robot, stranger = identity_provider.client_token("ci-pipeline"), identity_provider.client_token("other-robot")
    tampered = robot[:-6] + ("AAAAAA" if not robot.endswith("AAAAAA") else "BBBBBB")
    presented = [alice, bob, carol, robot, stranger, tampered]

    assert answer(score, alice)[0] == 200
    assert answer(score, alice)[0] == 200  # the second call takes the cached validation
    assert answer(score, robot)[0] == 200
    assert answer(score, bob)[:2] == (403, "RoleTooLow")
    assert "Reader" in answer(score, bob)[2]
    assert answer(score, carol)[:2] == (403, "NotAMember")
    assert answer(score, stranger)[:2] == (403, "NotAMember")
    for token, code in [
        (identity_provider.sign(exp=now - 10), "TokenExpired"),
        (identity_provider.sign(nbf=now + 600), "TokenNotYetValid"),
        (identity_provider.sign(aud="api://another-app"), "InvalidAudience"),
        (identity_provider.sign(iss="https://login.example.com/other"), "InvalidIssuer"),
        (tampered, "InvalidSignature"),
    ]:
        presented.append(token)
        status, got, message = answer(score, token)
        assert (status, got) == (401, code), message
    # Identity tokens only: the endpoint's keys, or none, get 401; a key endpoint is as before.
    assert answer(score, headers={})[:2] == (401, "Unauthorized")
    assert answer(score, keyed_creds["primary"])[0] == 401
    assert answer(f"{url}/inference/by-key/score", keyed_creds["primary"])[0] == 200
    assert answer(f"{url}/inference/by-key/score", alice)[0] == 401

    # A role taken away applies to a token already validated and cached.
    do_revoke_service_principal(SYSTEM, workspace, "ci-pipeline")
    Membership.objects.filter(user=contributor).update(role=Role.READER)
    RouteVersion.bump()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and (answer(score, robot)[0], answer(score, alice)[0]) != (403, 403):
        time.sleep(0.2)
    assert (answer(score, robot)[:2], answer(score, alice)[:2]) == ((403, "NotAMember"), (403, "RoleTooLow"))

    # Denied calls of known identities are audited with issuer and subject (written at the next flush).
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not AuditLog.objects.filter(details__subject="bob").exists():
        time.sleep(0.2)
    denied = AuditLog.objects.filter(action="endpoint.invoke.denied", details__subject="bob").first()
    assert denied is not None and denied.details["issuer"] == identity_provider.issuer
    assert denied.details["code"] == "RoleTooLow" and denied.workspace == workspace

    procs.stop(gateway)
    log = gateway.log_file.name
    text = open(log).read()
    for token in presented:
        assert token not in text and token.split(".")[2] not in text


def test_a_token_signed_with_a_rotated_key_is_taken_at_once(procs, make_endpoint, identity_provider, workspace):
    port, _ = procs.upstream()
    make_endpoint("rotated", {"blue": ([port], 100, SETTINGS)}, auth_mode="aad_token")
    do_grant_service_principal(SYSTEM, workspace, "ci-pipeline", "Owner")
    url, _ = procs.gateway(**identity_provider.env())
    score = f"{url}/inference/rotated/score"
    assert answer(score, identity_provider.client_token())[0] == 200  # the provider's keys are now cached

    identity_provider.rotate()

    assert answer(score, identity_provider.client_token())[0] == 200
