"""Run folders under hostile use: a second command on a folder in use, `lm.ship.prune --out`
pointed at a folder it did not write, a checkpoint (loaded unchecked) with NaN weights, and a
disk that refuses a checkpoint.

Each refusal is one line on stderr with its documented exit code (1 failure, 2 usage, 75 busy),
no traceback and nothing of the folder changed."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from tests.helpers import TINY, corpora, err_line, tiny_run
from lm.checkpoint import BEST_DIR, CHECKSUMS, RESUME_DIR, Checkpoints
from lm.distill.cli import main as distill_main
from lm.errors import LMError, run_cli
from lm.evaluate import main as eval_main
from lm.loader import FlaxModel, load_model
from lm.scoring import evaluate
from lm.ship.prune import main as prune_main
from lm.train import main as train_main

ROOT = Path(__file__).resolve().parents[2]
HOLD = ("import sys, time\nfrom common.lock import RunLock\n"
        "with RunLock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(600)\n")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_run(tmp_path_factory)


def _listing(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".lock"}


@contextmanager
def held_by_another_process(folder: Path) -> Iterator[int]:
    """`folder` locked by a second Python process (as a running lm.train holds it); its pid."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


# ---- 1. one command per run folder ------------------------------------------------------------
def test_a_run_folder_in_use_refuses_a_second_command_with_75(run: Path, tmp_path: Path,
                                                              tmp_path_factory: pytest.TempPathFactory,
                                                              capsys: pytest.CaptureFixture) -> None:
    copy = shutil.copytree(run, tmp_path / "run")
    before = _listing(copy)
    gl = corpora(tmp_path_factory)["gl"]
    with held_by_another_process(copy) as pid:
        commands = [(train_main, ["--out", str(copy), "--steps", "62", "--quiet"]),
                    (prune_main, [str(run), "--sparsity", "0.5", "--finetune-steps", "0", "--out", str(copy)]),
                    (distill_main, ["--corpus", str(gl), "--out", str(copy), "--quiet"])]
        for main, argv in commands:
            assert run_cli(main, argv) == 75, main.__module__
            line = err_line(capsys)
            assert str(copy) in line and f"pid {pid}" in line, line
        assert _listing(copy) == before  # metrics.jsonl too: nothing of the held run changed
        # a new folder: refused without leaving one behind
        fresh = tmp_path / "fresh"
        with held_by_another_process(fresh):
            assert run_cli(train_main, ["--corpus", str(gl), "--out", str(fresh), "--steps", "2", "--quiet"]) == 75
            err_line(capsys)
    # let go: the run resumes as before
    assert run_cli(train_main, ["--out", str(copy), "--steps", "62", "--quiet"]) == 0
    assert sorted(p.name for p in (copy / "checkpoints").iterdir()) == ["62"]


