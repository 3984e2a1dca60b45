"""Quiet by default: third-party output goes to a log file, edgeloop's own lines to the terminal.

The libraries edgeloop drives are loud: torchao logs `.so` load failures, torch logs pytree
deprecations, the TFLite converter and XNNPACK write absl/oneDNN lines from C++, the ONNX
exporter warns about torchvision. None of it is edgeloop's to say. `routed(log_path)` sends all
of it to `log_path`, while what edgeloop prints (click output, progress lines, the live view)
still reaches the terminal:

- file descriptors 1 and 2 point at the log file, so C++ libraries and child processes write
  there;
- `sys.stdout` / `sys.stderr` are replaced by streams on saved copies of the terminal, so
  `click.echo`, the live view and progress lines from edgeloop's code reach the user; what
  other modules write there (a library's `print`, a log handler it bound to `sys.stderr`)
  goes to the log;
- Python `warnings` and `logging` records go to the log file (log handlers bound to the
  original `sys.stderr` write to descriptor 2, which is the log);
- `quiet_environment()` sets the libraries' own switches early (TF_CPP_MIN_LOG_LEVEL,
  GLOG_minloglevel, LITERT_TORCH_SHOW_PROGRESS=n); a value the user set is kept.

With `verbose=True` nothing is redirected: everything is shown as it happens.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Optional, TextIO

LOG_FILE = "edgeloop.log"
# Top-level packages whose writes to sys.stdout/sys.stderr are edgeloop's own lines.
OWN_MODULES = frozenset({"toolkit", "device_agent", "click"})
# The libraries' own switches; setdefault, so a value the user set wins.
QUIET_ENVIRONMENT = {
    "TF_CPP_MIN_LOG_LEVEL": "1",  # TensorFlow/LiteRT C++: warnings and errors only
    "GLOG_minloglevel": "1",  # glog: warnings and errors only
    "LITERT_TORCH_SHOW_PROGRESS": "n",  # litert-torch's conversion progress bars
}


def quiet_environment() -> None:
    """Sets the third-party libraries' log switches, before they are imported."""
    for name, value in QUIET_ENVIRONMENT.items():
        os.environ.setdefault(name, value)


def _fd_of(stream: object) -> Optional[int]:
    try:
        return stream.fileno()  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return None


def _from_third_party() -> bool:
    """True when the write does not come from edgeloop or click: a library's `print`, or a
    logging handler it bound to `sys.stderr` while edgeloop ran (torch.export prints its graph
    on failure, torch makes its log handlers on first use)."""
    caller = sys._getframe(2)  # 0: here, 1: _Terminal.write, 2: whoever wrote
    name = caller.f_globals.get("__name__", "") if caller is not None else ""
    return name.split(".", 1)[0] not in OWN_MODULES


class _Terminal(io.TextIOWrapper):
    """The terminal, for edgeloop's own lines (its code, click); any other writer's text goes
    to the log instead."""

    def __init__(self, fd: int, like: TextIO, log: TextIO) -> None:
        super().__init__(os.fdopen(fd, "wb", buffering=0, closefd=True),
                         encoding=getattr(like, "encoding", None) or "utf-8",
                         errors=getattr(like, "errors", None) or "replace",
                         line_buffering=True, write_through=True)
        self._log = log

    def write(self, text: str) -> int:
        if _from_third_party():
            return self._log.write(text)
        return super().write(text)


def _terminal_copy(stream: TextIO, fd: int, log: TextIO) -> tuple[TextIO, bool]:
    """A stream that keeps reaching where `stream` wrote once descriptor `fd` is redirected,
    and whether it is a new object (to be closed). A stream not on `fd` (a test runner's
    capture, a file) is returned as it is."""
    if _fd_of(stream) != fd:
        return stream, False
    return _Terminal(os.dup(fd), stream, log), True


@contextlib.contextmanager
def routed(log_path: Optional[Path], verbose: bool = False) -> Iterator[Optional[Path]]:
    """Runs the body with third-party output sent to `log_path` (appended, folder created).

    Args:
        log_path: the log file, e.g. `<out>/edgeloop.log`; None or `verbose` routes nothing.
        verbose: show everything on the terminal instead (the `-v` flag).

    Yields:
        The log file's path, or None when nothing is routed.
    """
    if verbose or log_path is None:
        yield None
        return
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    log_text = os.fdopen(os.dup(log_fd), "a", buffering=1, encoding="utf-8", errors="replace")
    old_stdout, old_stderr = sys.stdout, sys.stderr
    term_out, close_out = _terminal_copy(old_stdout, 1, log_text)
    term_err, close_err = _terminal_copy(old_stderr, 2, log_text)
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    for fd in (1, 2):
        os.dup2(log_fd, fd)
    old_showwarning = warnings.showwarning
    handler = logging.StreamHandler(log_text)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)

    def to_log(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
        log_text.write(warnings.formatwarning(message, category, filename, lineno, line))

    warnings.showwarning = to_log
    sys.stdout, sys.stderr = term_out, term_err
    try:
        yield log_path
    finally:
        for stream in (sys.stdout, sys.stderr, old_stdout, old_stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        sys.stdout, sys.stderr = old_stdout, old_stderr
        warnings.showwarning = old_showwarning
        root.removeHandler(handler)
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)
        for stream, owned in ((term_out, close_out), (term_err, close_err)):
            if owned:
                with contextlib.suppress(Exception):
                    stream.close()
        log_text.close()
        os.close(log_fd)


def default_log_path() -> Path:
    """Where commands without an output folder log: `<edgeloop home>/logs/edgeloop.log`."""
    from toolkit.paths import edgeloop_home

    return edgeloop_home() / "logs" / LOG_FILE
