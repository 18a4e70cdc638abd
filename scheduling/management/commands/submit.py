import json
from pathlib import Path

from django.core.management.base import BaseCommand

from project.commands import BadInput
from project.exceptions import ShepherdError
from scheduling.services import request_submit, work_items_submit_ids


class Command(BaseCommand):
    help = (
        "Submit work items of one work type and print the new ids; or, with --file, a batch (JSON Lines of "
        "payloads, with WORK_TYPE) or a request with dependencies (a .json file, no WORK_TYPE)."
    )

    def add_arguments(self, parser):
        parser.add_argument("work_type", nargs="?", help="Work type name, e.g. demo.sleep.")
        parser.add_argument("--payload", default="{}", help="Payload as a JSON object (default {}).")
        parser.add_argument("--priority", type=int, default=None, help="0-9, higher first (default: the type's).")
        parser.add_argument("--count", type=int, default=1, help="How many identical items (default 1).")
        parser.add_argument(
            "--file",
            default=None,
            help="items.jsonl (one payload per line, for WORK_TYPE) or request.json "
            '({"name", "items": [{"key", "work_type", "payload", "priority", "depends_on"}]}).',
        )
        parser.add_argument(
            "--idempotency-key",
            default=None,
            help="Resubmitting with the same key prints the earlier ids and creates nothing.",
        )
        parser.add_argument(
            "--requires",
            default=None,
            help="Capabilities an agent needs beyond the work type's, comma-separated, e.g. gpu,mem_gb=16.",
        )
        parser.add_argument("--json", action="store_true", help="Print the ids as a JSON list.")

    def handle(
        self, *args, work_type, payload, priority, count, file, idempotency_key, requires, json: bool = False, **options
    ):
        if not 1 <= count <= 1_000_000:
            raise BadInput(f"--count must be between 1 and 1000000, not {count}")
        try:
            if file and work_type is None:
                ids = self._request(file)
            else:
                if work_type is None:
                    raise BadInput("name a WORK_TYPE, or give --file request.json for a request")
                payloads = _jsonl(file) if file else [_parse_json(payload, "--payload")] * count
                ids = work_items_submit_ids(
                    work_type=work_type,
                    payloads=payloads,
                    priority=priority,
                    idempotency_key=idempotency_key,
                    requirements=requires,
                )
        except ShepherdError as error:
            raise BadInput(str(error)) from None
        self.stdout.write(_dumps(ids) if json else "\n".join(str(pk) for pk in ids))

    def _request(self, file: str) -> list[int]:
        spec = _parse_json(_read(file), file)
        request = request_submit(spec=spec)
        self.stderr.write(f"request #{request.pk}: {request.items.count()} items")
        return list(request.items.order_by("id").values_list("id", flat=True))


def _read(file: str) -> str:
    try:
        return Path(file).read_text()
    except OSError as error:
        raise BadInput(f"cannot read {file}: {error.strerror}") from None


def _jsonl(file: str) -> list:
    payloads = []
    for number, line in enumerate(_read(file).splitlines(), start=1):
        if line.strip():
            payloads.append(_parse_json(line, f"{file} line {number}"))
    if not payloads:
        raise BadInput(f"{file} holds no payloads")
    return payloads


def _parse_json(text: str, what: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise BadInput(f"{what} is not valid JSON: {error}") from None


_dumps = json.dumps
