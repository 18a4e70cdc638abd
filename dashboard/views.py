"""The operator console's pages: server-rendered, login required, live through htmx
partials. Reads go through the apps' selectors, writes through their services."""

from __future__ import annotations

from datetime import date
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from agents.models import Agent
from agents.selectors import agent_work_counts, agents_overview
from agents.services import agent_drain, agent_resume
from dashboard.forms import BatchUploadForm, PayloadEditForm, RawJsonForm, RequestUploadForm, WorkTypeForm
from project.exceptions import NotFound, ShepherdError
from project.platform import platform_status
from scheduling import registry
from scheduling.models import TERMINAL_STATUSES, Request, WorkItem, WorkItemStatus
from scheduling.selectors import (
    request_graph,
    request_rollup,
    request_rollups,
    request_visible_to,
    throughput_last_hour,
    work_item_timeline,
    work_item_visible_to,
    work_items_visible_to,
)
from scheduling.services import (
    ActionRefused,
    request_submit,
    work_item_operator_action,
    work_item_requeue,
    work_items_submit_batch,
)
from supervision.models import Escalation, Intervention
from supervision.selectors import escalations_list
from supervision.services import escalation_acknowledge, escalation_resolve

PAGE_SIZE = 50
S = WorkItemStatus


def _actor(request: HttpRequest) -> str:
    return f"user:{request.user.get_username()}"


def _partial(request: HttpRequest, full: str, partial: str, context: dict[str, Any]) -> HttpResponse:
    """htmx polls ask for the live part of a page only."""
    return render(request, partial if request.htmx else full, context)


# ---------------------------------------------------------------- overview


def _overview_context(request: HttpRequest) -> dict[str, Any]:
    status = platform_status(request.user)
    buckets = throughput_last_hour(request.user)
    peak = max([b["succeeded"] + b["failed"] for b in buckets] + [1])
    for bucket in buckets:
        bucket["succeeded_pct"] = round(100 * bucket["succeeded"] / peak, 1)
        bucket["failed_pct"] = round(100 * bucket["failed"] / peak, 1)
    agents = status["agents"]
    return {
        "status": status,
        "counts": status["counts"],
        "queues": status["queues"],
        "agents_by_status": {s: sum(1 for a in agents if a["status"] == s) for s in ("online", "draining", "lost")},
        "buckets": buckets,
        "succeeded_hour": sum(b["succeeded"] for b in buckets),
        "failed_hour": sum(b["failed"] for b in buckets),
        "escalations": escalations_list(limit=5) if request.user.is_staff else [],
        "dead_after": settings.AGENT_DEAD_AFTER,
    }


@require_GET
@login_required
def overview(request: HttpRequest) -> HttpResponse:
    return _partial(request, "dashboard/overview.html", "dashboard/_overview.html", _overview_context(request))


# ---------------------------------------------------------------- agents


@require_GET
@login_required
def agents(request: HttpRequest) -> HttpResponse:
    rows = agents_overview()
    counts = agent_work_counts([row["id"] for row in rows])
    for row in rows:
        row.update(counts.get(row["id"], {}))
        row["age_ratio"] = row["heartbeat_age_seconds"] / settings.AGENT_DEAD_AFTER
    context = {"agents": rows, "dead_after": settings.AGENT_DEAD_AFTER}
    return _partial(request, "dashboard/agents.html", "dashboard/_agents.html", context)


@require_POST
@staff_member_required
def agent_action(request: HttpRequest, agent_id: int, action: str) -> HttpResponse:
    if not Agent.objects.filter(pk=agent_id).exists():
        raise Http404("no such agent")
    service = {"drain": agent_drain, "resume": agent_resume}.get(action)
    if service is None:
        raise Http404("no such action")
    if service(agent_id=agent_id):
        messages.success(request, f"Agent {agent_id}: {action} requested.")
    else:
        messages.warning(request, f"Agent {agent_id}: cannot {action} it in its current state.")
    return redirect("dashboard:agents")


# ---------------------------------------------------------------- work items


