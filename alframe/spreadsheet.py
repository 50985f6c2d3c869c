"""CSV cells a spreadsheet shows as text, never runs as a formula (OWASP: CSV injection), and
their values read back. Every CSV alframe writes for a person goes through :func:`spreadsheet_safe`."""

from __future__ import annotations

#: first characters that make a spreadsheet read a cell as a formula (OWASP, CSV injection)
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: object) -> str:
    """``value`` as a CSV cell a spreadsheet shows as text: a leading ``'`` is added when it
    starts with ``= + - @``, a tab or a carriage return (OWASP's rule against CSV injection),
    or with a ``'`` that :func:`from_spreadsheet` would take away. None is ``""``."""
    text = "" if value is None else str(value)
    if text.startswith(FORMULA_START) or (text.startswith("'") and text[1:2] in (*FORMULA_START, "'")):
        return "'" + text
    return text


def from_spreadsheet(text: str) -> str:
    """The value of a cell :func:`spreadsheet_safe` wrote (its leading ``'`` removed); other
    text as it is."""
    if text.startswith("'") and text[1:2] in (*FORMULA_START, "'"):
        return text[1:]
    return text
