"""Work types declared in code with @work_type; the DB mirrors them (WorkType rows)."""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jsonschema
from django.conf import settings

from project.exceptions import ValidationError

Handler = Callable[[Any, dict], Any]


@dataclass(frozen=True)
class WorkTypeSpec:
    name: str
    handler: Handler
    queue: str
    description: str = ""
    priority: int = 5
    max_attempts: int = 3
    budget_seconds: int | None = None
    budget_seconds_total: int | None = None
    budget_cost: float | None = None
    stall_after: int | None = None
    max_stalls: int = 2
    deadline_action: str = "escalate"
    capabilities: tuple[str, ...] = ()
    payload_schema: dict = field(default_factory=lambda: {"type": "object"})
    # Internal types are submitted by platform code only (e.g. the django.tasks
    # backend), never through the API, forms or commands.
    internal: bool = False


_REGISTRY: dict[str, WorkTypeSpec] = {}


def work_type(
    name: str,
    *,
    queue: str = "default",
    description: str = "",
    priority: int = 5,
    max_attempts: int = 3,
    budget_seconds: int | None = None,
    budget_seconds_total: int | None = None,
    budget_cost: float | None = None,
    stall_after: int | None = None,
    max_stalls: int = 2,
    deadline_action: str = "escalate",
    capabilities: tuple[str, ...] | list[str] = (),
    payload_schema: dict | None = None,
    internal: bool = False,
) -> Callable[[Handler], Handler]:
    """Declare a handler as a work type. `queue` must be a queue in scheduling.routing."""
    schema = payload_schema or {"type": "object"}
    jsonschema.Draft202012Validator.check_schema(schema)
    if not 0 <= priority <= 9:
        raise ValueError(f"{name}: priority must be 0-9")
    if max_attempts < 1:
        raise ValueError(f"{name}: max_attempts must be at least 1")
    if deadline_action not in ("escalate", "cancel"):
        raise ValueError(f"{name}: deadline_action must be 'escalate' or 'cancel'")

    def register(handler: Handler) -> Handler:
        _REGISTRY[name] = WorkTypeSpec(
            name=name,
            handler=handler,
            queue=queue,
            description=description or (handler.__doc__ or "").strip(),
            priority=priority,
            max_attempts=max_attempts,
            budget_seconds=budget_seconds,
            budget_seconds_total=budget_seconds_total,
            budget_cost=budget_cost,
            stall_after=stall_after,
            max_stalls=max_stalls,
            deadline_action=deadline_action,
            capabilities=tuple(capabilities),
            payload_schema=schema,
            internal=internal,
        )
        return handler

    return register


# Work types the platform itself declares, loaded whatever the settings list.
BUILTIN_WORK_TYPE_MODULES = ("scheduling.tasks_backend",)


def load_work_type_modules() -> None:
    for module in (*BUILTIN_WORK_TYPE_MODULES, *settings.SHEPHERD_WORK_TYPE_MODULES):
        importlib.import_module(module)


def work_type_specs() -> dict[str, WorkTypeSpec]:
    return dict(_REGISTRY)


def work_type_spec(name: str) -> WorkTypeSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise ValidationError(f"unknown work type {name!r} (known: {known})") from None


@functools.cache
def _validator(name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(_REGISTRY[name].payload_schema)


def text_without_nul(value: Any, what: str) -> None:
    """PostgreSQL cannot store NUL characters in text or jsonb: refuse them up front
    with a clear error instead of failing inside the INSERT."""
    if isinstance(value, str):
        if "\x00" in value:
            raise ValidationError(f"{what} contains a NUL character (\\u0000), which cannot be stored")
    elif isinstance(value, dict):
        for key, item in value.items():
            text_without_nul(key, what)
            text_without_nul(item, what)
    elif isinstance(value, list):
        for item in value:
            text_without_nul(item, what)


def payload_validate(spec: WorkTypeSpec, payload: Any) -> dict:
    """Return the payload with schema defaults filled in, or raise ValidationError."""
    if not isinstance(payload, dict):
        raise ValidationError(f"{spec.name}: payload must be a JSON object, not {type(payload).__name__}")
    text_without_nul(payload, f"{spec.name}: payload")
    validator = (
        _validator(spec.name)
        if _REGISTRY.get(spec.name) is spec
        else jsonschema.Draft202012Validator(spec.payload_schema)
    )
    error = jsonschema.exceptions.best_match(validator.iter_errors(payload))
    if error is not None:
        where = "payload" + "".join(f"[{p!r}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
        raise ValidationError(f"{spec.name}: {where}: {error.message}")
    filled = dict(payload)
    for key, prop in spec.payload_schema.get("properties", {}).items():
        if key not in filled and "default" in prop:
            filled[key] = prop["default"]
    return filled
