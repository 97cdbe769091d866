"""Bounded types for the values clients send: declared once, used by every route and schema.

Whatever reaches the database must fit it: integers in a signed 64-bit column (SQLite and
Postgres `BIGINT` both stop at 2**63 - 1, and a larger value is an overflow error, not "no
row"), offsets under a documented maximum, and text without NUL characters (Postgres refuses
them in `TEXT`/`VARCHAR`, SQLite stores them and truncates at them in places). Each violation
is a 422 from validation, before a handler runs.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Path, Query
from pydantic import AfterValidator

# The largest value a signed 64-bit integer column holds (SQLite INTEGER, Postgres BIGINT).
MAX_DB_INT = 2**63 - 1
# The deepest page a list can be read at; past it, narrow the list with its filters
# (`since`/`until` on logs) instead. Deep offsets make the database scan every skipped row.
MAX_OFFSET = 1_000_000
NUL_MESSAGE = "must not contain NUL (\\x00) characters"


def reject_nul(value: str) -> str:
    """`value` unchanged, or a ValueError when it holds a NUL character."""
    if "\x00" in value:
        raise ValueError(NUL_MESSAGE)
    return value


def to_utc(moment: datetime) -> datetime:
    """`moment` in UTC; a naive time is taken as UTC, like the stored timestamps.

    Postgres refuses offsets beyond +-15:59 that Python accepts (up to +-23:59), and
    comparing in one zone is what SQLite (which keeps no offset) needs anyway.
    """
    try:
        return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    except OverflowError as exc:  # e.g. 0001-01-01T00:00+01:00 is before year 1 in UTC
        raise ValueError("date out of range once converted to UTC") from exc


# Text that is stored or compared in the database.
DbText = Annotated[str, AfterValidator(reject_nul)]
# A point in time a query compares with stored timestamps.
UtcDateTime = Annotated[datetime, AfterValidator(to_utc)]

IdPath = Annotated[int, Path(ge=1, le=MAX_DB_INT, description="A row id (1 to 2**63 - 1)")]
IdQuery = Annotated[int | None, Query(ge=1, le=MAX_DB_INT, description="A row id (1 to 2**63 - 1)")]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description=f"Rows to skip (at most {MAX_OFFSET})")]
TextQuery = Annotated[DbText | None, Query(max_length=256)]


def limit_query(maximum: int) -> Any:
    """The `limit` query parameter of a list of at most `maximum` rows per page."""
    return Query(ge=1, le=maximum, description=f"Rows per page (1 to {maximum})")
