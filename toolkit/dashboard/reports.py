"""Gate reports (JUnit XML, HTML) as the dashboard serves them: only files inside the folders
the dashboard was told reports are written to (`--reports-dir`), never a path a database row
merely names.

A row's path is resolved (symlinks followed) and must lie inside one of those folders, resolved
the same way, so `../` and a symlink pointing out of a folder are refused; the file is opened
without following a final symlink and must be a regular file. What is served is a download
(JUnit) or a sandboxed page (HTML, `web.REPORT_CSP`): a report cannot script the dashboard.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

KINDS = {"junit": "application/xml", "html": "text/html; charset=utf-8"}
MAX_REPORT_BYTES = 64 << 20


class ReportRefused(LookupError):
    """The report is not recorded, not inside a reports folder, or not a readable file."""


@dataclass(frozen=True)
class Report:
    name: str
    content: bytes
    media_type: str


def report_folders(folders: Sequence[Path]) -> tuple[Path, ...]:
    """The folders as they will be checked against: absolute, symlinks resolved."""
    return tuple(Path(f).expanduser().resolve() for f in folders)


def read_report(recorded: Optional[str], kind: str, folders: Sequence[Path]) -> Report:
    """The report file a validation row names, if it lies inside one of `folders`.

    Args:
        recorded: the path in the row (None when the run wrote no such report).
        kind: "junit" or "html".
        folders: resolved folders reports may be served from (`report_folders`).

    Raises:
        ReportRefused: with a one-line reason naming the path (the page shows it).
    """
    if kind not in KINDS:
        raise ReportRefused(f"{kind!r}: a gate report is 'junit' or 'html'")
    if not recorded:
        raise ReportRefused(f"no {kind} report recorded")
    if not folders:
        raise ReportRefused(
            f"{recorded}: gate reports are served only from folders named with --reports-dir "
            "(none given)"
        )
    try:
        real = Path(recorded).resolve(strict=True)
    except (OSError, RuntimeError):
        raise ReportRefused(f"{recorded}: no such file") from None
    if not any(real.is_relative_to(folder) for folder in folders):
        raise ReportRefused(
            f"{recorded}: not inside a reports folder ({', '.join(map(str, folders))}); not served"
        )
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise ReportRefused(f"{recorded}: cannot open it ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ReportRefused(f"{recorded}: not a regular file")
        if info.st_size > MAX_REPORT_BYTES:
            raise ReportRefused(f"{recorded}: {info.st_size} bytes, over {MAX_REPORT_BYTES}")
        return Report(real.name, file.read(MAX_REPORT_BYTES + 1), KINDS[kind])
