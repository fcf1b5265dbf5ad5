"""JSON that websurf stores: objects that PostgreSQL's jsonb and every reader accept.

Python's ``json`` accepts more than websurf can keep. PostgreSQL's jsonb refuses
``\\u0000`` in strings and has no NaN or Infinity (``1e400`` parses to infinity);
psycopg cannot encode a lone surrogate (``"\\ud800"``, or undecodable bytes in a
command-line argument) as UTF-8; Python refuses to read an integer of more than
``MAX_INTEGER_DIGITS`` digits (so a worker could not load such a payload back); and
deep nesting exhausts Python's recursion in every reader. Each of these used to surface
as a traceback, or worse as a row the worker could not read. ``parse_object`` and
``problem`` name the first such thing in one line; the walk is iterative, so checking a
deep value cannot itself overflow.
"""

from __future__ import annotations

import json
import math
from typing import Any

MAX_DEPTH = 64  # arrays and objects inside one another (the database's limit, 0023)
MAX_INTEGER_DIGITS = 4300  # Python's default int_max_str_digits
_MAX_INTEGER = 10**MAX_INTEGER_DIGITS


class PayloadError(ValueError):
    """JSON websurf cannot store; the message completes "<what> …" in one line."""


def _constant(name: str) -> Any:
    raise PayloadError(f"has {name}, which JSON has no number for")


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise PayloadError(f"has the number {text}, out of range")
    return value


def _int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_INTEGER_DIGITS:
        raise PayloadError(f"has an integer of {digits} digits (at most {MAX_INTEGER_DIGITS})")
    return int(text)


def parse_object(text: str) -> dict[str, Any]:
    """``text`` as a JSON object websurf can store, or PayloadError saying why not."""
    try:
        value = json.loads(text, parse_constant=_constant, parse_float=_float, parse_int=_int)
    except RecursionError:
        raise PayloadError(f"is nested more than {MAX_DEPTH} levels deep") from None
    except json.JSONDecodeError as exc:
        raise PayloadError(f"is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise PayloadError(f"must be a JSON object, not {type(value).__name__}")
    reason = problem(value)
    if reason:
        raise PayloadError(reason)
    return value


def _string_problem(text: str) -> str | None:
    if "\x00" in text:
        return "contains \\u0000, which PostgreSQL cannot store"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "contains a lone surrogate (not valid Unicode)"
    return None


def problem(value: Any) -> str | None:
    """Why ``value`` (already parsed) cannot be stored as JSON, or None when it can."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            reason = _string_problem(item)
            if reason:
                return reason
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, int):
            if abs(item) >= _MAX_INTEGER:
                return f"has an integer of more than {MAX_INTEGER_DIGITS} digits"
        elif isinstance(item, float):
            if not math.isfinite(item):
                return f"has {item}, which JSON has no number for"
        elif isinstance(item, dict | list | tuple):
            if depth >= MAX_DEPTH:
                return f"is nested more than {MAX_DEPTH} levels deep"
            if isinstance(item, dict):
                for key, child in item.items():
                    # json.dumps turns number, boolean and null keys into strings
                    if not isinstance(key, str | int | float | bool) and key is not None:
                        return f"has a key JSON cannot hold: {key!r}"
                    stack.append((key, depth + 1))
                    stack.append((child, depth + 1))
            else:
                stack.extend((child, depth + 1) for child in item)
        else:
            return f"is not JSON-serialisable: it holds a {type(item).__name__}"
    return None
