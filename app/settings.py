"""The viewer's saved settings (``QSettings``), read with a check of each value.

The settings file belongs to the user: edited by hand, written by another version of the program, or
damaged. A value that is missing or unusable (another type, NaN or infinite, out of its range, an
unknown name) gives its default and, when it was there but unusable, a warning in the log that names
the setting and says what it must be; the viewer always starts. The next change the user makes saves a
good value again.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from typing import Any

from PySide6.QtCore import QSettings

log = logging.getLogger(__name__)

_MISSING = object()


def _raw(key: str, store: QSettings | None) -> Any:
    return (store if store is not None else QSettings()).value(key, _MISSING)


def _rejected(key: str, value: Any, what: str, default: Any, store: QSettings | None) -> Any:
    shown = repr(value)
    shown = shown if len(shown) <= 80 else shown[:77] + "..."
    where = (store if store is not None else QSettings()).fileName()
    log.warning("the saved setting %s (%s, in %s) is not %s; the default %r is used until it is set again",
                key, shown, where, what, default)
    return default


def _number(value: Any) -> float | None:
    """A finite number from an int, a float or its text (None otherwise; booleans are not numbers)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        number = float(value) if abs(value) < 1e308 else math.inf
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def read_float(key: str, default: float, low: float, high: float, store: QSettings | None = None) -> float:
    """A number from ``low`` to ``high``."""
    value = _raw(key, store)
    if value is _MISSING:
        return default
    number = _number(value)
    if number is None or not low <= number <= high:
        return _rejected(key, value, f"a number from {low:g} to {high:g}", default, store)
    return number


def read_int(key: str, default: int, low: int, high: int, store: QSettings | None = None) -> int:
    """A whole number from ``low`` to ``high`` ("3" and "3.0" are 3)."""
    value = _raw(key, store)
    if value is _MISSING:
        return default
    number = _number(value)
    if number is None or number != int(number) or not low <= number <= high:
        return _rejected(key, value, f"a whole number from {low} to {high}", default, store)
    return int(number)


def read_choice(key: str, default: str, choices: Iterable[str], store: QSettings | None = None) -> str:
    """One of ``choices`` (exactly as spelt there)."""
    choices = tuple(choices)
    value = _raw(key, store)
    if value is _MISSING:
        return default
    if not isinstance(value, str) or value not in choices:
        return _rejected(key, value, f"one of {', '.join(choices)}", default, store)
    return value


def read_bool(key: str, default: bool, store: QSettings | None = None) -> bool:
    """true or false (as saved: the words, or 1 and 0)."""
    value = _raw(key, store)
    if value is _MISSING:
        return default
    if isinstance(value, bool):
        return value
    word = value.strip().lower() if isinstance(value, str) else value if isinstance(value, int) else None
    if word in ("true", "1", 1):
        return True
    if word in ("false", "0", 0):
        return False
    return _rejected(key, value, "true or false", default, store)


def read_str(key: str, default: str = "", store: QSettings | None = None, max_length: int = 4096) -> str:
    """Text of at most ``max_length`` characters (a number saved without quotes reads as its text)."""
    value = _raw(key, store)
    if value is _MISSING or value is None:
        return default
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or len(value) > max_length or "\0" in value:
        return _rejected(key, value, f"text of at most {max_length} characters", default, store)
    return value


def read_str_list(key: str, store: QSettings | None = None, max_items: int = 100) -> list[str]:
    """A list of texts. The INI format saves a one-item list as a plain text, which reads back as
    that text (not as a list of its characters); items that are not text are dropped."""
    value = _raw(key, store)
    if value is _MISSING or value is None:
        return []
    items = [value] if isinstance(value, str) else value if isinstance(value, list) else None
    if items is None:
        return _rejected(key, value, "a list of file names", [], store)
    kept = [item for item in items[:max_items] if isinstance(item, str) and item and "\0" not in item]
    if len(kept) != len(items):
        _rejected(key, value, "a list of file names only", kept, store)
    return kept
