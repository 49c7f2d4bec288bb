"""One writer per corpus folder: `common.lock`'s folder lock, with the corpus commands' messages."""
from __future__ import annotations

from pathlib import Path

from common.errors import ScarceError
from common.lock import EX_TEMPFAIL, Busy, FolderLock

__all__ = ["EX_TEMPFAIL", "Busy", "CorpusLock"]


class CorpusLock(FolderLock):
    """`with CorpusLock(OUT/NAME):` holds OUT/NAME/.lock exclusively or raises Busy at once;
    nothing is written: an unchanged refresh leaves every file as it was."""

    def __init__(self, corpus_dir: str | Path):
        super().__init__(corpus_dir)

    def unwritable(self, exc: OSError) -> ScarceError:
        return ScarceError(f"{self.path.parent}: cannot write the corpus folder ({exc.strerror})")

    def busy(self, pid: str | None) -> Busy:
        return Busy(f"{self.path.parent}: another build, refresh or augment holds {self.path}; try again later")
