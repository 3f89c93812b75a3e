"""Tokens for automation from the company's OpenID provider: the client-credentials grant (RFC 6749
section 4.4) of a service principal, discovered from the issuer's metadata, kept until a minute
before it expires and then fetched again. The studio validates the tokens; this only fetches them."""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

from studio_client.errors import ConfigurationError

REFRESH_MARGIN_SECONDS = 60
TIMEOUT_SECONDS = 15


class ClientCredentials:
    """`provider()` returns a current access token (a callable for `azure_ad_token_provider=` too)."""

    def __init__(self, issuer: str, client_id: str, client_secret: str, scope: str | None = None) -> None:
        if not (issuer and client_id and client_secret):
            raise ConfigurationError("client credentials need an issuer URL, a client id and a client secret")
        self.issuer = issuer.rstrip("/")
        self.client_id, self.client_secret, self.scope = client_id, client_secret, scope
        self._token_endpoint: str | None = None
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = threading.Lock()

    def __call__(self) -> str:
        return self.token()

    def token(self) -> str:
        with self._lock:
            if self._token is None or time.time() > self._expires_at - REFRESH_MARGIN_SECONDS:
                self._fetch()
            return self._token  # type: ignore[return-value]

    def _get_json(self, request: urllib.request.Request | str) -> dict:
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:  # noqa: S310 - http(s) URLs
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:500].decode("utf-8", "replace")
            try:
                body = json.loads(detail)
                detail = f"{body.get('error')}: {body.get('error_description', '')}".strip(": ")
            except ValueError:
                pass
            raise ConfigurationError(f"the identity provider refused: HTTP {exc.code} {detail}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise ConfigurationError(f"the identity provider at {self.issuer} could not be reached: {exc}") from None

    def _fetch(self) -> None:
        if self._token_endpoint is None:
            metadata = self._get_json(f"{self.issuer}/.well-known/openid-configuration")
            self._token_endpoint = metadata.get("token_endpoint")
            if not self._token_endpoint:
                raise ConfigurationError(f"{self.issuer} publishes no token_endpoint")
        form = {"grant_type": "client_credentials"}
        if self.scope:
            form["scope"] = self.scope
        basic = base64.b64encode(
            f"{urllib.parse.quote(self.client_id, safe='')}:{urllib.parse.quote(self.client_secret, safe='')}".encode()
        ).decode()
        request = urllib.request.Request(
            self._token_endpoint, data=urllib.parse.urlencode(form).encode(), method="POST",
            headers={"Authorization": f"Basic {basic}", "Content-Type": "application/x-www-form-urlencoded",
                     "Accept": "application/json"},
        )
        answer = self._get_json(request)
        token = answer.get("access_token")
        if not isinstance(token, str) or not token:
            raise ConfigurationError("the identity provider answered without an access_token")
        self._token = token
        self._expires_at = time.time() + float(answer.get("expires_in") or 300)
