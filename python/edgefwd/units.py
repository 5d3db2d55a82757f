"""Sizes and durations as people write them: ``2GiB``, ``500MB``, ``7d``, ``1h30m``, ``250ms``.

Sizes
    A whole number of bytes (``1048576``) or a number and a unit, with or without a space:
    ``B``; ``kB MB GB TB`` (powers of 1000); ``KiB MiB GiB TiB`` (powers of 1024). Units
    are case-insensitive (``2gib`` is ``2GiB``); a fraction is allowed when the result is
    a whole number of bytes (``1.5GiB``). A bare ``K``/``M``/``G``/``T`` is refused because
    it is ambiguous between the two families.

Durations
    A number of seconds (``30``, ``0.5``) or one or more number+unit parts, largest unit
    first, each unit at most once: ``w d h m s ms us`` (lowercase; ``m`` is minutes).
    Examples: ``30s``, ``5m``, ``7d``, ``250ms``, ``1h30m``, ``1.5h``, ``1m 30s``.

``format_size`` / ``format_duration`` write values back in these forms; with
``exact=True`` (the default) parsing the output gives back the same value (durations to
the microsecond).
"""

from __future__ import annotations

import re
from decimal import Decimal

__all__ = [
    "UnitError",
    "SIZE_FORMS",
    "DURATION_FORMS",
    "parse_size",
    "parse_duration",
    "format_size",
    "format_duration",
]

SIZE_FORMS = (
    "a whole number of bytes, or a number and a unit: B, kB, MB, GB, TB (powers of 1000) "
    "or KiB, MiB, GiB, TiB (powers of 1024), e.g. 500MB, 2GiB, 1.5 GiB"
)
DURATION_FORMS = (
    "a number of seconds, or number+unit parts largest first with units "
    "w, d, h, m, s, ms, us, e.g. 30s, 250ms, 5m, 1h30m, 7d"
)

class UnitError(ValueError):
    """A size or duration that cannot be read. ``reason`` says why without quoting the value."""

    def __init__(self, value: object, reason: str, forms: str) -> None:
        self.reason = reason
        self.forms = forms
        super().__init__(f"{value!r}: {reason} (expected {forms})")


_KIB, _MIB, _GIB, _TIB = 1 << 10, 1 << 20, 1 << 30, 1 << 40
_SIZE_UNITS = {
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": _KIB,
    "mib": _MIB,
    "gib": _GIB,
    "tib": _TIB,
}
_BINARY = (("TiB", _TIB), ("GiB", _GIB), ("MiB", _MIB), ("KiB", _KIB))
_DECIMAL = (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("kB", 10**3))

_SIZE_RE = re.compile(r"\s*(\d+(?:\.\d+)?|\.\d+)\s*([A-Za-z]*)\s*")
_NUMBER_RE = re.compile(r"\s*(\d+(?:\.\d+)?|\.\d+)\s*")

# Duration units in microseconds, largest first (the order parts must come in).
_US_PER = {"w": 604_800_000_000, "d": 86_400_000_000, "h": 3_600_000_000,
           "m": 60_000_000, "s": 1_000_000, "ms": 1_000, "us": 1}
_UNIT_ORDER = list(_US_PER)
_PART_RE = re.compile(r"(\d+(?:\.\d+)?|\.\d+)\s*(ms|us|µs|w|d|h|m|s)")


