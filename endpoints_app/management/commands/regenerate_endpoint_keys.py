"""`python manage.py regenerate_endpoint_keys --yes`: new keys for every endpoint's two slots
and a new aml_token generation, so no key or token issued before works any more."""

from django.core.management.base import BaseCommand, CommandError

from endpoints_app.models import AuditLog
from endpoints_app.services.audit import Actor
from endpoints_app.services.keys import do_regenerate_all_keys


class Command(BaseCommand):
    help = "Regenerate both keys of every endpoint and revoke every aml_token (after a leak or a secret rotation)."

    def add_arguments(self, parser):
        parser.add_argument("--yes", action="store_true", help="do it (every client needs its new key)")

    def handle(self, *args, **options):
        if not options["yes"]:
            raise CommandError("This breaks every client's key: run again with --yes to go ahead.")
        count = do_regenerate_all_keys(Actor(user=None, via=AuditLog.Via.CLI))
        self.stdout.write(f"Regenerated the keys of {count} endpoint(s); aml_tokens issued before no longer work.")
