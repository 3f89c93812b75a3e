"""The `studio` command line, built on studio_client."""

from studio_client.cli.main import main

__all__ = ["main"]
