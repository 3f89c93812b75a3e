"""Fixtures the environment tests share with the batch tests."""

from tests.batch.conftest import make_asset  # noqa: F401  (a fixture: data assets made through the API)
from tests.cli.conftest import live_web, owner_cli  # noqa: F401  (fixtures: the web process and the CLI)
