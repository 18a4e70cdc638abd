import json

from django.core.management.base import BaseCommand

from project.commands import BadInput
from project.exceptions import ShepherdError
from scheduling.services import work_items_submit_ids


class Command(BaseCommand):
    help = "Submit work items of one work type; prints the new ids."

    def add_arguments(self, parser):
        parser.add_argument("work_type", help="Work type name, e.g. demo.sleep.")
        parser.add_argument("--payload", default="{}", help="Payload as a JSON object (default {}).")
        parser.add_argument("--priority", type=int, default=None, help="0-9, higher first (default: the type's).")
        parser.add_argument("--count", type=int, default=1, help="How many identical items (default 1).")
        parser.add_argument(
            "--idempotency-key",
            default=None,
            help="Resubmitting with the same key prints the earlier ids and creates nothing.",
        )
        parser.add_argument("--json", action="store_true", help="Print the ids as a JSON list.")

    def handle(self, *args, work_type, payload, priority, count, idempotency_key, json: bool = False, **options):
        payload_value = _parse_json(payload)
        if not 1 <= count <= 1_000_000:
            raise BadInput(f"--count must be between 1 and 1000000, not {count}")
        try:
            ids = work_items_submit_ids(
                work_type=work_type,
                payloads=[payload_value] * count,
                priority=priority,
                idempotency_key=idempotency_key,
            )
        except ShepherdError as error:
            raise BadInput(str(error)) from None
        if json:
            self.stdout.write(_dumps(ids))
        else:
            self.stdout.write("\n".join(str(pk) for pk in ids))


def _parse_json(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise BadInput(f"--payload is not valid JSON: {error}") from None


_dumps = json.dumps
