import os
import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand

from scheduling.services import work_types_sync
from supervision.services import supervisor_schedule_ensure


def admin_credentials() -> tuple[str, str, bool]:
    """(username, password, generated). From SHEPHERD_ADMIN_USER/PASSWORD, else a
    password generated once and kept in var/admin_password (mode 600)."""
    username = os.environ.get("SHEPHERD_ADMIN_USER", "admin")
    password = os.environ.get("SHEPHERD_ADMIN_PASSWORD")
    if password:
        return username, password, False
    path = settings.VAR_DIR / "admin_password"
    if path.exists():
        return username, path.read_text().strip(), False
    password = secrets.token_urlsafe(12)
    path.write_text(password)
    path.chmod(0o600)
    return username, password, True


class Command(BaseCommand):
    help = "Prepare the platform: migrate, static files, work types, supervisor schedule, admin user."

    def handle(self, *args, **options):
        call_command("migrate", interactive=False, verbosity=0)
        call_command("collectstatic", interactive=False, verbosity=0)
        work_types_sync()
        supervisor_schedule_ensure()
        username, password, generated = admin_credentials()
        User = get_user_model()
        user, created = User.objects.get_or_create(username=username, defaults={"is_staff": True, "is_superuser": True})
        if created:
            user.set_password(password)
            user.save()
            self.stdout.write(f"created admin user {username!r}")
            if generated:
                self.stdout.write(
                    self.style.WARNING(
                        f"admin password (shown once, kept in {settings.VAR_DIR / 'admin_password'}): {password}"
                    )
                )
        self.stdout.write("setup done")
