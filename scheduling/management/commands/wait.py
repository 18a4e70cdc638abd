import time

from django.core.management.base import BaseCommand, CommandError

from project.commands import BadInput
from scheduling.selectors import work_item_counts, work_items_non_terminal_count


class Command(BaseCommand):
    help = "Wait until no work item is pending, queued, running or waiting to retry. Exit 1 on timeout."

    def add_arguments(self, parser):
        parser.add_argument("--timeout", type=float, default=600, help="Seconds to wait (default 600).")
        parser.add_argument("--quiet", action="store_true")

    def handle(self, *args, timeout, quiet=False, **options):
        if timeout <= 0:
            raise BadInput("--timeout must be positive")
        deadline = time.monotonic() + timeout
        last_report = 0.0
        while True:
            remaining = work_items_non_terminal_count()
            if remaining == 0:
                if not quiet:
                    self.stdout.write("all work items are finished")
                return
            if time.monotonic() >= deadline:
                counts = {k: v for k, v in work_item_counts().items() if v}
                raise CommandError(f"timed out after {timeout:g}s with {remaining} unfinished: {counts}", returncode=1)
            if not quiet and time.monotonic() - last_report >= 5:
                self.stdout.write(f"waiting: {remaining} unfinished")
                last_report = time.monotonic()
            time.sleep(0.25)
