"""The model server's own packages, pinned to the versions this studio runs: every environment gets them
(so the server behaves the same whatever the user's packages), in the studio and in `studio ... --local`.
Standard library only: the CLI imports it without Django."""

from __future__ import annotations

from importlib import metadata

# The model server's own imports (runtime/server.py).
SERVER_PACKAGES = ("uvicorn", "uvloop", "httptools")


def server_requirements() -> list[str]:
    pins = []
    for name in SERVER_PACKAGES:
        try:
            pins.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return pins