@require_GET
@login_required
def items(request: HttpRequest) -> HttpResponse:
    query = request.GET
    search = query.get("id", "").strip().lstrip("#")
    if search:
        if search.isdigit() and work_items_visible_to(request.user).filter(pk=int(search)).exists():
            return redirect("dashboard:item", work_item_id=int(search))
        messages.warning(request, f"No work item #{search} that you can see.")
    rows = work_items_visible_to(request.user).select_related("submitted_by").order_by("-id")
    filters = {}
    if query.get("status") in S.values:
        rows = rows.filter(status=query["status"])
        filters["status"] = query["status"]
    for field, lookup in (("work_type", "work_type_id"), ("queue", "queue")):
        if query.get(field):
            rows = rows.filter(**{lookup: query[field]})
            filters[field] = query[field]
    if request.user.is_staff and query.get("submitter"):
        rows = rows.filter(submitted_by__username=query["submitter"])
        filters["submitter"] = query["submitter"]
    for field, lookup in (("since", "created_at__date__gte"), ("until", "created_at__date__lte")):
        if query.get(field):
            try:
                day = date.fromisoformat(query[field])
            except ValueError:
                messages.warning(request, f"{field}: {query[field]!r} is not a date (YYYY-MM-DD); ignored.")
                continue
            rows = rows.filter(**{lookup: day})
            filters[field] = query[field]
    before = query.get("before", "")
    if before.isdigit():
        rows = rows.filter(id__lt=int(before))
    page = list(rows[: PAGE_SIZE + 1])
    older = page[PAGE_SIZE - 1].pk if len(page) > PAGE_SIZE else None
    context = {
        "items": page[:PAGE_SIZE],
        "filters": filters,
        "older": older,
        "paged": before.isdigit(),
        "statuses": S.choices,
        "work_types": sorted(registry.work_type_specs()),
        "queues": sorted({spec.queue for spec in registry.work_type_specs().values()}),
        "query": "&".join(f"{k}={v}" for k, v in filters.items()),
    }
    return _partial(request, "dashboard/items.html", "dashboard/_items_table.html", context)


def _item_context(request: HttpRequest, item: WorkItem) -> dict[str, Any]:
    attempts = list(item.attempts.select_related("agent").order_by("number"))
    return {
        "item": item,
        "attempts": attempts,
        "timeline": work_item_timeline(item),
        "can_cancel": item.status not in TERMINAL_STATUSES,
        "can_retry": item.status == S.RETRY_WAIT,
        "can_requeue": request.user.is_staff and item.status in (S.DEAD, S.CANCELLED),
        "live": item.status not in TERMINAL_STATUSES,
    }


@require_GET
@login_required
def item(request: HttpRequest, work_item_id: int) -> HttpResponse:
    try:
        found = work_item_visible_to(request.user, work_item_id)
    except NotFound:
        raise Http404("no such work item") from None
    return _partial(request, "dashboard/item.html", "dashboard/_item_live.html", _item_context(request, found))


@require_POST
@login_required
def item_action(request: HttpRequest, work_item_id: int, action: str) -> HttpResponse:
    try:
        work_item_visible_to(request.user, work_item_id)
    except NotFound:
        raise Http404("no such work item") from None
    if action not in ("cancel", "retry", "requeue"):
        raise Http404("no such action")
    if action == "requeue" and not request.user.is_staff:
        raise PermissionDenied("requeueing is for staff")
    try:
        status = work_item_operator_action(
            work_item_id=work_item_id, action=action, actor=_actor(request), reason=f"{action} from the dashboard"
        )
        messages.success(request, f"Work item #{work_item_id}: {action} done, now {status}.")
    except ActionRefused as refused:
        messages.error(request, str(refused))
    return redirect(request.POST.get("next") or reverse("dashboard:item", args=[work_item_id]))


# ---------------------------------------------------------------- requests


