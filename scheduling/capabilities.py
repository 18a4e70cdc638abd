"""Capability matching: agents declare tags (`gpu`, `mem_gb=16`); work types require them."""

from __future__ import annotations

import re
from collections.abc import Iterable

_TAG = re.compile(r"[A-Za-z0-9_.:-]{1,60}")


def _parse(tag: str) -> tuple[str, str | None]:
    name, _, value = tag.strip().partition("=")
    return name.strip(), (value.strip() if value else None)


def requirement_parse(tag: str) -> tuple[str, str | None]:
    """`gpu` -> ("gpu", None), `mem_gb=16` -> ("mem_gb", "16"); ValueError if malformed."""
    name, value = _parse(tag)
    if not _TAG.fullmatch(name) or (value is not None and not _TAG.fullmatch(value)):
        raise ValueError("a tag is a name, or name=value, of letters, digits, '_', '.', ':' or '-'")
    return name, value


def capabilities_satisfy(declared: Iterable[str], required: Iterable[str]) -> bool:
    return not capabilities_missing(declared, required)


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