# ---- 2. lm.ship.prune --out -----------------------------------------------------------------
def test_prune_refuses_an_out_it_did_not_write(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = shutil.copytree(run, tmp_path / "src")
    other = shutil.copytree(run, tmp_path / "other")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("x")
    listings = {p: _listing(p) for p in (src, other, mine)}
    prune = [str(src), "--sparsity", "0.3", "--finetune-steps", "0", "--quiet", "--out"]
    for out in (src, other, mine, src / "checkpoints", tmp_path):
        assert run_cli(prune_main, [*prune, str(out)]) == 2, out
        assert str(out) in err_line(capsys)
    assert {p: _listing(p) for p in listings} == listings
    # a new folder, then the same again (an earlier prune of this source is replaced)
    out = tmp_path / "pruned"
    assert run_cli(prune_main, [*prune, str(out)]) == 0
    assert run_cli(prune_main, [*prune, str(out)]) == 0
    assert json.loads((out / "run.json").read_text())["pruned_from"] == str(src.resolve())
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["0"]
    capsys.readouterr()
    # but not a prune of another source
    assert run_cli(prune_main, [str(other), *prune[1:], str(out)]) == 2
    assert str(out) in err_line(capsys)


# ---- 3. non-finite weights and scores -------------------------------------------------------
def _nan_checkpoint(run: Path, dest: Path) -> Path:
    """A copy of `run` whose checkpoints hold a NaN weight and no checksums.json (loaded unchecked)."""
    copy = shutil.copytree(run, dest)
    params = load_model(copy).params
    kernel = np.array(params["layers"][0]["self_attn"]["q_proj"]["kernel"])
    kernel[0, 0] = np.nan
    params["layers"][0]["self_attn"]["q_proj"]["kernel"] = kernel
    ckpts = Checkpoints(copy)
    for which in (BEST_DIR, RESUME_DIR):
        step = ckpts.latest_step(which)
        ckpts.save(which, step, {"params": params}, {"step": step, "dev_loss": None})
        (copy / which / str(step) / CHECKSUMS).unlink()
    ckpts.close()
    return copy


def test_non_finite_weights_stop_evaluate_and_prune_with_one_line(run: Path, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    bad = _nan_checkpoint(run, tmp_path / "run")
    assert run_cli(eval_main, [str(bad), "--split", "test", "--json"]) == 1
    out = capsys.readouterr()
    assert "nan" not in out.out.lower()
    err = out.err.strip().splitlines()
    assert len(err) == 1 and str(bad) in err[0] and "non-finite" in err[0], err
    assert run_cli(prune_main, [str(bad), "--sparsity", "0.3", "--finetune-steps", "0", "--quiet",
                                "--out", str(tmp_path / "p")]) == 1
    line = err_line(capsys)
    assert str(bad) in line and "non-finite" in line
    assert not (tmp_path / "p").exists()


def test_a_non_finite_score_is_a_failure_never_a_number(run: Path) -> None:
    good = load_model(run)
    nan = FlaxModel(good.cfg, {**good.params, "norm": {"weight": np.full_like(good.params["norm"]["weight"], np.nan)}},
                    good.tokenizer, good.info)  # past the loader: weights made non-finite after loading
    with pytest.raises(LMError, match="non-finite"):
        evaluate(nan, "test")


# ---- 4. a disk that refuses the checkpoint ----------------------------------------------------
# The child limits its own file size, then runs lm.train: writes past the limit fail with EFBIG
# ("File too large") from the operating system, as on a full disk or a quota, not from a mock.
LIMITED = ("import resource, runpy, signal, sys\n"
           "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel ends the process\n"
           "resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]),) * 2)\n"
           "sys.argv = ['lm.train', *sys.argv[2:]]\n"
           "runpy.run_module('lm.train', run_name='__main__', alter_sys=True)\n")


def test_a_disk_that_refuses_a_checkpoint_stops_train_in_one_line_and_the_run_resumes(
        tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Orbax printed dozens of tracebacks and left its temporary folder when a save failed (issue
    29, item 12). Now: exit 1, one line naming the checkpoint and the operating system's reason,
    no temporary folder, and the same command, once the disk has room, trains the run to its end."""
    out = tmp_path / "r"
    args = ["--corpus", str(corpora(tmp_path_factory)["gl"]), "--out", str(out), *TINY, "--steps", "8",
            "--eval-every", "4"]
    # the compile cache off: the child must not leave a truncated cache entry behind
    env = {**os.environ, "SCARCE_LM_NO_COMPILE_CACHE": "1"}
    # 100 kB: the tokenizer fits, a checkpoint does not
    full = subprocess.run([sys.executable, "-c", LIMITED, "100000", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    err = full.stderr.strip().splitlines()
    assert full.returncode == 1 and len(err) == 1, full.stderr[-3000:]
    assert re.fullmatch(rf"error: cannot write checkpoint {re.escape(str(out))}/(best|checkpoints)/4 "
                        r"\(File too large\); free space and re-run the same command: .*", err[0]), err[0]
    assert not [p for p in out.rglob("*") if "orbax-checkpoint-tmp" in p.name]
    again = subprocess.run([sys.executable, "-m", "lm.train", *args], cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert Checkpoints(out, read_only=True).latest_step() == 8
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps[-1] == 8
