"""One writer per folder: an `fcntl` lock on FOLDER/.lock that the kernel drops when the holder dies.

The one lock of the project: `pipelines.lock.CorpusLock` (a corpus folder) and `RunLock` (a run
folder of `lm.train`, `lm.distill`, `lm.ship.prune`) are this lock with their own messages. A
second holder is refused at once with `Busy` (exit 75, sysexits' "try again later"), which
schedulers retry.
"""
from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

from common.errors import ScarceError

EX_TEMPFAIL = 75  # sysexits.h: try again later
LOCK_FILE = ".lock"


class Busy(ScarceError):
    """Another process holds the folder's lock; schedulers retry on exit code 75."""

    exit_code = EX_TEMPFAIL


class FolderLock:
    """`with FolderLock(FOLDER):` holds FOLDER/.lock exclusively or raises Busy at once.

    `record_pid`: write the holder's pid into the lock file, so a refused command can name it.
    `tidy`: a folder the lock itself created and that holds nothing else when the lock is let
    go (the command failed before writing) is removed, so a refused command leaves no folder."""

    def __init__(self, folder: str | Path, record_pid: bool = False, tidy: bool = False):
        self.path = Path(folder) / LOCK_FILE
        self.record_pid, self.tidy = record_pid, tidy
        self.fd: int | None = None
        self.created = False

    def unwritable(self, exc: OSError) -> ScarceError:
        return ScarceError(f"{self.path.parent}: cannot write the folder ({exc.strerror})")

    def busy(self, pid: str | None) -> Busy:
        by = f"process {pid}" if pid else "another process"
        return Busy(f"{self.path.parent}: {by} holds {self.path}; try again later")

    def _holder(self) -> str | None:
        try:
            pid = self.path.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            return None
        return pid if pid.isdigit() else None

    def _open(self) -> int:
        try:
            self.created = not self.path.parent.is_dir()
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:  # read-only mount, no permission, a file in the way
            raise self.unwritable(exc) from None

    def _same_file(self, fd: int) -> bool:
        try:
            return os.stat(self.path).st_ino == os.fstat(fd).st_ino
        except OSError:
            return False

    def __enter__(self) -> "FolderLock":
        fd = self._open()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise self.busy(self._holder() if self.record_pid else None) from None
        if self.tidy and not self._same_file(fd):  # a tidy holder removed it meanwhile
            os.close(fd)
            raise self.busy(None)
        self.fd = fd
        if self.record_pid:  # unrecorded otherwise: an unchanged refresh leaves every file as it was
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self.fd is None:
            return
        folder = self.path.parent
        if self.tidy and self.created and [p.name for p in folder.iterdir()] == [LOCK_FILE]:
            # removed while still held; one that opened it meanwhile sees another file (`_same_file`)
            self.path.unlink()
            folder.rmdir()
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None


class RunLock(FolderLock):
    """A run folder's lock: held for a whole `lm.train`, `lm.distill` or `lm.ship.prune` command."""

    def __init__(self, run_dir: str | Path):
        super().__init__(run_dir, record_pid=True, tidy=True)

    def busy(self, pid: str | None) -> Busy:
        by = f"another command (pid {pid})" if pid else "another command"
        return Busy(f"run folder {self.path.parent} is in use: {by} holds {self.path}; try again later")
