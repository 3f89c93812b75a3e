"""Where the client finds its URL, token and workspace.

Order: explicit arguments, then STUDIO_URL / STUDIO_TOKEN / STUDIO_WORKSPACE (or a service
principal's STUDIO_ISSUER / STUDIO_CLIENT_ID / STUDIO_CLIENT_SECRET / STUDIO_SCOPE), then the
config file `studio login` writes: $STUDIO_CONFIG, else $XDG_CONFIG_HOME/studio/config.json,
else ~/.config/studio/config.json (mode 0600: it holds a token)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from studio_client.errors import ConfigurationError

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_WORKSPACE = "default"


def config_path() -> Path:
    override = os.environ.get("STUDIO_CONFIG")
    if override:
        return Path(override).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base).expanduser() / "studio" / "config.json"


def read_config(path: Path | None = None) -> dict:
    path = path or config_path()
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigurationError(f"{path} must hold a JSON object")
    return data


def write_config(values: dict, path: Path | None = None) -> Path:
    """Write the config with mode 0600 from the start (never readable by others, even briefly)."""
    path = path or config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(values, fh, indent=2)
            fh.write("\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


class Settings:
    """Where to call and as whom (a plain class: dataclasses cost start-up time)."""

    __slots__ = ("url", "token", "workspace", "credentials")

    def __init__(self, url: str, token: str | None, workspace: str, credentials: dict | None = None) -> None:
        self.url, self.token, self.workspace = url, token, workspace
        # A service principal's {issuer, client_id, client_secret, scope?} when it signs in by itself.
        self.credentials = credentials


def resolve(url: str | None = None, token: str | None = None, workspace: str | None = None) -> Settings:
    file_values: dict | None = None

    def from_file(key: str) -> str | None:
        nonlocal file_values
        if file_values is None:
            file_values = read_config()
        value = file_values.get(key)
        return str(value) if value else None

    token = token or os.environ.get("STUDIO_TOKEN")
    credentials = None
    if not token:
        # A service principal: STUDIO_ISSUER + STUDIO_CLIENT_ID + STUDIO_CLIENT_SECRET, else `studio login --issuer`.
        if os.environ.get("STUDIO_CLIENT_ID"):
            credentials = {"issuer": os.environ.get("STUDIO_ISSUER", ""), "client_id": os.environ["STUDIO_CLIENT_ID"],
                           "client_secret": os.environ.get("STUDIO_CLIENT_SECRET", ""),
                           "scope": os.environ.get("STUDIO_SCOPE") or None}
        else:
            token = from_file("token")
            if not token and from_file("client_id"):
                credentials = {k: from_file(k) for k in ("issuer", "client_id", "client_secret", "scope")}
    return Settings(
        url=url or os.environ.get("STUDIO_URL") or from_file("url") or DEFAULT_URL,
        token=token,
        workspace=workspace or os.environ.get("STUDIO_WORKSPACE") or from_file("workspace") or DEFAULT_WORKSPACE,
        credentials=credentials,
    )
