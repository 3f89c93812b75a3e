"""The instance types a fresh installation offers (IT edits them in the admin console)."""

from decimal import Decimal

from endpoints_app.models import InstanceType

DEFAULT_INSTANCE_TYPES = [
    # name, family, cores, memory GB, price per hour (USD)
    ("Standard_DS1_v2", "DSv2", 1, "3.5", "0.0700"),
    ("Standard_DS2_v2", "DSv2", 2, "7", "0.1400"),
    ("Standard_DS3_v2", "DSv2", 4, "14", "0.2930"),
    ("Standard_DS4_v2", "DSv2", 8, "28", "0.5850"),
    ("Standard_F2s_v2", "FSv2", 2, "4", "0.0960"),
    ("Standard_F4s_v2", "FSv2", 4, "8", "0.1920"),
    ("Standard_E4s_v3", "ESv3", 4, "32", "0.2520"),
]


def seed_instance_types() -> int:
    """Create the default instance types that are missing; never overwrite IT's prices."""
    created = 0
    for name, family, cores, memory, price in DEFAULT_INSTANCE_TYPES:
        _, was_created = InstanceType.objects.get_or_create(
            name=name,
            defaults={"family": family, "cores": cores, "memory_gb": Decimal(memory), "price_per_hour": Decimal(price)},
        )
        created += was_created
    return created
