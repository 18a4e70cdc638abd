import os

from django.core.management.base import BaseCommand

from scheduling.management.commands.setup import admin_credentials


class Command(BaseCommand):
    help = "Start Flower behind basic auth with the admin credentials (used by the Procfile)."

    def add_arguments(self, parser):
        parser.add_argument("--port", default=os.environ.get("FLOWER_PORT", "5555"))
        parser.add_argument("--address", default=os.environ.get("FLOWER_ADDRESS", "127.0.0.1"))

    def handle(self, *args, port, address, **options):
        username, password, _ = admin_credentials()
        auth = os.environ.get("FLOWER_BASIC_AUTH") or f"{username}:{password}"
        os.execvp(
            "celery",
            ["celery", "-A", "project", "flower", f"--address={address}", f"--port={port}", f"--basic-auth={auth}"],
        )
