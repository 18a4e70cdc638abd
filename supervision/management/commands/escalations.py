import json

from django.core.management.base import BaseCommand

from supervision.selectors import escalations_list


class Command(BaseCommand):
    help = "Unresolved escalations (open and acknowledged), newest first; --all includes resolved ones."

    def add_arguments(self, parser):
        parser.add_argument("--all", action="store_true", help="Include resolved escalations.")
        parser.add_argument("--limit", type=int, default=200, help="At most this many (default 200).")
        parser.add_argument("--json", action="store_true", help="Machine-readable output.")

    def handle(self, *args, all: bool = False, limit: int = 200, json: bool = False, **options):
        rows = escalations_list(include_resolved=all, limit=limit)
        if json:
            self.stdout.write(_dumps(rows, default=str, indent=2))
            return
        if not rows:
            self.stdout.write("no unresolved escalations" if not all else "no escalations")
            return
        for row in rows:
            self.stdout.write(
                f"#{row['id']:<6} {row['status']:<12} {row['problem']:<16} {row['subject']:<24} "
                f"opened {row['opened_at']:%Y-%m-%d %H:%M:%S}  {row['summary'][:80]}"
            )


_dumps = json.dumps
