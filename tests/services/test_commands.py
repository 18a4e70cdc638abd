import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from scheduling.models import WorkItem
from tests.factories import agent_create, item_running

pytestmark = pytest.mark.django_db


def run(*args):
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_submit_prints_ids_as_json():
    ids = json.loads(run("submit", "demo.sleep", "--payload", '{"seconds": 1}', "--count", "3", "--json"))
    assert ids == list(WorkItem.objects.order_by("id").values_list("id", flat=True))
    assert WorkItem.objects.filter(priority=5, payload={"seconds": 1}).count() == 3


def test_submit_with_an_idempotency_key_creates_once():
    first = run("submit", "demo.noop", "--count", "2", "--idempotency-key", "nightly-7", "--json")
    again = run("submit", "demo.noop", "--count", "2", "--idempotency-key", "nightly-7", "--json")
    assert first == again and WorkItem.objects.count() == 2
    with pytest.raises(CommandError, match="different size"):
        run("submit", "demo.noop", "--count", "3", "--idempotency-key", "nightly-7")
    with pytest.raises(CommandError, match="internal to the platform"):
        run("submit", "django.task", "--payload", '{"task": "x", "args": [], "kwargs": {}}')
    assert WorkItem.objects.count() == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["demo.nope"], "unknown work type 'demo.nope'"),
        (["demo.sleep", "--payload", "{seconds: 1"], "--payload is not valid JSON"),
        (["demo.sleep", "--payload", '{"seconds": "soon"}'], "payload.seconds: 'soon' is not of type 'number'"),
        (["demo.sleep", "--priority", "12"], "priority must be an integer from 0 to 9"),
        (["demo.sleep", "--count", "0"], "--count must be between 1"),
    ],
)
def test_submit_rejects_bad_input_and_creates_nothing(args, message):
    with pytest.raises(CommandError, match=message.replace("{", r"\{").replace("(", r"\(")):
        run("submit", *args)
    assert WorkItem.objects.count() == 0


def test_cancel_and_requeue_validate_every_id_first():
    agent = agent_create()
    item = item_running(agent)
    with pytest.raises(CommandError, match="no work item with id 999999"):
        run("cancel", str(item.pk), "999999")
    with pytest.raises(CommandError, match="not a work item id: 'x'"):
        run("cancel", "x")
    assert WorkItem.objects.get(pk=item.pk).status == "running"  # nothing changed
    with pytest.raises(CommandError, match=f"only dead or cancelled items can be requeued: #{item.pk} is running"):
        run("requeue", str(item.pk))
    assert run("cancel", str(item.pk)).strip() == f"cancelled #{item.pk}"
    assert "already handled" in run("cancel", str(item.pk))
    assert run("requeue", str(item.pk)).strip() == f"requeued #{item.pk}"


def test_status_json_has_counts_queues_agents_and_supervisor():
    agent_create("status-agent")
    run("submit", "demo.cpu", "--count", "2")
    status = json.loads(run("status", "--json"))
    assert status["counts"]["pending"] + status["counts"]["queued"] == 2
    assert set(status["queues"]) == {"default", "cpu"}
    assert [a["name"] for a in status["agents"]] == ["status-agent"]
    assert status["agents"][0]["heartbeat_age_seconds"] < 60
    assert status["supervisor"] is None
    run("supervise", "--once")
    status = json.loads(run("status", "--json"))
    assert status["supervisor"]["silent"] is False
    assert "Supervisor: last run" in run("status")


def test_wait_returns_when_nothing_is_unfinished_and_times_out_with_code_1():
    assert "all work items are finished" in run("wait", "--timeout", "1")
    run("submit", "demo.noop")
    with pytest.raises(CommandError, match=r"timed out after 0\.3s with 1 unfinished") as error:
        run("wait", "--timeout", "0.3")
    assert error.value.returncode == 1


def test_submit_a_request_file_and_a_jsonl_batch(tmp_path):
    request = tmp_path / "request.json"
    request.write_text(
        json.dumps(
            {
                "name": "etl",
                "items": [
                    {"key": "extract", "work_type": "demo.noop"},
                    {"key": "load", "work_type": "demo.noop", "depends_on": ["extract"]},
                ],
            }
        )
    )
    ids = json.loads(run("submit", "--file", str(request), "--json"))
    items = WorkItem.objects.in_bulk(ids)
    assert [items[pk].request_key for pk in ids] == ["extract", "load"]
    assert items[ids[1]].blocked_reason == "dependencies"
    batch = tmp_path / "items.jsonl"
    batch.write_text('{"seconds": 1}\n\n{"seconds": 2}\n')
    assert len(json.loads(run("submit", "demo.sleep", "--file", str(batch), "--json"))) == 2
    assert WorkItem.objects.count() == 4


@pytest.mark.parametrize(
    ("content", "args", "message"),
    [
        ('{"items": [{"key": "a", "work_type": "demo.noop", "depends_on": ["b"]}]}', [], "unknown key(s): b"),
        ("{not json", [], "is not valid JSON"),
        ('{"seconds": 1}\nnope\n', ["demo.sleep"], "line 2 is not valid JSON"),
        ('{"seconds": 1}\n{"seconds": -1}\n', ["demo.sleep"], "item 2: demo.sleep"),
    ],
)
def test_bad_files_create_nothing(tmp_path, content, args, message):
    path = tmp_path / "input.json"
    path.write_text(content)
    with pytest.raises(CommandError) as raised:
        run("submit", *args, "--file", str(path))
    assert message in str(raised.value) and raised.value.returncode == 2
    assert WorkItem.objects.count() == 0


def test_agents_command_lists_drains_and_resumes():
    agent = agent_create("default@host-a")
    assert "default@host-a" in run("agents")
    assert "drain: default@host-a" in run("agents", "drain", "default@host-a")
    agent.refresh_from_db()
    assert agent.status == "draining"
    assert "already handled" in run("agents", "drain", str(agent.pk))
    assert "resume: default@host-a" in run("agents", "resume", str(agent.pk))
    with pytest.raises(CommandError, match="no live agent 'nobody'"):
        run("agents", "drain", "nobody")
