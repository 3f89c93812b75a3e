"""Typed environment helpers: every setting read from the environment goes
through one of these, and a bad value stops start-up with a clear message."""

import os
from pathlib import Path


class ImproperEnv(Exception):
    pass


def env_str(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return default if value in (None, "") else value


def env_list(name: str) -> list[str]:
    """A comma-separated list; empty items are dropped."""
    return [item.strip() for item in (os.environ.get(name) or "").split(",") if item.strip()]


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value in (None, ""):
        return default
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ImproperEnv(f"{name}={value!r} is not a boolean (use true/false, 1/0, yes/no)")


def env_int(name: str, default: int, minimum: int | None = None, maximum: int | None = None) -> int:
    value = os.environ.get(name)
    if value in (None, ""):
        return default
    try:
        number = int(value)
    except ValueError:
        raise ImproperEnv(f"{name}={value!r} is not an integer") from None
    if minimum is not None and number < minimum:
        raise ImproperEnv(f"{name}={number} is below the minimum {minimum}")
    if maximum is not None and number > maximum:
        raise ImproperEnv(f"{name}={number} is above the maximum {maximum}")
    return number


def env_float(name: str, default: float, minimum: float | None = None, maximum: float | None = None) -> float:
    value = os.environ.get(name)
    if value in (None, ""):
        return default
    try:
        number = float(value)
    except ValueError:
        raise ImproperEnv(f"{name}={value!r} is not a number") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise ImproperEnv(f"{name}={value!r} is not a finite number")
    if minimum is not None and number < minimum:
        raise ImproperEnv(f"{name}={number:g} is below the minimum {minimum:g}")
    if maximum is not None and number > maximum:
        raise ImproperEnv(f"{name}={number:g} is above the maximum {maximum:g}")
    return number


def env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = os.environ.get(name)
    if value in (None, ""):
        return default
    if value not in choices:
        raise ImproperEnv(f"{name}={value!r} is not one of {', '.join(choices)}")
    return value


def env_path(name: str, default: Path) -> Path:
    value = os.environ.get(name)
    return (Path(value) if value else default).expanduser().resolve()


def env_url(name: str) -> str:
    """An http(s) URL without a trailing slash, or "" when unset."""
    value = (os.environ.get(name) or "").strip()
    if not value:
        return ""
    from urllib.parse import urlsplit

    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ImproperEnv(f"{name}={value!r} is not an http(s) URL")
    return value.rstrip("/")
