"""One writer per corpus folder: an `fcntl` lock that the kernel drops when the holder dies."""
from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

from pipelines.errors import ScarceError

EX_TEMPFAIL = 75  # sysexits.h: try again later


class Busy(ScarceError):
    """Another process holds the corpus lock; schedulers retry on exit code 75."""

    exit_code = EX_TEMPFAIL


class CorpusLock:
    """`with CorpusLock(OUT/NAME):` holds OUT/NAME/.lock exclusively or raises Busy at once."""

    def __init__(self, corpus_dir: str | Path):
        self.path = Path(corpus_dir) / ".lock"
        self.fd: int | None = None

    def __enter__(self) -> "CorpusLock":
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:  # read-only mount, no permission, a file in the way
            raise ScarceError(f"{self.path.parent}: cannot write the corpus folder ({exc.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise Busy(f"{self.path.parent}: another build, refresh or augment holds {self.path}; try again later") from None
        self.fd = fd  # nothing is written: an unchanged refresh leaves every file as it was
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
