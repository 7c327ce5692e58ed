from __future__ import annotations

import pytest

from bigviz import SizeError, format_size, parse_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("200MB", 200_000_000),
        ("200MiB", 200 * 2**20),
        ("1.5GiB", int(1.5 * 2**30)),
        ("10GB", 10 * 10**9),
        ("10GiB", 10 * 2**30),
        ("4096", 4096),
        ("5kb", 5000),
        (" 2 TB ", 2 * 10**12),
        (123, 123),
        (0, 0),
    ],
)
def test_parse_size_decimal_and_binary(text: int | str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["", "MB", "12XB", "-5MB", "1.2.3GB", "5M", -1, True, 1.5, None])
def test_parse_size_rejects_with_value_named(bad: object) -> None:
    with pytest.raises(SizeError) as info:
        parse_size(bad)  # type: ignore[arg-type]
    assert repr(bad) in str(info.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1.001MB", 1_001_000),  # as floats: 1000999.9999999999
        ("4.35MB", 4_350_000),
        ("9007199254740993", 9_007_199_254_740_993),  # above 2**53: a float drops the 3
        ("5.", 5),
        (".5kB", 500),
        ("0.0000001B", 0),  # rounded down to a whole byte
    ],
)
def test_parse_size_is_exact(text: str, expected: int) -> None:
    assert parse_size(text) == expected


def test_parse_size_with_absurdly_many_digits_is_a_size_error() -> None:
    with pytest.raises(SizeError, match="too many digits"):
        parse_size("9" * 5000 + "MB")


def test_ambiguous_unit_suggests_both_spellings() -> None:
    with pytest.raises(SizeError, match=r"5MB.*5MiB"):
        parse_size("5M")


def test_format_size() -> None:
    assert format_size(4448772096) == "4.1 GiB"
    assert format_size(512 * 2**20) == "512.0 MiB"
    assert format_size(-3 * 2**20) == "-3.0 MiB"
    assert format_size(1000, binary=False) == "1.0 kB"
    assert format_size(12) == "12 B"
    assert format_size(None) == "—"
