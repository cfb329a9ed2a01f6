"""Writing a stage's final files all at once: a stage killed midway never leaves a half-written artifact.

The data go to a hidden temporary file in the destination's folder, which replaces the destination
(``os.replace``, atomic on one file system) only once it is complete. A stage that fails or is killed
leaves the previous file, or none; at most a stray ``.<name>.<pid>.partial`` that nothing reads.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO


@contextlib.contextmanager
def atomic_write(path: Path, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside ``path`` for writing (text as UTF-8, whatever the locale); on leaving the
    block it becomes ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)  # the umask applies, as for open()
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as fh:
            yield fh
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """``Path.write_text``, all or nothing."""
    with atomic_write(path, "w") as fh:
        fh.write(text)


def write_bytes_atomic(path: Path, data: bytes | memoryview) -> None:
    """``Path.write_bytes``, all or nothing."""
    with atomic_write(path, "wb") as fh:
        fh.write(data)
