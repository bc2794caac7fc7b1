"""Readers of JSON values for the events: raw value to typed value, or
``ProtocolError("malformed_event")`` naming the field."""

from __future__ import annotations

import math
from typing import Any

from streamser.errors import ProtocolError


def malformed(name: str, expected: str, value: Any) -> ProtocolError:
    return ProtocolError(
        "malformed_event", f"field {name!r} must be {expected}, got {value!r:.80}"
    )


def read_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise malformed(name, "an integer", value)
    return value


def read_float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise malformed(name, "a number", value)
    if not math.isfinite(value):
        raise malformed(name, "a finite number", value)
    return float(value)


def read_str(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise malformed(name, "a string", value)
    return value


def read_optional_str(name: str, value: Any) -> str | None:
    return None if value is None else read_str(name, value)


def read_optional_float(name: str, value: Any) -> float | None:
    return None if value is None else read_float(name, value)


def read_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise malformed(name, "true or false", value)
    return value


def read_object(name: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise malformed(name, "an object", value)
    return value


def read_scores(name: str, value: Any) -> dict[str, float]:
    return {
        str(k): read_float(f"{name}.{k}", v)
        for k, v in read_object(name, value).items()
    }


def read_counts(name: str, value: Any) -> dict[str, int]:
    return {
        str(k): read_int(f"{name}.{k}", v) for k, v in read_object(name, value).items()
    }


def read_optional_int(name: str, value: Any) -> int | None:
    return None if value is None else read_int(name, value)


def read_list(name: str, value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise malformed(name, "a list", value)
    return value


def read_ints(name: str, value: Any) -> tuple[int, ...]:
    return tuple(read_int(f"{name}[]", item) for item in read_list(name, value))
