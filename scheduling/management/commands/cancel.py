from django.core.management.base import BaseCommand

from scheduling.management.commands._ids import work_items_for_ids
from scheduling.services import work_item_cancel


class Command(BaseCommand):
    help = "Cancel work items. A cancelled item never runs; a running one is stopped."

    def add_arguments(self, parser):
        parser.add_argument("ids", nargs="+", help="Work item ids.")
        parser.add_argument("--reason", default="cancelled from the command line")

    def handle(self, *args, ids, reason, **options):
        for item in work_items_for_ids(ids):
            if work_item_cancel(work_item_id=item.pk, actor="command:cancel", reason=reason):
                self.stdout.write(f"cancelled #{item.pk}")
            else:
                item.refresh_from_db(fields=["status"])
                self.stdout.write(f"#{item.pk} already handled ({item.status})")
