"""Byte sizes: parse ``"200MB"`` / ``"1.5GiB"`` and format bytes for people.

Decimal units (kB, MB, GB, TB) are powers of 1000, binary units (KiB, MiB, GiB, TiB)
powers of 1024, as in huggingface_hub (``"200MB"`` is 200,000,000 bytes). bigviz also
accepts binary units, which huggingface_hub rejects.
"""

from __future__ import annotations

import re

from bigviz._errors import ConfigError, SizeError

__all__ = ["format_size", "parse_max_memory", "parse_size", "printable"]

_UNITS: dict[str, int] = {
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
    "TIB": 2**40,
}
_SIZE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([A-Za-z]*)\s*$")


def parse_size(size: int | str) -> int:
    """Parse a size into bytes.

    Args:
        size: bytes as an ``int``, or a string such as ``"200MB"`` (decimal),
            ``"1.5GiB"`` (binary) or ``"4096"``. Units are case-insensitive.

    Returns:
        The size in bytes (rounded down to a whole byte).

    Raises:
        SizeError: for negative numbers, booleans, unknown units or anything else.

    Example:
        >>> parse_size("200MB"), parse_size("1MiB"), parse_size(42)
        (200000000, 1048576, 42)
    """
    if isinstance(size, bool) or not isinstance(size, (int, str)):
        raise SizeError(
            f"size {size!r} must be an int number of bytes or a string like '200MB' or '1.5GiB'"
        )
    if isinstance(size, int):
        if size < 0:
            raise SizeError(f"size {size!r} is negative; give a number of bytes >= 0")
        return size
    match = _SIZE_RE.match(size)
    if not match:
        raise SizeError(
            f"size {size!r} is not understood; write a number and a unit, e.g. '200MB' "
            f"(decimal) or '200MiB' (binary); units: {', '.join(_pretty_units())}"
        )
    number, unit = match.groups()
    unit_key = (unit or "B").upper()
    if unit_key == "K" or unit_key == "M" or unit_key == "G" or unit_key == "T":
        raise SizeError(
            f"size {size!r} has an ambiguous unit {unit!r}; write {number}{unit.upper()}B "
            f"(decimal) or {number}{unit.upper()}iB (binary)"
        )
    if unit_key not in _UNITS:
        raise SizeError(
            f"size {size!r} has an unknown unit {unit!r}; use one of {', '.join(_pretty_units())}"
        )
    # exact integer arithmetic: as floats, 1.001 * 10**6 is 1000999.9999999999
    whole, _, frac = number.partition(".")
    scale: int = 10 ** len(frac)
    try:
        mantissa = int(whole or "0") * scale + int(frac or "0")
    except ValueError:  # more digits than int() converts (sys.set_int_max_str_digits)
        raise SizeError(f"size {size[:40]!r}… has too many digits") from None
    return mantissa * _UNITS[unit_key] // scale


def _pretty_units() -> list[str]:
    return ["B", "kB", "MB", "GB", "TB", "KiB", "MiB", "GiB", "TiB"]


def format_size(n: float | None, *, binary: bool = True, precision: int = 1) -> str:
    """Format a byte count for people, in binary units by default.

    Args:
        n: bytes (may be negative, for differences); ``None`` gives ``"—"``.
        binary: MiB/GiB (default) or MB/GB.
        precision: digits after the point for units above bytes.

    Returns:
        A short string such as ``"4.1 GiB"``.

    Example:
        >>> format_size(4448772096)
        '4.1 GiB'
        >>> format_size(200_000_000, binary=False)
        '200.0 MB'
    """
    if n is None:
        return "—"
    base = 1024.0 if binary else 1000.0
    if binary:
        names = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]
    else:
        names = ["B", "kB", "MB", "GB", "TB", "PB"]
    value = float(n)
    sign = "-" if value < 0 else ""
    value = abs(value)
    idx = 0
    while value >= base and idx < len(names) - 1:
        value /= base
        idx += 1
    if idx == 0:
        return f"{sign}{int(value)} B"
    return f"{sign}{value:.{precision}f} {names[idx]}"


def parse_max_memory(text: str | None) -> dict[int | str, str] | None:
    """Per-device memory caps from text: ``"cpu=2GB,0=10GB"`` → ``{"cpu": "2GB", 0: "10GB"}``.

    The form the CLI's ``--max-memory``, the magic and the dashboard accept; sizes are
    checked here, so a bad one fails before anything runs.

    Raises:
        ConfigError: naming the item that is not ``DEVICE=SIZE``.
        SizeError: for a size that does not parse.

    Example:
        >>> parse_max_memory("cpu=2GB,0=10GB")
        {'cpu': '2GB', 0: '10GB'}
    """
    if text is None:
        return None
    out: dict[int | str, str] = {}
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise ConfigError(f"max memory {text!r} is empty; write e.g. cpu=2GB,0=10GB")
    for item in items:
        dev, sep, size = item.partition("=")
        dev, size = dev.strip(), size.strip()
        if not sep or not dev or not size:
            raise ConfigError(
                f"--max-memory item {item!r} is not DEVICE=SIZE; write e.g. cpu=2GB,0=10GB"
            )
        parse_size(size)  # a clear SizeError now, not in the middle of a sweep
        key: int | str = int(dev) if dev.isdigit() else dev
        out[key] = size
    return out


#: control characters never reach the terminal (ESC/OSC sequences in a tensor or phase
#: name could retitle the window, clear the screen or forge output): shown escaped instead
_UNPRINTABLE = {c: f"\\x{c:02x}" for c in (*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0))
                if chr(c) not in "\t\n\r"}


def printable(text: str) -> str:
    r"""``text`` with control characters (ESC, BEL, C1 codes…) shown as ``\xNN``.

    Example:
        >>> printable("w\x1b]0;pwned\x07.weight")
        'w\\x1b]0;pwned\\x07.weight'
    """
    return text.translate(_UNPRINTABLE)
