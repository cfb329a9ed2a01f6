"""Running COLMAP from Python: importing pycolmap, COLMAP's log lines routed into ``logging``, the device, and
the progress of a call that writes to COLMAP's database."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from ..errors import StageError
from ..progress import Progress

log = logging.getLogger("neus_stage.sfm")  # the sfm stage's log (these are its steps): lines as before


def import_pycolmap():
    """The pycolmap module, logging errors only; a StageError where it is not installed."""
    try:
        import pycolmap
    except ImportError as exc:  # pragma: no cover - the package depends on it
        raise StageError("pycolmap is not installed in this environment: run `make setup`") from exc
    pycolmap.logging.minloglevel = 2  # ERROR and above (some pycolmap calls reset it: see colmap_logs)
    return pycolmap


_GLOG_LINE = re.compile(r"^\x1b?\[?[0-9;]*m?([IWEF])\d{8} [\d:.]+ +\d+ ([^\]]+)\] ?(.*)$")


def _log_colmap_line(line: str) -> None:
    """One line COLMAP wrote: its INFO lines as DEBUG records, its warnings and errors as WARNING records."""
    m = _GLOG_LINE.match(line)
    if m is None:
        log.debug("colmap: %s", line)
    elif m.group(1) == "I":
        log.debug("colmap: %s", m.group(3))
    else:
        log.warning("colmap (%s): %s", m.group(2), m.group(3).replace("\x1b[m", ""))


@contextlib.contextmanager
def colmap_logs():
    """Route COLMAP's C++ log lines (glog, written straight to file descriptor 2) into ``logging``.

    ``pycolmap.logging.minloglevel`` alone does not keep the rule log readable: pycolmap 4.2's
    bundle_adjustment resets it to INFO. Here INFO lines become DEBUG records (seen with ``-v``),
    warnings and errors become WARNING records.
    """
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # no real stderr (some embedded runners): leave it alone
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), fd)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, fd)
            os.close(saved)
            tmp.seek(0)
            text = tmp.read().decode("utf-8", "replace")
        for line in text.splitlines():
            if line.strip():
                _log_colmap_line(line.strip())


def colmap_device(pycolmap):
    """CUDA where this pycolmap was built with it, else the CPU."""
    return pycolmap.Device.cuda if getattr(pycolmap, "has_cuda", False) else pycolmap.Device.cpu


# Counts the rows of a table of COLMAP's database every few seconds, printing each count. It runs as its own
# process: SQLite's locks are POSIX advisory locks, held per process, and closing any connection to a file
# releases all of that process's locks on it; pycolmap carries its own SQLite, which cannot know of a
# connection opened by Python's, so a reader in this process would drop COLMAP's locks mid-write (a 200-photo
# extraction ended with "database disk image is malformed"). Another process's readers are safe.
_COUNT_ROWS = """
import sqlite3, sys, time
db, table, every = sys.argv[1], sys.argv[2], float(sys.argv[3])
while True:
    time.sleep(every)
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.5)
        try:
            print(con.execute(f"SELECT count(*) FROM {table}").fetchone()[0], flush=True)
        finally:
            con.close()
    except sqlite3.Error:  # locked by the writer, or not created yet: again later
        pass
"""


class DatabaseProgress:
    """Progress of a COLMAP call that writes to its database (feature extraction, matching): a child process
    counts the rows of ``table`` every ``every`` seconds while the call runs (see ``_COUNT_ROWS``)."""

    def __init__(self, db_path: Path, table: str, desc: str, total: int, unit: str, every: float = 2.0):
        self.db_path, self.table, self.every = Path(db_path), table, every
        self.bar = Progress(desc, total, unit)
        self._proc: subprocess.Popen | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            if line.strip().isdigit():
                self._show(int(line))

    def _show(self, n: int) -> None:
        self.bar.set(min(n, self.bar.total or n))

    def _final_count(self) -> int | None:
        """The count once COLMAP has closed the database (no writer left: safe in this process)."""
        if not self.db_path.is_file():
            return None
        try:
            with contextlib.closing(sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=0.5)) as con:
                return int(con.execute(f"SELECT count(*) FROM {self.table}").fetchone()[0])
        except sqlite3.Error:
            return None

    def __enter__(self) -> DatabaseProgress:
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _COUNT_ROWS, str(self.db_path), self.table, str(self.every)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        assert self._proc is not None
        self._proc.kill()
        self._proc.wait()
        self._thread.join()
        n = self._final_count()
        if n is not None:
            self._show(n)
        self.bar.close()
