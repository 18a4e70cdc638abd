from django.core.management.base import BaseCommand

from project.commands import BadInput
from project.exceptions import ShepherdError
from scheduling.models import WorkType
from scheduling.services import queue_pause, work_type_pause


class Command(BaseCommand):
    help = (
        "Pause a queue or a work type: its pending items stay in the database and nothing more is released; "
        "items already queued or running finish. `resume` undoes it."
    )
    paused = True

    def add_arguments(self, parser):
        parser.add_argument("kind", choices=["queue", "work-type"], help="What to pause.")
        parser.add_argument("name", help="Queue name (scheduling.routing) or work type name.")

    def handle(self, *args, kind: str, name: str, **options):
        verb = "paused" if self.paused else "resumed"
        try:
            if kind == "queue":
                changed = queue_pause(name=name, paused=self.paused)
            else:
                if not WorkType.objects.filter(name=name).exists():
                    raise BadInput(f"unknown work type {name!r}")
                changed = work_type_pause(name=name, paused=self.paused)
        except ShepherdError as error:
            raise BadInput(str(error)) from None
        self.stdout.write(f"{kind} {name} {verb}" if changed else f"{kind} {name} was already {verb}")
