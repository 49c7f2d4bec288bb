"""`lm.distill --teacher FOLDER` checks the folder before any work (issue "Nothing lost, nothing
silent, round two"): a path that is missing, not a run of ours, or a run without a checkpoint
is one line and exit 2, with nothing written in --out and the snapshot not augmented (the
augmentation used to run first, and the command fail after it). A real run passes the check."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from lm.distill import main as distill_main
from lm.errors import run_cli
from lm.tokenizer import MODEL_FILE, Tokenizer
from lm.train import main as train_main
from pipelines.build import build
from pipelines.spec import load_spec

from tests.helpers import TINY, err_line, gl_split_spec

AUGMENT = '[augment]\nseed = 3\n[[augment.steps]]\naugmenter = "noise"\nops = ["swap"]\nrate = 0.1\n'


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("teacher-checks")
    extra = '[langid]\naction = "off"\n[dedup]\nnear = "off"\n' + AUGMENT
    build(load_spec(gl_split_spec(folder, (200, 40, 40), extra, "glteacher")), str(folder / "out"))
    return folder / "out" / "glteacher"


def not_teachers(base: Path, tok: Tokenizer) -> dict[str, Path]:
    """Folders that are no usable teacher, by what is wrong with them."""
    notes, empty, untrained = base / "notes", base / "empty", base / "untrained"
    for folder in (notes, empty, untrained):
        folder.mkdir(parents=True)
    (notes / "notes.txt").write_text("not a run")
    # a run killed before its first checkpoint: run.json and tokenizer, nothing to load
    (untrained / "run.json").write_text(json.dumps({"model": {"vocab_size": tok.vocab_size}}))
    tok.save(untrained / MODEL_FILE)
    return {"missing": base / "missing", "empty": empty, "notes": notes, "untrained": untrained}


def test_a_teacher_that_is_no_run_is_refused_before_any_work(corpus: Path, tmp_path: Path, tok: Tokenizer,
                                                             capsys) -> None:
    version = corpus / (corpus / "LATEST").read_text().strip()
    for why, teacher in not_teachers(tmp_path / "teachers", tok).items():
        out = tmp_path / f"run-{why}"
        code = run_cli(distill_main, ["--corpus", str(corpus), "--out", str(out), "--teacher", str(teacher),
                                      "--preset", "tiny", "--quiet"])
        line = err_line(capsys)
        assert code == 2 and "--teacher" in line and str(teacher) in line, (why, code, line)
        assert not out.exists(), why  # nothing written in --out
        assert not (version / "augmented").exists(), why  # the augmentation never ran


def test_a_trained_run_passes_the_check(corpus: Path, tmp_path: Path) -> None:
    from lm.distill.workspace import check_teacher
    run = tmp_path / "run"
    assert train_main(["--corpus", str(corpus), "--steps", "2", "--eval-every", "2", "--out", str(run), *TINY]) == 0
    check_teacher(run)
    check_teacher(tmp_path / ".." / tmp_path.name / "run")  # spelt another way
