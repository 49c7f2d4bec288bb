"""Corpus snapshots as `lm` reads them, and the shared small corpora and trained run for lm tests.

The helpers build two small real-text snapshots with `pipelines.build` once per test session
(cached under pytest's base temp folder) and train one tiny run on the Galician one:

* `gl-small`: the first 600 train, 150 dev and 150 test lines of gl-ctg, split by source; dev and
  test lines carry a made-up word (SENTINEL) that must never reach a tokenizer.
* `shakespeare-small`: the first ~120k characters of Tiny Shakespeare as paragraphs, tail split
  like the full spec (test = the last 10% of the characters).
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import SHAKESPEARE, gl_lines, write_spec
from lm.corpus import corpus_separator, open_snapshot
from lm.errors import DataError
from pipelines.normalise import normalise_text

SENTINEL = "qzxjvwk"
TINY = ["--preset", "tiny", "--batch", "8", "--quiet"]


def _build(spec: Path, out: Path) -> Path:
    from pipelines.build import build
    from pipelines.spec import load_spec
    result = build(load_spec(spec), str(out))
    return Path(result["path"]).parent


def corpora(factory: pytest.TempPathFactory) -> dict[str, Path]:
    """{"gl": OUT/gl-small, "shakespeare": OUT/shakespeare-small}, built once per session."""
    base = factory.getbasetemp() / "lm-corpora"
    done = base / "done"
    out = base / "out"
    if not done.exists():
        shutil.rmtree(base, ignore_errors=True)
        src = base / "src"
        src.mkdir(parents=True)
        (src / "train.txt").write_text("\n".join(gl_lines("train", 600)) + "\n", encoding="utf-8")
        for split in ("dev", "test"):
            lines = [f"{line} {SENTINEL} {SENTINEL}." if i % 3 == 0 else line
                     for i, line in enumerate(gl_lines(split, 150))]
            (src / f"{split}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        body = "".join(f'[[sources]]\nname = "{s}"\npath = "{s}.txt"\nformat = "lines"\nsplit = "{s}"\n\n'
                       for s in ("train", "dev", "test"))
        body += '[split]\nmethod = "source"\n\n[langid]\naction = "off"\n\n[dedup]\nnear = "off"\n'
        _build(write_spec(src, body, name="gl-small"), out)
        raw = SHAKESPEARE.read_text(encoding="utf-8")
        (src / "shakespeare.txt").write_text(raw[:raw.index("\n\n", 120_000)] + "\n", encoding="utf-8")
        body = ('[[sources]]\nname = "input"\npath = "shakespeare.txt"\nformat = "paragraphs"\nsegment = false\n\n'
                '[split]\nmethod = "tail"\ndev = 0.05\ntest = 0.1\n\n[langid]\naction = "off"\n\n'
                '[filters]\nenabled = false\n\n[dedup]\nexact = false\nnear = "off"\n')
        _build(write_spec(src, body, name="shakespeare-small"), out)
        done.touch()
    return {"gl": out / "gl-small", "shakespeare": out / "shakespeare-small", "src": base / "src"}


def tiny_run(factory: pytest.TempPathFactory) -> Path:
    """A tiny model trained 60 steps on gl-small (decay over 60 steps), built once per session."""
    run = factory.getbasetemp() / "lm-run" / "gl-tiny"
    if not (run / "run.json").exists() or not (run / "best").is_dir():
        from lm.train import main
        shutil.rmtree(run, ignore_errors=True)
        assert main(["--corpus", str(corpora(factory)["gl"]), "--steps", "60", "--out", str(run),
                     "--eval-every", "20", *TINY]) == 0
    return run


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