@require_GET
@login_required
def requests_list(request: HttpRequest) -> HttpResponse:
    rows = Request.objects.all() if request.user.is_staff else Request.objects.filter(submitted_by=request.user)
    page = list(rows.select_related("submitted_by").order_by("-id")[:PAGE_SIZE])
    found = request_rollups(page)
    rollups = [(row, found[row.pk]) for row in page]
    return render(request, "dashboard/requests.html", {"rollups": rollups})


@require_GET
@login_required
def request_detail(request: HttpRequest, request_id: int) -> HttpResponse:
    try:
        found = request_visible_to(request.user, request_id)
    except NotFound:
        raise Http404("no such request") from None
    graph = request_graph(found)
    context = {"request_row": found, "rollup": request_rollup(found), "graph": graph, **_graph_drawing(graph)}
    return _partial(request, "dashboard/request.html", "dashboard/_request_live.html", context)


NODE_W, NODE_H, GAP_X, GAP_Y = 190, 54, 70, 22


def _graph_drawing(graph: dict[str, Any]) -> dict[str, Any]:
    """Positions for an SVG drawing: one column per dependency layer."""
    position = {}
    for column, layer in enumerate(graph["layers"]):
        for row, node in enumerate(layer):
            position[node["id"]] = (column * (NODE_W + GAP_X), row * (NODE_H + GAP_Y))
            node["x"], node["y"] = position[node["id"]]
    edges = [
        {
            "x1": position[parent][0] + NODE_W,
            "y1": position[parent][1] + NODE_H / 2,
            "x2": position[child][0],
            "y2": position[child][1] + NODE_H / 2,
        }
        for parent, child in graph["edges"]
    ]
    width = max((x for x, _ in position.values()), default=0) + NODE_W + 10
    height = max((y for _, y in position.values()), default=0) + NODE_H + 10
    return {"drawn_edges": edges, "width": width, "height": height, "node_w": NODE_W, "node_h": NODE_H}


# ---------------------------------------------------------------- dead letter


@require_GET
@staff_member_required
def dead_letter(request: HttpRequest) -> HttpResponse:
    before = request.GET.get("before", "")
    rows = WorkItem.objects.filter(status=S.DEAD).order_by("-id")
    if before.isdigit():
        rows = rows.filter(id__lt=int(before))
    page = list(rows[: PAGE_SIZE + 1])
    return render(
        request,
        "dashboard/dead_letter.html",
        {"items": page[:PAGE_SIZE], "older": page[PAGE_SIZE - 1].pk if len(page) > PAGE_SIZE else None},
    )


@staff_member_required
def dead_letter_edit(request: HttpRequest, work_item_id: int) -> HttpResponse:
    found = WorkItem.objects.filter(pk=work_item_id, status__in=[S.DEAD, S.CANCELLED]).first()
    if found is None:
        raise Http404("no dead or cancelled work item with that id")
    form = PayloadEditForm(request.POST or None, initial={"payload": _json(found.payload)})
    if request.method == "POST" and form.is_valid():
        try:
            done = work_item_requeue(
                work_item_id=work_item_id,
                actor=_actor(request),
                reason="requeued from the dead-letter page",
                payload=form.cleaned_data["payload"],
            )
        except ShepherdError as error:
            form.add_error("payload", str(error))
        else:
            if done:
                messages.success(request, f"Work item #{work_item_id} requeued with the edited payload.")
                return redirect("dashboard:item", work_item_id=work_item_id)
            form.add_error(None, "Someone else changed this item first; nothing was requeued.")
    return render(request, "dashboard/dead_letter_edit.html", {"item": found, "form": form})


def _json(value: Any) -> str:
    import json

    return json.dumps(value, indent=2, sort_keys=True)


# ---------------------------------------------------------------- supervision


@require_GET
@staff_member_required
def interventions(request: HttpRequest) -> HttpResponse:
    rows = Intervention.objects.select_related("work_item", "agent").order_by("-id")
    if request.GET.get("monitor"):
        rows = rows.filter(monitor=request.GET["monitor"])
    return render(
        request,
        "dashboard/interventions.html",
        {"interventions": rows[:200], "monitors": Intervention.Monitor.choices, "monitor": request.GET.get("monitor")},
    )


