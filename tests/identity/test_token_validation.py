"""endpoints_app.oidc against the real provider: each reason a token is refused is named."""

import json
import time

import jwt
import pytest

from endpoints_app import oidc
from tests.identity_provider import AUDIENCE


def validator_for(provider, **overrides) -> oidc.TokenValidator:
    options = {"issuer": provider.issuer, "audience": AUDIENCE, "leeway": 0, "jwks_cache_seconds": 3600,
               "min_refresh_seconds": 0}
    options.update(overrides)
    return oidc.TokenValidator(**options)


def refusal(validator, token) -> str:
    with pytest.raises(oidc.TokenRejected) as caught:
        validator.validate(token)
    assert token not in caught.value.message
    return caught.value.code


def test_it_takes_a_service_principals_token_and_keeps_it_until_expiry(identity_provider):
    validator = validator_for(identity_provider)
    token = identity_provider.client_token("ci-pipeline")

    identity = validator.validate(token)

    assert (identity.issuer, identity.subject, identity.client_id, identity.is_app) == \
        (identity_provider.issuer, "ci-pipeline", "ci-pipeline", True)
    assert validator.cached(token) == identity
    assert identity.expires > time.time() + 500


def test_it_takes_a_persons_token_as_a_person(identity_provider):
    validator = validator_for(identity_provider)
    identity = validator.validate(identity_provider.user_tokens("alice")["access_token"])
    assert (identity.subject, identity.client_id, identity.is_app) == ("alice", "studio-portal", False)


def test_it_names_each_reason_it_refuses_a_token(identity_provider):
    validator = validator_for(identity_provider)
    now = int(time.time())
    good = identity_provider.client_token()
    header, payload, signature = good.split(".")
    tampered = f"{header}.{payload}.{signature[:-4]}{'AAAA' if signature[-4:] != 'AAAA' else 'BBBB'}"

    assert refusal(validator, identity_provider.sign(exp=now - 5)) == "TokenExpired"
    assert refusal(validator, identity_provider.sign(nbf=now + 600)) == "TokenNotYetValid"
    assert refusal(validator, identity_provider.sign(aud="api://someone-else")) == "InvalidAudience"
    assert refusal(validator, identity_provider.sign(iss="https://evil.example.com")) == "InvalidIssuer"
    assert refusal(validator, tampered) == "InvalidSignature"
    assert refusal(validator, identity_provider.sign(sub=None)) == "InvalidToken"
    assert refusal(validator, "studio_not-a-jwt") == "InvalidToken"
    # A token signed with a shared secret is refused whatever it claims (no algorithm confusion).
    hs = jwt.encode({"iss": identity_provider.issuer, "aud": AUDIENCE, "sub": "x", "exp": now + 60}, "k" * 32,
                    algorithm="HS256")
    assert refusal(validator, hs) == "InvalidToken"


def test_an_expired_token_from_the_provider_is_refused(identity_provider):
    validator = validator_for(identity_provider)
    token = identity_provider.client_token("short-lived")  # lives one second
    time.sleep(2.1)
    assert refusal(validator, token) == "TokenExpired"


def test_a_key_id_it_never_saw_fetches_the_keys_again(identity_provider):
    validator = validator_for(identity_provider)
    validator.validate(identity_provider.client_token())  # keys fetched and kept

    new_kid = identity_provider.rotate()
    token = identity_provider.client_token()

    assert jwt.get_unverified_header(token)["kid"] == new_kid
    assert validator.validate(token).subject == "ci-pipeline"
    # A key id the provider does not publish is named as such.
    forged = jwt.encode({"iss": identity_provider.issuer, "aud": AUDIENCE, "sub": "x", "exp": int(time.time()) + 60},
                        jwt.algorithms.RSAAlgorithm.from_jwk(json.dumps(identity_provider.keys[0])),
                        algorithm="RS256", headers={"kid": "made-up"})
    assert refusal(validator, forged) == "UnknownSigningKey"
