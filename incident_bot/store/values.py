"""What every backend converts the same way: JSON text, times to the millisecond, incident columns."""

from __future__ import annotations

import json
from datetime import datetime
from enum import Enum
from typing import Any, get_args

from pydantic_core import to_jsonable_python

from incident_bot.domain.models import Incident, ensure_utc


def to_json(value: Any) -> str:
    """Compact JSON text, non-ASCII kept; pydantic's rules for datetimes, enums and models."""
    return json.dumps(value, default=to_jsonable_python, ensure_ascii=False, separators=(",", ":"))


def from_json(text: str) -> Any:
    return json.loads(text)


def utc_ms(value: datetime) -> datetime:
    """Aware UTC, truncated to the millisecond (what every backend keeps); naive counts as UTC."""
    value = ensure_utc(value)
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def _is_time_field(annotation: Any) -> bool:
    return annotation is datetime or datetime in get_args(annotation)


# Columns named after the model's fields: a field added to Incident without a migration
# fails loudly ("no such column") instead of being silently dropped.
INCIDENT_FIELDS = tuple(Incident.model_fields)
INCIDENT_COLUMNS = tuple(name for name in INCIDENT_FIELDS if name != "number")
INCIDENT_TIMES = frozenset(n for n, f in Incident.model_fields.items() if _is_time_field(f.annotation))


def incident_values(incident: Incident) -> list[Any]:
    """The incident's INCIDENT_COLUMNS in order, enums as their values; datetimes left as they are."""
    return [value.value if isinstance(value, Enum) else value for value in (getattr(incident, n) for n in INCIDENT_COLUMNS)]
