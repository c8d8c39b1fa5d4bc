"""Column types inferred from a file's first block, widened when later rows disagree."""

from __future__ import annotations

import re

import pyarrow as pa  # type: ignore[import-untyped,unused-ignore]

__all__ = ["ColumnWidening", "widened_type"]

_INVALID_VALUE = re.compile(r"invalid value '(.*)'")


class ColumnWidening(Exception):  # noqa: N818 - a signal to restart, not an error
    """A value does not fit the type inferred for its column: restart wider.

    Raised by readers and caught by the statistics loop, which restarts the read with
    ``column`` fixed to ``new_type``. Not a CascadeError: it never leaves validation.
    """

    def __init__(self, column: str, new_type: pa.DataType) -> None:
        super().__init__(f"column {column!r} widens to {new_type}")
        self.column = column
        self.new_type = new_type


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def widened_type(current: pa.DataType | None, arrow_message: str) -> pa.DataType:
    """Integers that meet a decimal become float64; anything else becomes a string."""
    found = _INVALID_VALUE.search(arrow_message)
    value = found.group(1) if found else ""
    if current is not None and pa.types.is_integer(current) and _looks_numeric(value):
        return pa.float64()
    return pa.string()
