"""Kill-anywhere resume of a real `python -m lm.distill --preset tiny`: a subprocess is killed by
SIGKILL (no mock) at a point watched for on disk from here, the same command is run again to
completion, and the report's figures equal an uninterrupted run's: every model's dev and test
bits per character, its steps and best step, the round's, and the models' best parameters, bit
for bit.

The kill points, in a run of one round, one seed, the teacher's outputs from the top-k cache:
inside the teacher (after its first checkpoint); while the teacher cache fills, before the student's
first step (rows stored in the memory maps, their flags not yet written: those rows are computed
again); inside the student after its first checkpoint (the cache's rows and flags were flushed
before that checkpoint: the re-run reads them back and computes none).
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

import jax
import numpy as np
import pytest

from lm.loader import load_model
from lm.trainer import resume_step
from tests.helpers import ROOT, augmented_gl, holds, kill_when, noise_step

MODELS = ("teacher", "student-s0", "baseline-s0")
FIGURES = ("params", "dev_bits_per_char", "test_bits_per_char")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """200, 40 and 40 lines of gl-ctg, split by source, with one noise variant of each train line."""
    return augmented_gl(tmp_path_factory.mktemp("kill-distill-corpus"), (200, 40, 40), noise_step(13), "glkill")


def command(corpus: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "lm.distill", "--corpus", str(corpus), "--out", str(out), "--preset", "tiny",
            "--seeds", "1", "--cache", "always", "--quiet"]


def run_to_end(cmd: list[str], log: Path) -> None:
    with open(log, "ab") as f:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, timeout=600)
    assert proc.returncode == 0, log.read_text(errors="replace")[-3000:]


def kill_at(cmd: list[str], out: Path, ready: Callable[[Path], bool], left: Callable[[Path], bool], log: Path,
            tries: int = 3) -> None:
    """Run `cmd` in a new `out` and SIGKILL it the moment `ready(out)` holds, until `left(out)`
    says the kill landed where it was meant to (a loaded machine may poll too late: a new try)."""
    for _ in range(tries):
        shutil.rmtree(out, ignore_errors=True)
        kill_when(cmd, out, ready, log, timeout=300)
        if holds(left, out):
            return
    pytest.fail(f"{tries} kills missed the point; the last left "
                + str(sorted(str(p.relative_to(out)) for p in out.rglob("*") if "checkpoint" not in str(p))))


def whole_checkpoint(model: Path, step: int) -> bool:
    return (model / "checkpoints" / str(step) / "checksums.json").is_file()


def done(out: Path, name: str) -> bool:
    return (out / "models" / name / "DONE.json").is_file()


def cached_rows(out: Path) -> int:
    """Rows of the teacher cache whose flags are on disk (`teacher_cache`: rows, then flags)."""
    return sum(int(np.load(p).sum()) for p in (out / "teacher-cache").glob("*.filled.npy"))


def stored_rows(out: Path) -> int:
    """Rows of the teacher cache holding top-k outputs, flagged or not (the memory maps' pages)."""
    return sum(int(np.asarray(np.load(p, mmap_mode="r")).any(axis=(1, 2)).sum())
               for p in (out / "teacher-cache").glob("*.indices.npy"))


def figures(out: Path) -> dict:
    """What must not move with a kill: per model its parameters, dev and test bits per
    character, steps and best step; the round's figures."""
    report = json.loads((out / "report.json").read_text())
    models = {name: {k: m.get(k) for k in FIGURES} for name, m in report["models"].items()}
    for name in MODELS:
        d = json.loads((out / "models" / name / "DONE.json").read_text())
        models[name] = {k: d[k] for k in ("steps", "best_step", *FIGURES)}
    rounds = [{k: r[k] for k in ("kept_variants", "dev_bits_per_char", "test_bits_per_char", "weights")}
              for r in report["rounds"]]
    return {"models": models, "rounds": rounds, "rows_filled": report["teacher_cache"]["rows_filled"]}


@pytest.fixture(scope="module")
def straight(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("kill-distill") / "straight"
    run_to_end(command(corpus, out), out.parent / "straight.log")
    return out


# name: (when to kill, what the kill left)
POINTS: dict[str, tuple[Callable[[Path], bool], Callable[[Path], bool]]] = {
    "inside_the_teacher": (lambda o: whole_checkpoint(o / "models" / "teacher", 8),
                           lambda o: not done(o, "teacher") and resume_step(o / "models" / "teacher") == 8),
    "while_the_teacher_cache_fills": (lambda o: stored_rows(o) > 0,
                                      lambda o: done(o, "teacher") and stored_rows(o) > 0 and cached_rows(o) == 0
                                      and resume_step(o / "models" / "student-s0") == 0),
    "inside_the_student_after_its_first_checkpoint": (
        lambda o: whole_checkpoint(o / "models" / "student-s0", 8),
        lambda o: not done(o, "student-s0") and resume_step(o / "models" / "student-s0") == 8
        and cached_rows(o) > 0),
}


@pytest.mark.parametrize("point", list(POINTS))
def test_killed_distill_resumes_to_the_uninterrupted_report(point: str, corpus: Path, straight: Path,
                                                            tmp_path: Path) -> None:
    ready, left = POINTS[point]
    out, log = tmp_path / "killed", tmp_path / "distill.log"
    cmd = command(corpus, out)
    kill_at(cmd, out, ready, left, log)
    run_to_end(cmd, log)
    assert figures(out) == figures(straight)
    for name in MODELS:
        a, b = load_model(out / "models" / name), load_model(straight / "models" / name)
        assert a.info["checkpoint"] == b.info["checkpoint"], name
        for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params), strict=True):
            assert np.array_equal(np.asarray(x), np.asarray(y)), name
    if point == "inside_the_student_after_its_first_checkpoint":  # the cache was read back, not refilled
        report = json.loads((out / "report.json").read_text())
        assert report["teacher_cache"]["teacher_tokens_this_run"] == 0
