"""First-run setup, safe to run on every start: instance types, the catalog,
the `default` workspace and the `admin` user."""

import os
import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from endpoints_app.catalog.instance_types import seed_instance_types
from endpoints_app.catalog.seed import seed_catalog
from endpoints_app.models import Membership, Role, RouteVersion, Workspace
from endpoints_app.services.audit import SYSTEM
from endpoints_app.services.workspaces import do_create_workspace


class Command(BaseCommand):
    help = "Seed instance types and the catalog; create the default workspace and the admin user."

    def add_arguments(self, parser):
        parser.add_argument("--skip-catalog", action="store_true", help="Do not seed catalog models.")

    def handle(self, *args, **options):
        with transaction.atomic():
            seed_instance_types()
            RouteVersion.objects.get_or_create(pk=1)
            admin = self._ensure_admin()
            workspace = Workspace.objects.filter(name="default").first()
            if workspace is None:
                workspace = do_create_workspace(SYSTEM, "default", "Default", owner=admin)  # audited
            else:
                Membership.objects.get_or_create(workspace=workspace, user=admin, defaults={"role": Role.OWNER})
        if not options["skip_catalog"]:
            models = seed_catalog()
            self.stdout.write(f"Catalog: {len(models)} models ready.")

    def _ensure_admin(self):
        User = get_user_model()
        admin = User.objects.filter(username="admin").first()
        if admin is not None:
            return admin
        password = settings.STUDIO_ADMIN_PASSWORD
        generated = not password
        if generated:
            password = secrets.token_urlsafe(12)
        admin = User.objects.create_superuser("admin", email="", password=password)
        if generated:
            path = settings.DATA_DIR / "admin-password.txt"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(password + "\n")
            os.chmod(path, 0o600)
            self.stdout.write(self.style.WARNING(f"Created user 'admin' with password: {password}  (saved to {path})"))
        else:
            self.stdout.write("Created user 'admin' with the password from STUDIO_ADMIN_PASSWORD.")
        return admin
