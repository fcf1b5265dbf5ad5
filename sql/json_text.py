"""Reading the server's json and jsonb text into Python values, whatever a row holds.

Kept apart from :mod:`websurf.sql.database` (which installs :func:`load_json` as
psycopg's JSON loader) so that modules that must not import psycopg, such as the
queue's model that the supervisor imports, can still recognise an
:class:`UnreadableJson`.
"""

from __future__ import annotations

import json
import json.scanner
from typing import Any

_json_decoder = json.JSONDecoder()
_decode_json = _json_decoder.decode
# json's C scanner, one value from an offset (typeshed types its argument wrongly)
_scan_json = json.scanner.make_scanner(_json_decoder)  # type: ignore[arg-type]


class UnreadableJson(dict[str, Any]):
    """Stands in for a stored JSON value this process cannot read (see :func:`load_json`).

    A dict, so a reader that looks keys up goes on; it holds one key, ``unreadable``,
    saying why, which is what an admin command shows. A task whose payload is one fails
    alone with that reason (``Task.malformed``).
    """

    @property
    def reason(self) -> str:
        return str(self["unreadable"])


def load_json(data: bytes | bytearray | memoryview | str) -> Any:
    """json and jsonb values from the server, as ``json.loads`` reads them, cheaper.

    psycopg hands ``json.loads`` bytes, which it first sniffs for an encoding; the
    server's text is always UTF-8, so it is decoded here. jsonb's text is canonical (no
    surrounding whitespace), so json's C scanner reads it in one call, without the
    decoder's Python layers; anything it does not consume whole goes through the full
    decoder, which reads it (json with whitespace) or raises as json.loads would. A
    claimed task's payload, parsed on the claim's hot path, costs less than half.

    Valid JSON that Python cannot hold (an integer of more than 4,300 digits, nesting
    beyond the recursion limit, more than the memory left) comes back as an
    :class:`UnreadableJson` instead of an error: psycopg loads a result's rows all at
    once, so one such value used to fail the whole claim, every turn."""
    text = data if isinstance(data, str) else str(data, "utf-8")
    try:
        try:
            value, end = _scan_json(text, 0)
        except StopIteration:
            return _decode_json(text)
        if end != len(text):
            return _decode_json(text)
        return value
    except json.JSONDecodeError:
        raise
    except (ValueError, RecursionError, MemoryError) as exc:
        reason = {RecursionError: "nested too deeply", MemoryError: "out of memory"}.get(
            type(exc), str(exc).split(";")[0]
        )
        return UnreadableJson(unreadable=f"{len(text)} bytes of JSON Python cannot read: {reason}")
