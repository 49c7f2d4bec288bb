"""Corpus snapshots as `lm` reads them: the version folder and LATEST, the separator the spec
implies, split text that is the source text, and clear errors for what is missing. The small
corpora they read (`corpora`) are the lm tests' shared ones, in tests/helpers.py."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import corpora, gl_lines
from lm.corpus import corpus_separator, open_snapshot
from lm.errors import DataError
from pipelines.normalise import normalise_text


@pytest.fixture(scope="module")
def lm_corpora(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return corpora(tmp_path_factory)


def test_latest_and_version_folder_open_the_same_snapshot(lm_corpora: dict[str, Path]) -> None:
    snap = open_snapshot(lm_corpora["gl"])
    same = open_snapshot(snap.root)
    assert (snap.name, snap.version) == (same.name, same.version) == ("gl-small", snap.root.name)
    assert snap.records("train") == same.records("train")


def test_separator_follows_the_spec(lm_corpora: dict[str, Path], tmp_path: Path) -> None:
    assert open_snapshot(lm_corpora["gl"]).separator == "\n"
    assert open_snapshot(lm_corpora["shakespeare"]).separator == "\n\n"
    spec = tmp_path / "spec.toml"
    spec.write_text('[[sources]]\nformat = "paragraphs"\n', encoding="utf-8")  # segmented: sentences
    assert corpus_separator(spec) == "\n"
    assert corpus_separator(tmp_path / "missing.toml") == "\n"


def test_split_text_is_the_source_text(lm_corpora: dict[str, Path]) -> None:
    # gl-ctg: one sentence a line, in file order
    gl = open_snapshot(lm_corpora["gl"])
    kept = {r["text"] for r in gl.records("train")}
    lines = [normalise_text(x) for x in gl_lines("train", 600)]
    assert gl.text("train") == "\n".join(x for x in lines if x in kept)
    assert len(kept) > 0.95 * len(lines)
    # Shakespeare: the test text is the tail of the file, exactly (less its final newline), as
    # nanoGPT and char-rnn's published validation text data[int(n * 0.9):]
    raw = (lm_corpora["src"] / "shakespeare.txt").read_text(encoding="utf-8")
    sh = open_snapshot(lm_corpora["shakespeare"])
    assert sh.text("test") == raw[int(len(raw) * 0.9):].rstrip("\n")
    assert sh.text("train").startswith("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\n")


def test_missing_snapshot_or_split_is_a_clear_error(lm_corpora: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no corpus snapshot"):
        open_snapshot(tmp_path / "nothing")
    snap = open_snapshot(lm_corpora["gl"])
    with pytest.raises(DataError, match="split 'valid' not found"):
        snap.records("valid")
