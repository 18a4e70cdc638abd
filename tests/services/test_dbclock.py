import pytest
from django.db.models.functions import Now

from project.dbclock import now_minus, now_plus
from scheduling.models import WorkItem
from tests.factories import item_queued

pytestmark = pytest.mark.django_db


def test_now_plus_zero_is_due_within_the_same_statement():
    # One statement, so both sides read the same clock tick: on SQLite `Now() + 0`
    # used to come back as '...217000', which compares as text above Now()'s '...217'.
    item = item_queued("demo.noop")
    due = WorkItem.objects.filter(pk=item.pk).annotate(due_at=now_plus(0)).filter(due_at__lte=Now())
    assert due.exists()


def test_now_plus_and_minus_stay_on_their_side_of_now():
    item = item_queued("demo.noop")
    rows = WorkItem.objects.filter(pk=item.pk).annotate(later=now_plus(5), earlier=now_minus(5))
    assert rows.filter(later__gt=Now(), earlier__lt=Now()).exists()
