"""Shared parsing for commands that take work item ids."""

from project.commands import BadInput
from scheduling.models import WorkItem


def work_items_for_ids(raw_ids: list[str]) -> list[WorkItem]:
    """Every id must parse and exist, or nothing happens (exit 2)."""
    ids = []
    for raw in raw_ids:
        try:
            ids.append(int(raw))
        except ValueError:
            raise BadInput(f"not a work item id: {raw!r}") from None
    found = WorkItem.objects.in_bulk(ids)
    missing = [str(pk) for pk in ids if pk not in found]
    if missing:
        raise BadInput(f"no work item with id {', '.join(missing)}")
    return [found[pk] for pk in ids]
