"""Per-user API tokens, hashed at rest (django-rest-knox's digest) with an expiry.

The token itself is shown once when it is made; the database keeps its SHA-512
digest and the first characters (`token_key`) to find the row."""

from django.db import models
from knox.models import AbstractAuthToken


class ApiToken(AbstractAuthToken):
    # knox keys its own table by the digest; ours gets a plain id the API can name.
    id = models.BigAutoField(primary_key=True)
    digest = models.CharField(max_length=128, unique=True)
    last_used = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created", "-id"]
        verbose_name = "API token"

    def __str__(self) -> str:
        # Never the digest: logs, audit rows and the admin name a token by its prefix.
        return f"{self.token_key}… ({self.user})"

    @property
    def prefix(self) -> str:
        return self.token_key
