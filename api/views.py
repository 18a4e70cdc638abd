"""The JSON API (django-ninja): submit, read, act on work items; agents and status.

Every error is `{"error": {"status", "code", "message", "details"}}` with the
matching HTTP status. A rejected request creates and changes nothing: each
endpoint validates everything before it calls a service, and the services
themselves write all or nothing.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse
from ninja import Field, Header, NinjaAPI, Query, Schema, Status
from ninja.errors import AuthenticationError, HttpError
from ninja.errors import ValidationError as RequestInvalid
from ninja.security import HttpBearer

from agents.selectors import agents_overview
from api.schemas import (
    MAX_BATCH_ITEMS,
    AgentOut,
    BatchOut,
    BatchSubmitIn,
    ErrorOut,
    ItemDetailOut,
    ItemPageOut,
    ItemSubmitIn,
    RequestIn,
    RequestOut,
    StatusOut,
    WorkTypeOut,
)
from api.services import api_token_authenticate, api_token_rate_charge
from project.exceptions import NotFound, ValidationError
from project.platform import platform_status
from scheduling import registry
from scheduling.blocking import BlockingFacts
from scheduling.models import Attempt, WorkItemStatus, WorkType
from scheduling.selectors import (
    request_graph,
    request_rollup,
    request_visible_to,
    work_item_visible_to,
    work_items_visible_to,
)
from scheduling.services import (
    ActionRefused,
    request_submit,
    work_item_operator_action,
    work_items_submit_batch,
)
from scheduling.services.ordering import requirements_split

logger = logging.getLogger("api")


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, details: Any = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.details, self.headers = status, code, message, details, headers


class BearerToken(HttpBearer):
    def authenticate(self, request: HttpRequest, token: str) -> Any:
        found = api_token_authenticate(token)
        if found is None:
            return None
        decision = api_token_rate_charge(token=found)
        if not decision.allowed:
            raise ApiError(
                429,
                "rate_limited",
                f"over this token's limit of {decision.limit} requests per minute",
                headers={"Retry-After": str(decision.retry_after_seconds)},
            )
        request.api_token = found
        return found.user


api = NinjaAPI(
    title="Shepherd API",
    version="1",
    description=(
        "Submit and follow work items. Authenticate with `Authorization: Bearer <token>` "
        "(tokens: admin, or `manage.py api_token create USER`)."
    ),
    auth=BearerToken(),
    urls_namespace="api",
    docs_decorator=login_required,
)

ERRORS = {400: ErrorOut, 401: ErrorOut, 404: ErrorOut, 429: ErrorOut}


def _error(request: HttpRequest, status: int, code: str, message: str, details: Any = None, headers=None):
    response = api.create_response(
        request, {"error": {"status": status, "code": code, "message": message, "details": details}}, status=status
    )
    for name, value in (headers or {}).items():
        response[name] = value
    return response


@api.exception_handler(ApiError)
def _api_error(request: HttpRequest, exc: ApiError) -> HttpResponse:
    return _error(request, exc.status, exc.code, exc.message, exc.details, exc.headers)


@api.exception_handler(RequestInvalid)
def _request_invalid(request: HttpRequest, exc: RequestInvalid) -> HttpResponse:
    details = [
        {"loc": [str(part) for part in error.get("loc", ())], "message": str(error.get("msg", ""))}
        for error in exc.errors
    ]
    summary = "; ".join(f"{'.'.join(d['loc'][1:]) or 'body'}: {d['message']}" for d in details[:5])
    message = f"the request does not have the documented shape: {summary}"
    return _error(request, 400, "malformed_request", message, details)


@api.exception_handler(AuthenticationError)
def _unauthenticated(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    response = _error(request, 401, "unauthenticated", "send a valid API token as 'Authorization: Bearer <token>'")
    response["WWW-Authenticate"] = "Bearer"
    return response


@api.exception_handler(HttpError)
def _http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    code = {400: "malformed_request", 404: "not_found"}.get(exc.status_code, "http_error")
    return _error(request, exc.status_code, code, str(exc))


@api.exception_handler(RequestDataTooBig)
def _too_big(request: HttpRequest, exc: RequestDataTooBig) -> HttpResponse:
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    return _error(request, 413, "too_large", f"the request body is over the limit of {limit} bytes")


@api.exception_handler(ActionRefused)
def _refused(request: HttpRequest, exc: ActionRefused) -> HttpResponse:
    return _error(request, 409, "illegal_transition", str(exc), {"status": exc.status})


@api.exception_handler(NotFound)
def _not_found(request: HttpRequest, exc: NotFound) -> HttpResponse:
    return _error(request, 404, "not_found", str(exc))


@api.exception_handler(ValidationError)
def _unprocessable(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    return _error(request, 422, "invalid_payload", str(exc))


@api.exception_handler(Exception)
def _unexpected(request: HttpRequest, exc: Exception) -> HttpResponse:
    logger.exception("API error on %s %s", request.method, request.path)
    return _error(request, 500, "internal_error", "the server failed; the error was logged")


def _query_check(request: HttpRequest, allowed: frozenset[str] = frozenset()) -> None:
    # A misspelt filter (?stauts=dead) must not silently return everything.
    unknown = sorted(set(request.GET) - allowed)
    if unknown:
        raise ApiError(400, "malformed_request", f"unknown query parameter(s): {', '.join(unknown)}")
    if any("\x00" in value for values in request.GET.lists() for value in values[1]):
        raise ApiError(400, "malformed_request", "query parameters cannot contain NUL characters")


def _actor(request: HttpRequest) -> str:
    return f"user:{request.auth.get_username()}"


ITEM_FIELDS = (
    "id",
    "work_type_id",
    "queue",
    "status",
    "blocked_reason",
    "priority",
    "attempt",
    "max_attempts",
    "progress",
    "progress_message",
    "submitted_by__username",
    "idempotency_key",
    "created_at",
    "not_before",
    "complete_by",
    "started_at",
    "finished_at",
    "cost_total",
    "progress_at",
    "heartbeat_at",
    "agent__name",
    "agent__last_heartbeat_at",
    "requirements",
)


def _item_out(row: dict[str, Any], facts: BlockingFacts | None = None) -> dict[str, Any]:
    row = dict(row)
    requirements = row.pop("requirements")
    if row["status"] == "pending":
        # Why it waits, derived now (scheduling.blocking); one facts object per response.
        row["blocked_reason"] = (facts or BlockingFacts()).reason(
            queue=row["queue"],
            work_type=row["work_type_id"],
            stored=row["blocked_reason"],
            not_before=row["not_before"],
            requirements=requirements,
        )
    row["requirements"] = requirements_split(requirements)
    row["work_type"] = row.pop("work_type_id")
    row["submitted_by"] = row.pop("submitted_by__username")
    row["agent"] = row.pop("agent__name")
    row["agent_heartbeat_at"] = row.pop("agent__last_heartbeat_at")
    return row


def _item_detail(request: HttpRequest, work_item_id: int) -> dict[str, Any]:
    item = work_item_visible_to(request.auth, work_item_id)
    attempts = Attempt.objects.filter(work_item=item).select_related("agent").order_by("number")
    row = _item_out(work_items_visible_to(request.auth).filter(pk=item.pk).values(*ITEM_FIELDS).get())
    row.update(
        payload=item.payload,
        result=item.result,
        error=item.error,
        attempts=[
            {
                "number": a.number,
                "agent": a.agent.name if a.agent else None,
                "outcome": a.outcome,
                "started_at": a.started_at,
                "finished_at": a.finished_at,
                "error": a.error,
                "cost": a.cost,
            }
            for a in attempts
        ],
    )
    return row


@api.get("/work-types", response={200: list[WorkTypeOut], **ERRORS}, tags=["work types"])
def work_types_list(request: HttpRequest):
    """Work types you can submit, with the JSON Schema each payload must satisfy."""
    _query_check(request)
    public = [name for name, spec in registry.work_type_specs().items() if not spec.internal]
    return list(WorkType.objects.filter(name__in=public, in_code=True).order_by("name"))


SUBMIT_ERRORS = {**ERRORS, 413: ErrorOut, 422: ErrorOut}


def _submit(request: HttpRequest, body: Any, payloads: list, idempotency_key: str | None) -> tuple[list[int], bool]:
    submission = work_items_submit_batch(
        work_type=body.work_type,
        payloads=payloads,
        priority=body.priority,
        not_before=body.not_before,
        complete_by=body.complete_by,
        submitted_by=request.auth,
        idempotency_key=idempotency_key,
        budget_seconds=body.budget_seconds,
        budget_seconds_total=body.budget_seconds_total,
        budget_cost=body.budget_cost,
        requirements=body.requirements,
    )
    return submission.ids, submission.created


@api.post("/items", response={200: ItemDetailOut, 201: ItemDetailOut, **SUBMIT_ERRORS}, tags=["items"])
def item_submit(
    request: HttpRequest, body: ItemSubmitIn, idempotency_key: str | None = Header(None, alias="Idempotency-Key")
):
    """Submit one item. With an `Idempotency-Key` header, a retry returns the item
    the first request created (200) instead of creating another (201)."""
    ids, created = _submit(request, body, [body.payload], idempotency_key)
    return Status(201 if created else 200, _item_detail(request, ids[0]))


@api.post("/items/batch", response={200: BatchOut, 201: BatchOut, **SUBMIT_ERRORS}, tags=["items"])
def items_submit_batch(
    request: HttpRequest, body: BatchSubmitIn, idempotency_key: str | None = Header(None, alias="Idempotency-Key")
):
    """Submit many items of one work type in one transaction: all are created or none."""
    if len(body.payloads) > MAX_BATCH_ITEMS:
        raise ApiError(413, "too_large", f"a batch holds at most {MAX_BATCH_ITEMS} items, not {len(body.payloads)}")
    ids, created = _submit(request, body, body.payloads, idempotency_key)
    return Status(201 if created else 200, {"ids": ids, "count": len(ids), "created": created})


class ItemFilters(Schema):
    status: WorkItemStatus | None = None
    work_type: str | None = None
    queue: str | None = None
    submitted_by: str | None = None
    cursor: str | None = Field(None, pattern=r"^[0-9]{1,18}$", description="next_cursor of the previous page.")
    limit: int = Field(50, ge=1, le=200)


@api.get("/items", response={200: ItemPageOut, **ERRORS}, tags=["items"])
def items_list(request: HttpRequest, filters: Query[ItemFilters]):
    """Items you may see, newest first, `limit` (1-200) at a time; follow `next_cursor`."""
    _query_check(request, frozenset(ItemFilters.model_fields))
    items = work_items_visible_to(request.auth).order_by("-id")
    for field in ("status", "work_type", "queue"):
        if getattr(filters, field):
            items = items.filter(**{"work_type_id" if field == "work_type" else field: getattr(filters, field)})
    if filters.submitted_by:
        items = items.filter(submitted_by__username=filters.submitted_by)
    if filters.cursor:
        items = items.filter(id__lt=int(filters.cursor))
    facts = BlockingFacts()
    rows = [_item_out(row, facts) for row in items.values(*ITEM_FIELDS)[: filters.limit + 1]]
    more = len(rows) > filters.limit
    rows = rows[: filters.limit]
    return {"items": rows, "next_cursor": str(rows[-1]["id"]) if more else None}


@api.get("/items/{work_item_id}", response={200: ItemDetailOut, **ERRORS}, tags=["items"])
def item_get(request: HttpRequest, work_item_id: int):
    """One item: state, progress, blocked reason, attempts, result and error."""
    _query_check(request)
    return _item_detail(request, work_item_id)


ACTION_ERRORS = {**ERRORS, 403: ErrorOut, 409: ErrorOut}


def _act(request: HttpRequest, work_item_id: int, action: str) -> dict[str, Any]:
    work_item_visible_to(request.auth, work_item_id)  # 404 unless yours (or staff)
    work_item_operator_action(work_item_id=work_item_id, action=action, actor=_actor(request))
    return _item_detail(request, work_item_id)


@api.post("/items/{work_item_id}/cancel", response={200: ItemDetailOut, **ACTION_ERRORS}, tags=["items"])
def item_cancel(request: HttpRequest, work_item_id: int):
    """Cancel an item that has not finished; a running attempt is revoked."""
    return _act(request, work_item_id, "cancel")


@api.post("/items/{work_item_id}/retry", response={200: ItemDetailOut, **ACTION_ERRORS}, tags=["items"])
def item_retry(request: HttpRequest, work_item_id: int):
    """Run the next attempt now instead of waiting out the retry backoff."""
    return _act(request, work_item_id, "retry")


@api.post("/items/{work_item_id}/requeue", response={200: ItemDetailOut, **ACTION_ERRORS}, tags=["items"])
def item_requeue(request: HttpRequest, work_item_id: int):
    """Staff only: give a dead or cancelled item one more attempt (audited)."""
    work_item_visible_to(request.auth, work_item_id)
    if not request.auth.is_staff:
        raise ApiError(403, "forbidden", "requeueing dead or cancelled items is for staff")
    return _act(request, work_item_id, "requeue")


def _request_out(request_row: Any) -> dict[str, Any]:
    rollup = request_rollup(request_row)
    graph = request_graph(request_row)
    parents: dict[int, list[int]] = {}
    for parent, child in graph["edges"]:
        parents.setdefault(child, []).append(parent)
    return {
        "id": request_row.pk,
        "name": request_row.name,
        "state": rollup["state"],
        "progress": rollup["progress"],
        "counts": rollup["counts"],
        "items": [
            {
                "id": node["id"],
                "key": node["request_key"],
                "work_type": node["work_type_id"],
                "status": node["status"],
                "progress": node["progress"],
                "depends_on": parents.get(node["id"], []),
            }
            for node in graph["nodes"]
        ],
    }


@api.post("/requests", response={201: RequestOut, **SUBMIT_ERRORS}, tags=["requests"])
def request_create(request: HttpRequest, body: RequestIn):
    """Submit many items with dependencies (a DAG). Keys, work types, payloads and
    edges are checked first; any error rejects the whole request and creates nothing."""
    spec = body.model_dump(exclude_none=True)
    return Status(201, _request_out(request_submit(spec=spec, submitted_by=request.auth)))


@api.get("/requests/{request_id}", response={200: RequestOut, **ERRORS}, tags=["requests"])
def request_get(request: HttpRequest, request_id: int):
    """A request's rolled-up state and progress, and each item with its dependencies."""
    _query_check(request)
    return _request_out(request_visible_to(request.auth, request_id))


@api.get("/agents", response={200: list[AgentOut], **ERRORS}, tags=["platform"])
def agents_list(request: HttpRequest):
    """Live agents and those that stopped within the last hour, with heartbeat age."""
    _query_check(request)
    return agents_overview()


@api.get("/status", response={200: StatusOut, **ERRORS}, tags=["platform"])
def status(request: HttpRequest):
    """The figures of `manage.py status --json` (item counts: your own unless staff)."""
    _query_check(request)
    return platform_status(request.auth)
