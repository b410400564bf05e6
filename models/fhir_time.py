"""FHIR ``instant`` / ``dateTime`` text -> a point in time, with the acceptance rules of the Rust gateway.

Why this module exists: an Observation's time decides which bin of the input grid it lands in, or
whether it is used at all, so the featurizers here must accept exactly the strings that
``src/fhir/time.rs`` (``chrono::DateTime::parse_from_rfc3339``, chrono 0.4) accepts -- no more, no
less. The two pipelines used to carry their own parsers with different rules (one a strict regex, one
``datetime.fromisoformat``, which also takes ``2026-01-01T12Z``, ``20260101T120000Z`` and a
``+0100`` offset; Rust takes none of these).

Accepted (RFC 3339 ``date-time``, as chrono reads it)::

    YYYY-MM-DD (T | t | space) hh:mm:ss [.fraction] (Z | z | +hh:mm | -hh:mm)

* exactly these digits and separators (ASCII digits only, nothing before or after);
* a real calendar date, hour 00-23, minute 00-59, second 00-59 or 60 (a leap second);
* a fraction of one or more digits (chrono keeps nanoseconds, Python microseconds: the digits after
  the sixth are dropped);
* a zone: ``Z``/``z`` or an offset up to +-23:59 (the minus may also be U+2212, as chrono allows).

Everything else is not a point in time and yields ``None``: partial dates (``2026``, ``2026-01``,
``2026-01-01``), a time without a zone, a time without seconds. Scoring must not guess an hour, so the
caller counts such an Observation as unusable, as the gateway does.

Where Python cannot represent what chrono does, documented rather than guessed: a leap second
``hh:mm:60`` is read as the second after ``hh:mm:59`` (the next minute's ``:00``), and the year 0000
(valid for chrono, outside Python's ``datetime``) yields ``None``. Neither occurs in FHIR data in
practice. ``python -m models.fhir_time`` checks these rules case by case.
"""
from __future__ import annotations

import datetime as dt
import re

__all__ = ["parse_instant", "instant_seconds"]

_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?"
    r"(?:[Zz]|([+\-\u2212])(\d{2}):(\d{2}))",
    re.ASCII,
)


def parse_instant(text) -> dt.datetime | None:
    """``text`` as a timezone-aware ``datetime``, or ``None`` when it is not a date-time with a zone
    (see the module docstring for the exact rules)."""
    if not isinstance(text, str):
        return None
    m = _RFC3339.fullmatch(text)
    if m is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in m.group(1, 2, 3, 4, 5, 6))
    fraction, sign, off_h, off_m = m.group(7, 8, 9, 10)
    if year == 0 or hour > 23 or minute > 59 or second > 60:
        return None
    offset = dt.timedelta(0)
    if sign is not None:
        oh, om = int(off_h), int(off_m)
        if oh > 23 or om > 59:
            return None
        offset = dt.timedelta(hours=oh, minutes=om) * (1 if sign == "+" else -1)
    leap = second == 60
    try:
        t = dt.datetime(year, month, day, hour, minute, 59 if leap else second,
                        int((fraction or "0")[:6].ljust(6, "0")), tzinfo=dt.timezone(offset))
        return t + dt.timedelta(seconds=1) if leap else t
    except (ValueError, OverflowError):  # no such calendar date; a leap second past 9999-12-31
        return None


def instant_seconds(text) -> float | None:
    """``parse_instant`` as Unix seconds (float), or ``None``."""
    t = parse_instant(text)
    return None if t is None else t.timestamp()


def _self_test() -> None:
    """The rules above, case by case (the first four are the Rust unit test's)."""
    utc = dt.timezone.utc
    assert parse_instant("2026-01-01T12:00:00+01:00") == dt.datetime(2026, 1, 1, 11, tzinfo=utc)
    assert parse_instant("2026-01-01T11:00:00.123Z") == dt.datetime(2026, 1, 1, 11, 0, 0, 123000, tzinfo=utc)
    for partial in ("2026-01-01", "2026-01-01T11:00:00", "2026", "2026-01"):
        assert parse_instant(partial) is None, partial
    noon = dt.datetime(2026, 1, 1, 12, tzinfo=utc)
    for same in ("2026-01-01T12:00:00Z", "2026-01-01t12:00:00z", "2026-01-01 12:00:00Z",
                 "2026-01-01T12:00:00-00:00", "2026-01-01T13:00:00+01:00", "2026-01-01T11:00:00\u221201:00"):
        assert parse_instant(same) == noon, same
    assert instant_seconds("2026-01-01T12:00:00.1234567890Z") == noon.timestamp() + 0.123456
    assert parse_instant("2016-12-31T23:59:60Z") == dt.datetime(2017, 1, 1, tzinfo=utc)
    for not_rfc3339 in ("2026-01-01T12:00Z", "2026-01-01T12Z", "20260101T120000Z", "2026-01-01T12:00:00+0100",
                        "2026-01-01T12:00:00.Z", "2026-01-01T12:00:00Z\n", " 2026-01-01T12:00:00Z",
                        "2026-01-01T12:00:00+24:00", "2026-01-01T12:00:00+01:60", "2026-02-30T12:00:00Z",
                        "2026-01-01T24:00:00Z", "2026-01-01T12:60:00Z", "0000-01-01T00:00:00Z",
                        "9999-12-31T23:59:60Z", "\u0662\u0660\u0662\u0666-01-01T12:00:00Z", None, 5):
        assert parse_instant(not_rfc3339) is None, not_rfc3339


if __name__ == "__main__":
    _self_test()
    print("fhir_time self-test: ok")