@require_GET
@staff_member_required
def escalations(request: HttpRequest) -> HttpResponse:
    include_resolved = request.GET.get("all") == "1"
    return render(
        request,
        "dashboard/escalations.html",
        {"escalations": escalations_list(include_resolved=include_resolved), "all": include_resolved},
    )


@require_POST
@staff_member_required
def escalation_action(request: HttpRequest, escalation_id: int, action: str) -> HttpResponse:
    service = {"acknowledge": escalation_acknowledge, "resolve": escalation_resolve}.get(action)
    if service is None or not Escalation.objects.filter(pk=escalation_id).exists():
        raise Http404("no such escalation or action")
    if service(escalation_id=escalation_id, by=request.user.get_username()):
        messages.success(request, f"Escalation #{escalation_id}: {action}d.")
    else:
        messages.warning(request, f"Escalation #{escalation_id} was already {action}d.")
    return redirect("dashboard:escalations")


# ---------------------------------------------------------------- submit


def _public_specs() -> list[Any]:
    return [spec for _, spec in sorted(registry.work_type_specs().items()) if not spec.internal]


@login_required
def submit(request: HttpRequest, work_type: str | None = None) -> HttpResponse:
    specs = _public_specs()
    chosen = work_type or request.GET.get("work_type") or (specs[0].name if specs else None)
    if chosen not in {spec.name for spec in specs}:
        raise Http404("no such work type")
    form = WorkTypeForm(request.POST or None, work_type=chosen)
    if request.method == "POST" and form.is_valid():
        return _submitted(request, form, chosen, [form.cleaned_data["payload"]])
    return render(
        request, "dashboard/submit.html", {"form": form, "specs": specs, "chosen": registry.work_type_spec(chosen)}
    )


@login_required
def submit_raw(request: HttpRequest) -> HttpResponse:
    form = RawJsonForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        return _submitted(request, form, form.cleaned_data["work_type"], [form.cleaned_data["payload"]])
    return render(request, "dashboard/submit_raw.html", {"form": form, "specs": _public_specs()})


@login_required
def submit_request(request: HttpRequest) -> HttpResponse:
    form = RequestUploadForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        try:
            created = request_submit(spec=form.cleaned_data["file"], submitted_by=request.user)
        except ShepherdError as error:
            form.add_error("file", str(error))
        else:
            messages.success(request, f"Submitted request #{created.pk} with {created.items.count()} items.")
            return redirect("dashboard:request", request_id=created.pk)
    return render(request, "dashboard/submit_request.html", {"form": form, "specs": _public_specs()})


@login_required
def submit_batch(request: HttpRequest) -> HttpResponse:
    form = BatchUploadForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        return _submitted(request, form, form.cleaned_data["work_type"], form.cleaned_data["file"])
    return render(request, "dashboard/submit_batch.html", {"form": form, "specs": _public_specs()})


def _submitted(request: HttpRequest, form: Any, work_type: str, payloads: list[Any]) -> HttpResponse:
    try:
        ids = work_items_submit_batch(
            work_type=work_type,
            payloads=payloads,
            priority=form.cleaned_data.get("priority"),
            submitted_by=request.user,
        ).ids
    except ShepherdError as error:
        form.add_error(None, str(error))
        template = {RawJsonForm: "submit_raw", BatchUploadForm: "submit_batch"}.get(type(form), "submit")
        context = {"form": form, "specs": _public_specs()}
        if template == "submit":
            context["chosen"] = registry.work_type_spec(work_type)
        return render(request, f"dashboard/{template}.html", context)
    if len(ids) == 1:
        messages.success(request, f"Submitted work item #{ids[0]}.")
        return redirect("dashboard:item", work_item_id=ids[0])
    messages.success(request, f"Submitted {len(ids)} work items (#{ids[0]} to #{ids[-1]}).")
    return redirect(f"{reverse('dashboard:items')}?work_type={work_type}")
