"""CSV export that a spreadsheet opens as data, never as formulas.

OWASP's CSV-injection advice: a text cell beginning with `=`, `+`, `-`, `@`, a tab or a
carriage return is prefixed with a single quote, so Excel, LibreOffice and Google Sheets show
it as text. Numbers stay numbers: a numeric column's value (a float, an int) is written as it
is, and so is a text cell that is only a number ("-3.5"), since neither can be a formula.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
CHUNK_BYTES = 1 << 16


def spreadsheet_safe(value: Any) -> Any:
    """`value` as a CSV cell: text that a spreadsheet would read as a formula gets a leading
    `'`; numbers, None and other text are unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        if not _NUMBER.fullmatch(value):
            return "'" + value
    return value


def csv_chunks(names: Sequence[str], rows: Iterable[Sequence[Any]]) -> Iterator[str]:
    """The header and rows as CSV text, in chunks of about `CHUNK_BYTES` (streamed)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([spreadsheet_safe(n) for n in names])
    for row in rows:
        writer.writerow([spreadsheet_safe(v) for v in row])
        if buffer.tell() > CHUNK_BYTES:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()
