"""`python manage.py drf_create_token <user>`: print a new API token (stored hashed, with an
expiry), alone on stdout. Replaces DRF's command of the same name, whose tokens were stored in clear."""

import argparse

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from endpoints_app.errors import StudioError
from endpoints_app.models import AuditLog
from endpoints_app.services.audit import Actor
from endpoints_app.services.tokens import do_create_api_token


class Command(BaseCommand):
    help = "Create an API token for a user and print it (shown once; the database keeps only its digest)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--expires-in-days", type=int, default=None,
                            help="days until the token expires (default: STUDIO_API_TOKEN_DAYS)")
        # Accepted for DRF compatibility: every call makes a new token anyway.
        parser.add_argument("-r", "--reset", action="store_true", help=argparse.SUPPRESS)

    def handle(self, *args, **options):
        username = options["username"]
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"Cannot create the Token: user {username} does not exist")
        try:
            token, value = do_create_api_token(Actor(user=None, via=AuditLog.Via.CLI, name="manage.py (host)"), user,
                                               options["expires_in_days"])
        except StudioError as error:
            raise CommandError(error.message) from None
        # The token alone on stdout, so `TOKEN=$(python manage.py drf_create_token admin)` works; the
        # sentence for a person goes to stderr.
        self.stderr.write(f"Generated a token for user {username} (expires {token.expiry:%Y-%m-%d %H:%M} UTC); "
                          "it is shown once.")
        self.stdout.write(value)

