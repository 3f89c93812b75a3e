"""Computes: where a deployment's instances run.

`local` is the built-in compute (the embedded default: model servers on the worker's own machine,
placed by controller/placement.py; no Ray). It always exists and cannot be changed or deleted.
A `ray` compute is a Ray cluster: `address` is the `host:port` of its head's GCS (what
`ray start --address=...` takes); empty means a head the studio starts on its own machine
(controller/clusters.py). Computes are IT-managed and visible to every workspace."""

from __future__ import annotations

from django.conf import settings as conf
from django.core.validators import RegexValidator
from django.db import models

LOCAL_COMPUTE = "local"

COMPUTE_NAME = RegexValidator(
    r"^[a-z0-9]([-a-z0-9]{0,30}[a-z0-9])?$",
    "Use 1-32 lowercase letters, digits and hyphens, not starting or ending with a hyphen.",
)


class Compute(models.Model):
    """One compute.

    - name: a unique slug; `local` is the built-in one.
    - type: local (only the built-in one) or ray.
    - address: a Ray compute's head, `host:port`; empty: a head the studio starts on this machine.
    - state: what was last seen (controller/clusters.py reads Ray; `local` is always Ready),
      `state_detail` why (e.g. the error reaching the head), `state_checked_at` when.
    - description, created_by, created_at, updated_at."""

    class Type(models.TextChoices):
        LOCAL = "local"
        RAY = "ray"

    class State(models.TextChoices):
        READY = "Ready"
        STARTING = "Starting"
        UNREACHABLE = "Unreachable"
        STOPPED = "Stopped"

    name = models.CharField(max_length=32, unique=True, validators=[COMPUTE_NAME])
    type = models.CharField(max_length=16, choices=Type.choices)
    address = models.CharField(max_length=255, blank=True)
    description = models.TextField(blank=True)
    state = models.CharField(max_length=16, choices=State.choices, default=State.STARTING)
    state_detail = models.TextField(blank=True)
    state_checked_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(conf.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def is_builtin(self) -> bool:
        return self.name == LOCAL_COMPUTE

    @property
    def is_managed_head(self) -> bool:
        """A Ray compute whose head the studio starts on its own machine."""
        return self.type == self.Type.RAY and not self.address

    @classmethod
    def local(cls) -> Compute:
        """The built-in compute (created by the migration; recreated if a test's flush removed it)."""
        compute, _ = cls.objects.get_or_create(
            name=LOCAL_COMPUTE, defaults={"type": cls.Type.LOCAL, "state": cls.State.READY,
                                          "description": "This machine (the studio's own workers)."}
        )
        return compute


def local_compute_id() -> int:
    """Deployment.compute when none is named (Deployment.save(), migration 0020): `local`.
    Reads only the id, so migration 0020 (which calls it to fill existing rows) stays valid when
    the table gains columns later."""
    pk = Compute.objects.filter(name=LOCAL_COMPUTE).values_list("pk", flat=True).first()
    return pk if pk is not None else Compute.local().pk


def serverless_compute_id() -> int | None:
    """The compute serverless pools run on (STUDIO_SERVERLESS_COMPUTE); None while no compute has that
    name (pools stay where they are, new ones go to `local`: a missing cluster must not stop them)."""
    return Compute.objects.filter(name=conf.STUDIO_SERVERLESS_COMPUTE).values_list("pk", flat=True).first()
