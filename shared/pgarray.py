"""Array parameters as one PostgreSQL array literal.

psycopg dumps a Python list element by element, in Python: about 1.5 µs an
element, 15 ms per 10,000 keys. A content sync passes a dozen such arrays
per table (keys to fetch, write, verify and record, hashes, ledger
entries, undo images), so on 10,000 changed rows that was a tenth of its
write path. Most of these elements never need quoting in PostgreSQL's
array syntax — integers, booleans, UUIDs and the text keys of integer or
uuid columns — so such a list is joined into one ``{…}`` string at C speed
and sent as an untyped parameter; the ``%s::type[]`` cast every such
placeholder carries gives it its type, exactly as it did the list.
Anything else (text that needs quoting, other types, mixed lists) goes to
psycopg unchanged, so the result is the same array either way.
"""

from __future__ import annotations

import re
from typing import Any, Sequence
from uuid import UUID

# Characters an unquoted array element may hold here: never a delimiter,
# brace, quote, backslash or space, and never spelling NULL.
_PLAIN_TEXT = re.compile(r"[0-9A-Fa-f.:+-]+(?:,[0-9A-Fa-f.:+-]+)*")
_NONE = type(None)


def _bool(value: bool | None) -> str:
    return "NULL" if value is None else "t" if value else "f"


def _other(value: int | UUID | None) -> str:
    return "NULL" if value is None else str(value)


def array(values: Sequence[Any]) -> Any:
    """``values`` as a parameter for a ``%s::type[]`` placeholder: an array
    literal when no element needs quoting, else the list itself."""
    kinds = set(map(type, values))
    if kinds <= {str}:
        joined = ",".join(values)
        if not values or (_PLAIN_TEXT.fullmatch(joined) and joined.count(",") == len(values) - 1):
            return "{" + joined + "}"
        return list(values)
    if kinds <= {int} or kinds <= {UUID}:
        return "{" + ",".join(map(str, values)) + "}"
    if kinds <= {bool, _NONE}:
        return "{" + ",".join(map(_bool, values)) + "}"
    if kinds <= {int, _NONE} or kinds <= {UUID, _NONE}:
        return "{" + ",".join(map(_other, values)) + "}"
    return list(values)


def columns(rows: Sequence[Sequence[Any]], width: int) -> list[Any]:
    """The first ``width`` columns of ``rows`` (e.g. keys), one ``array``
    parameter per column: the parameters of an ``unnest(%s::t[], …)``."""
    return [array([row[i] for row in rows]) for i in range(width)]
