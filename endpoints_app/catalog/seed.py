"""Seed the shared catalog. Filled in by the catalog work."""

from endpoints_app.models import CatalogModel


def seed_catalog() -> list[CatalogModel]:
    return []
