"""Sizes and durations as people write them, and back."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgefwd.units import (
    DURATION_FORMS,
    SIZE_FORMS,
    UnitError,
    format_duration,
    format_size,
    parse_duration,
    parse_size,
)

GiB, MiB, KiB = 2**30, 2**20, 2**10


@pytest.mark.parametrize("text,expected", [
    ("2GiB", 2 * GiB), ("500MB", 500 * 10**6), ("1.5 GiB", 1536 * MiB), ("1.5GiB", 1536 * MiB),
    ("0", 0), ("1048576", MiB), ("512KiB", 512 * KiB), ("1kB", 1000), ("1KB", 1000),
    ("2gib", 2 * GiB), ("3TB", 3 * 10**12), ("1TiB", 2**40), ("10B", 10), (" 7 MiB ", 7 * MiB),
    (4096, 4096),
])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text,fragment", [
    ("2G", "write GB (powers of 1000) or GiB (powers of 1024)"),
    ("2k", "write kB (powers of 1000) or KiB (powers of 1024)"),
    ("lots", "not a size"),
    ("-1", "cannot be negative"),
    (-1, "cannot be negative"),
    ("1.5", "must be whole"),
    ("0.1KiB", "not a whole number of bytes"),
    ("2 GiB GiB", "not a size"),
    ("", "not a size"),
    (True, "not a size"),
    (1.5, "not a size"),
])
def test_parse_size_errors_say_what_is_accepted(text, fragment):
    with pytest.raises(UnitError) as info:
        parse_size(text)
    assert fragment in str(info.value)
    assert SIZE_FORMS in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("text,expected", [
    ("30s", 30.0), ("5m", 300.0), ("7d", 604800.0), ("250ms", 0.25), ("1h30m", 5400.0),
    ("1h 30m", 5400.0), ("1.5h", 5400.0), ("2w", 1209600.0), ("100us", 0.0001), ("100µs", 0.0001),
    ("1m30s500ms", 90.5), ("45", 45.0), ("0.5", 0.5), (10, 10.0), (2.5, 2.5), ("0s", 0.0),
])
def test_parse_duration(text, expected):
    assert parse_duration(text) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("text,fragment", [
    ("7 days", "not a duration"),
    ("30S", "not a duration"),
    ("1:30", "not a duration"),
    ("30m1h", "largest first"),
    ("1h1h", "largest first"),
    ("-5s", "cannot be negative"),
    (-1, "cannot be negative"),
    ("", "empty"),
    (float("nan"), "not a finite duration"),
    (True, "not a duration"),
])
def test_parse_duration_errors_say_what_is_accepted(text, fragment):
    with pytest.raises(UnitError) as info:
        parse_duration(text)
    assert fragment in str(info.value)
    assert DURATION_FORMS in str(info.value)


@pytest.mark.parametrize("n,text", [
    (0, "0B"), (2 * GiB, "2GiB"), (500 * 10**6, "500MB"), (1536 * MiB, "1536MiB"),
    (1000, "1kB"), (1024, "1KiB"), (1234, "1234B"), (1152, "1.125KiB"), (7, "7B"),
])
def test_format_size_exact(n, text):
    assert format_size(n) == text


def test_format_size_for_people():
    assert format_size(1234567, exact=False) == "1.18MiB"
    assert format_size(2 * GiB, exact=False) == "2GiB"
    assert format_size(999, exact=False) == "999B"


@pytest.mark.parametrize("s,text", [
    (0, "0s"), (30, "30s"), (300, "5m"), (604800, "7d"), (0.005, "5ms"), (5400, "1h30m"),
    (90.5, "1m30s500ms"), (0.0001, "100us"), (86400 + 1, "1d1s"),
])
def test_format_duration_exact(s, text):
    assert format_duration(s) == text


def test_format_duration_for_people():
    assert format_duration(3725.4, exact=False) == "1h2m"
    assert format_duration(0.0123456, exact=False) == "12ms"
    assert format_duration(59.9, exact=False) == "59s900ms"


@given(st.integers(min_value=0, max_value=2**62))
def test_size_round_trip(n):
    assert parse_size(format_size(n)) == n


@given(st.integers(min_value=0, max_value=10**15))
def test_duration_round_trip_to_the_microsecond(us):
    seconds = us / 1_000_000
    assert round(parse_duration(format_duration(seconds)) * 1_000_000) == us


@given(st.integers(min_value=0, max_value=2**50), st.sampled_from(["B", "kB", "MiB", "GB", "GiB"]))
def test_parse_then_format_keeps_the_value(n, unit):
    value = parse_size(f"{n}{unit}")
    assert parse_size(format_size(value)) == value
