"""Kill-anywhere resume of a real `python -m lm.train`: a subprocess is killed by a signal (no
mock) at points watched for on disk from here, the same command is run again to completion, and
the run ends bitwise where an uninterrupted one ends: parameters of the last and the best
checkpoint, optimiser state, and the same metrics rows, each step once, with the same losses.

The kill points (12 steps, a dev evaluation and a checkpoint every 4, a row every step):
before any checkpoint; between two checkpoints; during the save of a new best (Orbax's temporary
folder); after the best and during the resume checkpoint of the same step (the best is saved
again); and, by SIGTERM (which `lm.train` does not catch: the default action ends it), after a
whole checkpoint. Saves take tens of milliseconds on a tiny model and the folder is polled
every millisecond; what the kill left is checked before the re-run, and a kill that landed
elsewhere (the poll came late on a loaded machine) is tried again in a new folder.
"""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Callable

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from lm.checkpoint import BEST_DIR, RESUME_DIR, Checkpoints, verify
from lm.loader import load_model
from lm.trainer import resume_step
from tests.helpers import ROOT, TINY, corpora, holds, kill_when

STEPS, EVERY = 12, 4
TMP = ".orbax-checkpoint-tmp"
COMPARED = ("step", "loss", "lr", "dev_loss", "dev_bpc")  # the rest are timings


def command(corpus: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "lm.train", "--corpus", str(corpus), "--out", str(out), *TINY,
            "--steps", str(STEPS), "--eval-every", str(EVERY), "--log-every", "1"]


def run_to_end(cmd: list[str], log: Path) -> None:
    with open(log, "ab") as f:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, timeout=300)
    assert proc.returncode == 0, log.read_text(errors="replace")[-3000:]


def kill_at(cmd: list[str], out: Path, ready: Callable[[Path], bool], left: Callable[[Path], bool], log: Path,
            sig: signal.Signals = signal.SIGKILL, tries: int = 3) -> None:
    """Run `cmd` in a new `out` and send it `sig` the moment `ready(out)` holds, until `left(out)`
    says the kill landed where it was meant to (a loaded machine may poll too late: a new try)."""
    for _ in range(tries):
        shutil.rmtree(out, ignore_errors=True)
        kill_when(cmd, out, ready, log, sig)
        if holds(left, out):
            return
    pytest.fail(f"{tries} kills missed the point; the last left "
                + str(sorted(str(p.relative_to(out)) for p in out.rglob("*") if "checkpoint-tmp/" not in str(p))))


def metric_steps(out: Path) -> list[int]:
    rows = []
    for line in (out / "metrics.jsonl").read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            pass  # a line the kill cut short
    return [r["step"] for r in rows if "loss" in r]


def whole(out: Path, which: str, step: int) -> bool:
    return (out / which / str(step) / "checksums.json").is_file()


def compared_rows(out: Path) -> list[dict]:
    return [{k: r[k] for k in COMPARED if k in r}
            for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())]


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("kill-train") / "straight"
    run_to_end(command(corpora(tmp_path_factory)["gl"], out), out.parent / "straight.log")
    return out


# name: (when to kill, the signal, the step the kill leaves to resume from, what else it left)
POINTS: dict[str, tuple[Callable[[Path], bool], signal.Signals, int, Callable[[Path], bool]]] = {
    "before_any_checkpoint": (lambda o: len(metric_steps(o)) >= 2 and not (o / BEST_DIR).exists(), signal.SIGKILL, 0,
                              lambda o: not (o / BEST_DIR).exists()),
    "between_checkpoints": (lambda o: whole(o, RESUME_DIR, 4) and max(metric_steps(o)) >= 6, signal.SIGKILL, 4,
                            lambda o: max(metric_steps(o)) > 4 and not any((o / BEST_DIR).glob("8*"))),
    "during_the_best_save": (lambda o: (o / BEST_DIR / f"8{TMP}").exists(), signal.SIGKILL, 4,
                             lambda o: any((o / BEST_DIR).glob("8*")) and not whole(o, BEST_DIR, 8)),
    "after_the_best_during_the_resume_save": (lambda o: (o / RESUME_DIR / f"8{TMP}").exists(), signal.SIGKILL, 4,
                                              lambda o: whole(o, BEST_DIR, 8)),
    "sigterm_after_a_whole_checkpoint": (lambda o: whole(o, RESUME_DIR, 8), signal.SIGTERM, 8,
                                         lambda o: max(metric_steps(o)) >= 8),
}


@pytest.mark.parametrize("point", list(POINTS))
def test_killed_train_resumes_to_the_uninterrupted_result(point: str, straight: Path, tmp_path: Path,
                                                          tmp_path_factory: pytest.TempPathFactory) -> None:
    ready, sig, left, also = POINTS[point]
    out, log = tmp_path / "killed", tmp_path / "train.log"
    cmd = command(corpora(tmp_path_factory)["gl"], out)
    kill_at(cmd, out, ready, lambda o: resume_step(o) == left and also(o), log, sig)
    run_to_end(cmd, log)
    assert json.loads((out / "run.json").read_text())["resumes"] == ([left] if left else [])
    # the same rows for the same steps, each once (those the killed process logged after its
    # checkpoint were cut and logged again), with the same losses, bit for bit
    assert compared_rows(out) == compared_rows(straight)
    # the final checkpoints: whole (checksums), and the same parameters and optimiser state
    for which in (RESUME_DIR, BEST_DIR):
        assert sorted(p.name for p in (out / which).iterdir()) == [str(STEPS)], which
        verify(out / which / str(STEPS))
    for checkpoint in ("last", "best"):
        a, b = load_model(out, checkpoint), load_model(straight, checkpoint)
        assert a.info["step"] == b.info["step"] == STEPS
        assert_same(a.params, b.params)
    (state, meta), (state0, meta0) = resume_state(out), resume_state(straight)
    assert_same(state, state0)
    timings = ("train_seconds", "elapsed")
    assert {k: v for k, v in meta.items() if k not in timings} == {k: v for k, v in meta0.items() if k not in timings}


def resume_state(out: Path) -> tuple[dict, dict]:
    """The last resume checkpoint, whole (parameters, optimiser state, step; its meta), read by
    `lm.checkpoint` onto this process's first device (the command trained on one per core)."""
    folder = (out / RESUME_DIR / str(STEPS) / "state").resolve()
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    shapes = ocp.StandardCheckpointer().metadata(folder).item_metadata.tree
    abstract = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), shapes)
    return Checkpoints(out, read_only=True).restore(RESUME_DIR, abstract)


def assert_same(a: object, b: object) -> None:
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        assert np.asarray(x).dtype == np.asarray(y).dtype and np.array_equal(np.asarray(x), np.asarray(y))
