"""Bounded, linear-time parsers for the short texts users type (numbers, lists, index ranges).

Every parser here scans its input once, character by character (no backtracking regular
expression), refuses anything longer than :data:`MAX_FIELD_CHARS` before looking at it, and
quotes at most :data:`QUOTE_CHARS` characters of a bad input in its error message, so a pasted
megabyte costs microseconds and sends back a one-line error.
"""
from __future__ import annotations

import math

__all__ = ["MAX_FIELD_CHARS", "QUOTE_CHARS", "quote", "check_length", "parse_number", "parse_int",
           "split_fields", "parse_int_list", "parse_index_ranges"]

#: the longest text any field accepts (a fusion_selection, a layer list, a seeds list)
MAX_FIELD_CHARS = 200
#: how much of a bad input an error message repeats
QUOTE_CHARS = 40

_DIGITS = frozenset("0123456789")


def quote(text, limit: int = QUOTE_CHARS) -> str:
    """``repr`` of at most ``limit`` characters of ``text``, saying how long the rest was."""
    if not isinstance(text, str):
        text = str(text) if isinstance(text, (int, float)) else f"<{type(text).__name__}>"
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"


def check_length(text: str, field: str, limit: int = MAX_FIELD_CHARS) -> str:
    """``text`` itself, or a ValueError when it is not a string or longer than ``limit``."""
    if not isinstance(text, str):
        raise ValueError(f"{field}: expected text, got {type(text).__name__}")
    if len(text) > limit:
        raise ValueError(f"{field}: at most {limit} characters, got {len(text)} ({quote(text)})")
    return text


def _is_decimal(s: str) -> bool:
    """``[+-]? (digits [. digits?] | . digits) ([eE] [+-]? digits)?`` in one pass."""
    i, n = 0, len(s)
    if i < n and s[i] in "+-":
        i += 1
    int_digits = 0
    while i < n and s[i] in _DIGITS:
        i, int_digits = i + 1, int_digits + 1
    frac_digits = 0
    if i < n and s[i] == ".":
        i += 1
        while i < n and s[i] in _DIGITS:
            i, frac_digits = i + 1, frac_digits + 1
    if int_digits + frac_digits == 0:
        return False
    if i < n and s[i] in "eE":
        i += 1
        if i < n and s[i] in "+-":
            i += 1
        exp_digits = 0
        while i < n and s[i] in _DIGITS:
            i, exp_digits = i + 1, exp_digits + 1
        if exp_digits == 0:
            return False
    return i == n


def parse_number(token: str, field: str) -> float:
    """A finite decimal number (``1``, ``-2.5``, ``.5``, ``3e2``); no ``nan``/``inf``/``_``."""
    s = check_length(token, field).strip()
    if not _is_decimal(s):
        raise ValueError(f"{field}: not a number: {quote(token)}")
    value = float(s)
    if not math.isfinite(value):
        raise ValueError(f"{field}: must be a finite number, got {quote(token)}")
    return value


def parse_int(token: str, field: str) -> int:
    """A whole number written with digits only (an optional sign; no ``1.0``, no ``1e3``)."""
    s = check_length(token, field).strip()
    body = s[1:] if s[:1] in ("+", "-") else s
    if not body or any(c not in _DIGITS for c in body):
        raise ValueError(f"{field}: not a whole number: {quote(token)}")
    return int(s)


def split_fields(text: str, field: str, sep: str = ",", max_items: int | None = None,
                 limit: int = MAX_FIELD_CHARS) -> list[str]:
    """``text`` split at ``sep`` after the length check; empty items are dropped."""
    parts = [p.strip() for p in check_length(text, field, limit).split(sep)]
    parts = [p for p in parts if p]
    if max_items is not None and len(parts) > max_items:
        raise ValueError(f"{field}: at most {max_items} items, got {len(parts)}")
    return parts


def parse_int_list(text: str, field: str, max_items: int, minimum: int | None = None,
                   maximum: int | None = None) -> list[int]:
    """``"1, 2, 30"`` -> ``[1, 2, 30]``, each within ``minimum..maximum``."""
    out = []
    for p in split_fields(text, field, max_items=max_items):
        v = parse_int(p, field)
        if (minimum is not None and v < minimum) or (maximum is not None and v > maximum):
            raise ValueError(f"{field}: {quote(p)} is outside {minimum}..{maximum}")
        out.append(v)
    return out


def parse_index_ranges(text: str, field: str, minimum: int, maximum: int) -> list[int]:
    """``"6,7,9-11"`` -> ``[6, 7, 9, 10, 11]``. Every bound is checked against
    ``minimum..maximum`` before a range is expanded, so the result has at most
    ``maximum - minimum + 1`` distinct items whatever the text says."""
    out: set[int] = set()
    for part in split_fields(text, field):
        lo_text, dash, hi_text = part[1:].partition("-")
        if dash:
            lo_text = part[0] + lo_text
            lo, hi = parse_int(lo_text, field), parse_int(hi_text, field)
        else:
            lo = hi = parse_int(part, field)
        for v in (lo, hi):
            if not minimum <= v <= maximum:
                raise ValueError(f"{field}: {quote(part)} is outside {minimum}..{maximum}")
        if hi < lo:
            raise ValueError(f"{field}: range {quote(part)} runs backwards")
        out.update(range(lo, hi + 1))
    return sorted(out)
