"""`common.lock`: the one folder lock, as the corpus commands and the run commands use it."""
from __future__ import annotations

from pathlib import Path

import pytest

from common.lock import Busy, RunLock
from pipelines.lock import CorpusLock


def test_corpus_lock_keeps_its_message_and_writes_nothing(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    with CorpusLock(corpus):
        with pytest.raises(Busy, match=r"another build, refresh or augment holds .*\.lock; try again later") as busy:
            with CorpusLock(corpus):
                pass
        assert busy.value.exit_code == 75
    assert (corpus / ".lock").read_text() == ""  # an unchanged refresh leaves every file as it was


def test_run_lock_names_its_holder_and_leaves_no_folder_it_made_for_nothing(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with RunLock(run):
        with pytest.raises(Busy, match=rf"run folder {run} is in use: another command \(pid \d+\)"):
            with RunLock(run):
                pass
    assert not run.exists()  # made by the lock, nothing written: removed
    with RunLock(run):
        (run / "run.json").write_text("{}")
    assert (run / "run.json").is_file()  # written to: kept
