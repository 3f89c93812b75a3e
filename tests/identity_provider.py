"""The tests' OpenID provider: the npm package `oidc-provider` (installed once by scripts/install.sh
into ~/.cache/studio/npm/<hash>) run by node with tests/identity/provider/server.mjs, on a free port
of STUDIO_TEST_IDP_PORT_MIN..MAX. Session-scoped: one provider serves every identity test.

Its clients, users (with groups) and service principals are in server.mjs. Tokens come from the
provider itself (client credentials; the authorization code flow through its own login page);
`sign()` makes tokens with the provider's own signing key for the claims a provider never issues on
request (a future nbf, another issuer), so the studio's checks of those are tested on real signatures."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import parse_qs, urljoin, urlparse

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa

ROOT = Path(__file__).resolve().parents[1]
PROVIDER = ROOT / "tests" / "identity" / "provider"
AUDIENCE = "api://studio"
PORTAL_CLIENT = ("studio-portal", "portal-secret-for-tests-only-0123456789")
CLIENTS = {
    "ci-pipeline": "ci-pipeline-secret-0123456789abcdef",
    "other-robot": "other-robot-secret-0123456789abcdef",
    "short-lived": "short-lived-secret-0123456789abcdef",
}


def node_modules() -> Path:
    """Where scripts/install.sh put oidc-provider (the same hash of the package files)."""
    digest = hashlib.sha256((PROVIDER / "package.json").read_bytes() + (PROVIDER / "package-lock.json").read_bytes())
    base = Path(os.environ.get("STUDIO_NPM_CACHE") or Path.home() / ".cache" / "studio" / "npm")
    folder = base / digest.hexdigest()[:16]
    if not (folder / ".installed").exists():
        pytest.fail(f"the test OpenID provider is not installed in {folder}: run `make install-test` (needs npm)")
    return folder / "node_modules"


def _free_port() -> int:
    low = int(os.environ.get("STUDIO_TEST_IDP_PORT_MIN", "34900"))
    high = int(os.environ.get("STUDIO_TEST_IDP_PORT_MAX", "34998"))
    for port in range(low, high + 1):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port for the test OpenID provider in {low}-{high}")


def _new_key(kid: str) -> dict:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key))
    jwk.pop("key_ops", None)  # PyJWT marks a private JWK "sign"; published as is, verifiers would refuse it
    return {**jwk, "kid": kid, "alg": "RS256", "use": "sig"}


class IdentityProvider:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = _free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.keys = [_new_key("key-1")]
        self.proc: subprocess.Popen | None = None
        self.log_path = workdir / "oidc-provider.log"

    # ------------------------------------------------------------------ process

    def start(self) -> None:
        jwks = self.workdir / "jwks.json"
        jwks.write_text(json.dumps({"keys": self.keys}))
        env = {**os.environ, "OIDC_PROVIDER_MODULES": str(node_modules()), "OIDC_PORT": str(self.port),
               "OIDC_JWKS": str(jwks), "OIDC_AUDIENCE": AUDIENCE}
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(["node", str(PROVIDER / "server.mjs")], env=env, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.proc.log_file = log
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"oidc-provider exited: {self.log_path.read_text()[-2000:]}")
            try:
                if requests.get(f"{self.issuer}/.well-known/openid-configuration", timeout=1).ok:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"oidc-provider did not answer on {self.issuer}: {self.log_path.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=10)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc.log_file.close()
        self.proc = None

    def rotate(self) -> str:
        """The provider's keys rotate: a new key signs from now on (the old one is still published);
        returns the new key id."""
        kid = f"key-{len(self.keys) + 1}"
        self.keys.insert(0, _new_key(kid))
        self.stop()
        self.start()
        return kid

    # ------------------------------------------------------------------ studio configuration

    def env(self, **extra: str) -> dict[str, str]:
        """STUDIO_OIDC_* for a studio process that trusts this provider."""
        return {
            "STUDIO_OIDC_ISSUER": self.issuer, "STUDIO_OIDC_CLIENT_ID": PORTAL_CLIENT[0],
            "STUDIO_OIDC_CLIENT_SECRET": PORTAL_CLIENT[1], "STUDIO_OIDC_AUDIENCE": AUDIENCE,
            "STUDIO_OIDC_SCOPES": "openid profile email groups", "STUDIO_OIDC_NAME": "Test IdP",
            "STUDIO_OIDC_LEEWAY_SECONDS": "0", "STUDIO_OIDC_JWKS_MIN_REFRESH_SECONDS": "0", **extra,
        }

    def configure(self, settings) -> None:
        """The same, on this process's Django settings (pytest-django's `settings` fixture)."""
        for name, value in self.env().items():
            current = getattr(settings, name)
            setattr(settings, name, type(current)(value) if not isinstance(current, str) else value)

    # ------------------------------------------------------------------ tokens

    def client_token(self, client_id: str = "ci-pipeline") -> str:
        """An access token for a service principal (client credentials), from the provider."""
        response = requests.post(f"{self.issuer}/token", data={"grant_type": "client_credentials"},
                                 auth=(client_id, CLIENTS[client_id]), timeout=10)
        response.raise_for_status()
        return response.json()["access_token"]

    def user_tokens(self, login: str) -> dict:
        """{access_token, id_token} for a test user, through the provider's own login and consent pages
        (the authorization code flow, driven over HTTP)."""
        callback = "http://127.0.0.1:9/callback"
        session = requests.Session()
        page = session.get(f"{self.issuer}/auth", params={
            "client_id": PORTAL_CLIENT[0], "response_type": "code", "scope": "openid profile email groups",
            "redirect_uri": callback, "state": "s", "nonce": "n"}, timeout=10)
        for _ in range(4):
            prompt = re.search(r'name="prompt" value="(\w+)"', page.text)
            action = re.search(r'<form[^>]*action="([^"]+)"', page.text)
            assert prompt and action, f"no sign-in form on the provider's page: {page.text[:500]}"
            page = session.post(urljoin(self.issuer, action.group(1)), allow_redirects=False, timeout=10,
                                data={"prompt": prompt.group(1), "login": login, "password": "any"})
            while page.is_redirect and not page.headers["location"].startswith(callback):
                page = session.get(urljoin(self.issuer, page.headers["location"]), allow_redirects=False, timeout=10)
            if page.is_redirect:
                break
        code = parse_qs(urlparse(page.headers["location"]).query)["code"][0]
        response = requests.post(f"{self.issuer}/token", auth=PORTAL_CLIENT, timeout=10, data={
            "grant_type": "authorization_code", "code": code, "redirect_uri": callback})
        response.raise_for_status()
        return response.json()

    def sign(self, **claims) -> str:
        """A token signed with the provider's current key: issuer, audience, a subject and an hour of life
        unless `claims` say otherwise (None drops a claim)."""
        now = int(time.time())
        payload = {"iss": self.issuer, "aud": AUDIENCE, "sub": "ci-pipeline", "client_id": "ci-pipeline",
                   "iat": now, "exp": now + 3600}
        payload.update(claims)
        payload = {k: v for k, v in payload.items() if v is not None}
        key = self.keys[0]
        private = jwt.algorithms.RSAAlgorithm.from_jwk(json.dumps(key))
        return jwt.encode(payload, private, algorithm="RS256", headers={"kid": key["kid"]})


@pytest.fixture(scope="session")
def identity_provider(tmp_path_factory):
    provider = IdentityProvider(tmp_path_factory.mktemp("oidc-provider"))
    provider.start()
    yield provider
    provider.stop()
