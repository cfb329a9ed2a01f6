"""Logging set-up shared by every stage command.

By hand (``neus-stage sfm ...``) everything goes to stderr. Under Snakemake the rules call
``neus-stage --log logs/<rule>/<scene>.log <command> ...``: the full log (and anything native libraries
print) goes to that file, and the terminal that runs Snakemake gets only progress lines, warnings and the
final error line, each tagged with the rule and scene (``[sfm demo] ...``).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_terminal = None  # the terminal stream when the log goes to a file (see setup_logging)


class _ToTerminal(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.name.startswith("neus_stage.progress") or record.levelno >= logging.WARNING


class _Stderr(logging.StreamHandler):
    """A handler on whatever ``sys.stderr`` is when a record is emitted (a caller that swaps stderr, such as
    a test harness capturing output, never leaves the logger writing to a closed stream)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):  # noqa: D102
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def setup_logging(verbose: bool = False, log_file: Path | None = None) -> None:
    """Log to stderr, or with ``log_file`` to that file plus progress and warnings to the terminal."""
    global _terminal
    level = logging.DEBUG if verbose else logging.INFO
    if log_file is None:
        handler = _Stderr()
        handler.setFormatter(logging.Formatter(FORMAT, datefmt="%H:%M:%S"))
        logging.basicConfig(level=level, handlers=[handler], force=True)
        return
    log_file = Path(log_file)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    terminal_fd = os.dup(2)
    with open(log_file, "w") as fh:  # fds 1 and 2 become the log file: C++ libraries' output lands there too
        os.dup2(fh.fileno(), 1)
        os.dup2(fh.fileno(), 2)
    _terminal = os.fdopen(terminal_fd, "w", buffering=1)
    to_file = _Stderr()
    to_file.setFormatter(logging.Formatter(FORMAT, datefmt="%H:%M:%S"))
    to_terminal = logging.StreamHandler(_terminal)
    tag = f"[{log_file.parent.name} {log_file.stem}] " if log_file.parent.name else ""
    to_terminal.setFormatter(logging.Formatter(tag + "%(message)s"))
    to_terminal.addFilter(_ToTerminal())
    logging.basicConfig(level=level, handlers=[to_file, to_terminal], force=True)


def report_error(line: str) -> None:
    """The one line a failed command ends with: in the log (stderr) and, under ``--log``, on the terminal."""
    print(line, file=sys.stderr, flush=True)
    if _terminal is not None:
        print(line, file=_terminal, flush=True)