def parse_size(value: str | int) -> int:
    """Return a size in bytes. Raises UnitError (a ValueError) naming the accepted forms."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise UnitError(value, "not a size", SIZE_FORMS)
    if isinstance(value, int):
        if value < 0:
            raise UnitError(value, "a size cannot be negative", SIZE_FORMS)
        return value
    m = _SIZE_RE.fullmatch(value)
    if not m:
        reason = "a size cannot be negative" if value.strip().startswith("-") else "not a size"
        raise UnitError(value, reason, SIZE_FORMS)
    number, unit = m.group(1), m.group(2)
    if not unit:
        if "." in number:
            raise UnitError(value, "a number without a unit is bytes and must be whole", SIZE_FORMS)
        return int(number)
    factor = _SIZE_UNITS.get(unit.lower())
    if factor is None:
        reason = f"unknown unit {unit!r}"
        if unit.lower() in ("k", "m", "g", "t"):
            dec = "kB" if unit.lower() == "k" else unit.upper() + "B"
            reason += f": write {dec} (powers of 1000) or {unit.upper()}iB (powers of 1024)"
        raise UnitError(value, reason, SIZE_FORMS)
    total = Decimal(number) * factor
    if total != total.to_integral_value():
        raise UnitError(value, "not a whole number of bytes", SIZE_FORMS)
    return int(total)


def parse_duration(value: str | int | float) -> float:
    """Return a duration in seconds. Raises UnitError (a ValueError) naming the accepted forms."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise UnitError(value, "not a duration", DURATION_FORMS)
    if isinstance(value, (int, float)):
        if value != value or value in (float("inf"), float("-inf")):
            raise UnitError(value, "not a finite duration", DURATION_FORMS)
        if value < 0:
            raise UnitError(value, "a duration cannot be negative", DURATION_FORMS)
        return float(value)
    if _NUMBER_RE.fullmatch(value):
        return float(Decimal(value.strip()))
    text = value.strip()
    if not text:
        raise UnitError(value, "empty", DURATION_FORMS)
    if text.startswith("-"):
        raise UnitError(value, "a duration cannot be negative", DURATION_FORMS)
    pos, total, last_rank = 0, Decimal(0), -1
    while pos < len(text):
        m = _PART_RE.match(text, pos)
        if not m:
            raise UnitError(value, "not a duration", DURATION_FORMS)
        unit = "us" if m.group(2) == "µs" else m.group(2)
        rank = _UNIT_ORDER.index(unit)
        if rank <= last_rank:
            raise UnitError(value, "write each unit once, largest first, e.g. 1h30m", DURATION_FORMS)
        last_rank = rank
        total += Decimal(m.group(1)) * _US_PER[unit]
        pos = m.end()
        while pos < len(text) and text[pos] == " ":
            pos += 1
    return float(total / 1_000_000)


def format_size(n: int, *, exact: bool = True) -> str:
    """Write a byte count for people.

    exact=True: a form that parses back to ``n`` exactly (``2GiB``, ``500MB``,
    ``1.5GiB``, else ``1234B``). exact=False: binary units, two decimals at most
    (``1.18MiB``), for status output.
    """
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError("format_size takes an int number of bytes")
    sign, n = ("-", -n) if n < 0 else ("", n)
    if not exact:
        for name, unit in _BINARY:
            if n >= unit:
                text = f"{n / unit:.2f}".rstrip("0").rstrip(".")
                return f"{sign}{text}{name}"
        return f"{sign}{n}B"
    if n == 0:
        return "0B"
    for name, unit in _BINARY + _DECIMAL:
        if n % unit == 0:
            return f"{sign}{n // unit}{name}"
    for name, unit in _BINARY:
        if n >= unit and (n * 1000) % unit == 0:
            text = format(Decimal(n) / unit, "f").rstrip("0").rstrip(".")
            return f"{sign}{text}{name}"
    return f"{sign}{n}B"


def format_duration(seconds: float, *, exact: bool = True) -> str:
    """Write a duration for people: ``7d``, ``1h30m``, ``5ms``, ``1s500ms``.

    exact=True keeps every part down to the microsecond (parses back to the same value,
    to the microsecond). exact=False keeps the two largest parts, rounded (``1h2m``).
    """
    us = round(seconds * 1_000_000)
    sign = "-" if us < 0 else ""
    us = abs(us)
    if us == 0:
        return "0s"
    units = [u for u in _UNIT_ORDER if u != "w"]  # 7d reads better than 1w
    if not exact:
        top = next(i for i, u in enumerate(units) if us >= _US_PER[u])
        gran = _US_PER[units[min(top + 1, len(units) - 1)]]
        if us >= 1_000:
            gran = max(gran, 1_000)  # below a millisecond only for tiny values
        us = round(us / gran) * gran
    parts = []
    for u in units:
        q, us = divmod(us, _US_PER[u])
        if q:
            parts.append(f"{q}{u}")
    return sign + "".join(parts)
