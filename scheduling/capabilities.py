"""Capability matching: agents declare tags (`gpu`, `mem_gb=16`); work types require them."""

from __future__ import annotations

from collections.abc import Iterable


def _parse(tag: str) -> tuple[str, str | None]:
    name, _, value = tag.strip().partition("=")
    return name.strip(), (value.strip() if value else None)


def capabilities_missing(declared: Iterable[str], required: Iterable[str]) -> list[str]:
    """Requirements the declared capabilities do not meet. A bare requirement
    (`gpu`) needs the tag with any value; `name=value` needs that value, and a
    numeric value is met by any value at least as large (`mem_gb=16` by `mem_gb=32`)."""
    have: dict[str, str | None] = dict(_parse(tag) for tag in declared)
    missing = []
    for requirement in required:
        name, wanted = _parse(requirement)
        if name not in have or (wanted is not None and not _value_meets(have[name], wanted)):
            missing.append(requirement)
    return missing


def _value_meets(have: str | None, wanted: str) -> bool:
    if have is None:
        return False
    try:
        return float(have) >= float(wanted)
    except ValueError:
        return have == wanted
