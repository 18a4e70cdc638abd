from django.core.management.base import BaseCommand

from project.commands import BadInput
from scheduling.management.commands._ids import work_items_for_ids
from scheduling.models import WorkItemStatus
from scheduling.services import work_item_requeue

REQUEUEABLE = (WorkItemStatus.DEAD, WorkItemStatus.CANCELLED)


class Command(BaseCommand):
    help = "Give dead or cancelled work items a new attempt (audited)."

    def add_arguments(self, parser):
        parser.add_argument("ids", nargs="+", help="Work item ids.")
        parser.add_argument("--reason", default="requeued from the command line")

    def handle(self, *args, ids, reason, **options):
        items = work_items_for_ids(ids)
        wrong = [f"#{item.pk} is {item.status}" for item in items if item.status not in REQUEUEABLE]
        if wrong:
            raise BadInput(f"only dead or cancelled items can be requeued: {', '.join(wrong)}")
        for item in items:
            if work_item_requeue(work_item_id=item.pk, actor="command:requeue", reason=reason):
                self.stdout.write(f"requeued #{item.pk}")
            else:
                self.stdout.write(f"#{item.pk} already handled")
