"""The distillation run's tokenizer learns from the real train text alone: never dev or test, and
never augmented text, so every arm (and the baseline) reads one vocabulary whatever the
augmentation produced."""
from __future__ import annotations

from pathlib import Path

import pytest

from lm.corpus import open_snapshot
from lm.distill.config import Settings
from lm.distill.workspace import run_tokenizer
from lm.tokenizer import train_tokenizer
from tests.helpers import corpora


def test_the_tokenizer_never_sees_augmented_text(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    snap = open_snapshot(corpora(tmp_path_factory)["gl"])
    settings = Settings(corpus=str(snap.root), preset="tiny")
    tok = run_tokenizer(tmp_path, settings, snap)
    assert tok.model == train_tokenizer(snap.documents("train"), settings.vocab_size).model
    assert (tmp_path / "tokenizer.model").read_bytes() == tok.model
    assert run_tokenizer(tmp_path, settings, snap).model == tok.model  # a re-run reads it back
