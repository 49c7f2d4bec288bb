"""Training on real gl-ctg text with the tiny preset: the loss falls, the run folder is complete,
resume is exact, and bad inputs stop with one clear line."""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lm.errors import run_cli
from lm.corpus import open_snapshot
from lm.tokenizer import Tokenizer, train_tokenizer
from lm.train import main as train_main
from tests.helpers import TINY, copy_with_empty, corpora, tiny_run


def restore(path: Path) -> dict:
    return ocp.StandardCheckpointer().restore(path.resolve())


def test_loss_falls(tmp_path_factory: pytest.TempPathFactory) -> None:
    run = tiny_run(tmp_path_factory)
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if "loss" in r]
    dev = [r for r in rows if "dev_loss" in r]
    assert train[0]["step"] == 1 and train[-1]["step"] == 60
    assert train[-1]["loss"] < train[0]["loss"] - 1.0
    assert [r["step"] for r in dev] == [20, 40, 60]
    assert dev[-1]["dev_loss"] < dev[0]["dev_loss"]
    timed = [r for r in train if "tokens_per_s" in r]
    assert "compile_seconds" in train[0] and len(timed) == len(train) - 1
    assert all(r["tokens_per_s"] > 0 and r["train_seconds"] > 0 and r["elapsed"] > 0 and r["lr"] >= 0 for r in timed)


def test_run_folder_is_complete(tmp_path_factory: pytest.TempPathFactory) -> None:
    run = tiny_run(tmp_path_factory)
    info = json.loads((run / "run.json").read_text())
    tok = Tokenizer.load(run / "tokenizer.model")
    assert info["devices"] == len(jax.local_devices())
    assert info["corpus"]["name"] == "gl-small" and len(info["corpus"]["version"]) == 12
    assert info["tokenizer"] == {"file": "tokenizer.model", "type": "unigram", "vocab_size": tok.vocab_size, "sha256": tok.sha256}
    assert info["model"]["vocab_size"] == tok.vocab_size and info["params"] > 0
    assert info["model"]["dim"] == 32 and info["train"]["batch"] == 8
    state = restore(run / "checkpoints" / "60" / "state")
    assert set(state) == {"params", "opt_state", "step"} and int(state["step"]) == 60
    assert sorted(p.name for p in (run / "best").iterdir()) == ["60"]


def test_n_steps_then_resume_equals_straight_run(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    gl = str(corpora(tmp_path_factory)["gl"])
    common = ["--corpus", gl, *TINY, "--decay-steps", "30", "--eval-every", "10"]
    split, straight = tmp_path / "split", tmp_path / "straight"
    assert train_main([*common, "--steps", "12", "--out", str(split)]) == 0
    assert train_main([*common, "--steps", "30", "--out", str(split)]) == 0
    assert train_main([*common, "--steps", "30", "--out", str(straight)]) == 0
    a, b = restore(split / "checkpoints" / "30" / "state"), restore(straight / "checkpoints" / "30" / "state")
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        assert np.array_equal(np.asarray(x), np.asarray(y))  # bitwise: params, optimiser, step
    assert json.loads((split / "run.json").read_text())["resumes"] == [12]
    # asking for steps already taken changes nothing
    assert train_main([*common, "--steps", "30", "--out", str(split)]) == 0
    assert sorted(p.name for p in (split / "checkpoints").iterdir()) == ["30"]


def test_a_kill_between_the_best_and_the_resume_checkpoint_resumes(tmp_path: Path,
                                                                   tmp_path_factory: pytest.TempPathFactory) -> None:
    """Killed after `best/10` was written but before `checkpoints/10`: the re-run trains steps 6-10
    again, saves the same best step again, and ends where a straight run ends (it once failed
    with Orbax's StepAlreadyExistsError on every re-run)."""
    gl = str(corpora(tmp_path_factory)["gl"])
    common = ["--corpus", gl, *TINY, "--decay-steps", "10", "--eval-every", "5"]
    killed, straight = tmp_path / "killed", tmp_path / "straight"
    assert train_main([*common, "--steps", "10", "--out", str(straight)]) == 0
    assert train_main([*common, "--steps", "5", "--out", str(killed)]) == 0
    shutil.copytree(straight / "best" / "10", killed / "best" / "10")  # what the kill left behind
    assert train_main([*common, "--steps", "10", "--out", str(killed)]) == 0
    for which in ("checkpoints", "best"):
        a, b = restore(killed / which / "10" / "state"), restore(straight / which / "10" / "state")
        assert all(np.array_equal(np.asarray(x), np.asarray(y))
                   for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def test_changed_settings_on_resume_are_a_usage_error(tmp_path_factory: pytest.TempPathFactory, capsys) -> None:
    run = tiny_run(tmp_path_factory)
    code = run_cli(train_main, ["--out", str(run), "--steps", "80", "--lr", "0.5", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "--lr" in err and "fixed" in err


def test_nan_loss_stops_with_its_cause(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, capsys) -> None:
    gl = str(corpora(tmp_path_factory)["gl"])
    code = run_cli(train_main, ["--corpus", gl, *TINY, "--steps", "30", "--lr", "1e30", "--out", str(tmp_path / "nan")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1
    assert "loss is nan" in err[0] and "diverged" in err[0] and "--lr" in err[0]


def test_empty_train_split_and_missing_corpus(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, capsys) -> None:
    gl = corpora(tmp_path_factory)["gl"]
    empty = copy_with_empty(gl, "train", tmp_path / "c")
    code = run_cli(train_main, ["--corpus", str(empty), *TINY, "--steps", "5", "--out", str(tmp_path / "r1")])
    err = capsys.readouterr().err.strip()
    assert code == 1 and "train split is empty" in err and err.count("\n") == 0
    code = run_cli(train_main, ["--corpus", str(tmp_path / "nope"), *TINY, "--steps", "5", "--out", str(tmp_path / "r2")])
    err = capsys.readouterr().err.strip()
    assert code == 1 and "no corpus snapshot" in err
    code = run_cli(train_main, [*TINY, "--steps", "5", "--out", str(tmp_path / "r3")])
    assert code == 2 and "--corpus is required" in capsys.readouterr().err


def test_too_little_text_for_the_vocabulary(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, capsys) -> None:
    gl = str(corpora(tmp_path_factory)["gl"])
    code = run_cli(train_main, ["--corpus", gl, *TINY, "--steps", "5", "--vocab-size", "20000", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip()
    assert code == 1 and "20000-piece" in err and "--vocab-size" in err and err.count("\n") == 0


def test_augmented_text_joins_training_not_the_tokenizer(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Augmented text is trained on, but the tokenizer is the train split's alone, byte for byte
    (an arm's vocabulary, and so its score, never moves with another arm's data)."""
    gl = str(corpora(tmp_path_factory)["gl"])
    aug = tmp_path / "augmented"
    aug.mkdir()
    texts = [f"Unha frase aumentada número {i} con zorblatix e zorblatix." for i in range(300)]
    # noised variants (step "typos", kind noise in the set's stats.json) are never targets
    texts += [f"Unah frsae con qwxvvq {i} qwxvvq." for i in range(100)]
    steps = ["synonyms"] * 300 + ["typos"] * 100
    pq.write_table(pa.table({"id": [str(i) for i in range(400)], "text": texts, "augmenter": steps}),
                   aug / "part-0.parquet")
    (tmp_path / "stats.json").write_text(json.dumps({"augmenters": {"synonyms": {"augmenter": "synonyms"},
                                                                    "typos": {"augmenter": "noise"}}}))
    run = tmp_path / "aug-run"
    assert train_main(["--corpus", gl, *TINY, "--steps", "4", "--augmented", str(aug),
                       "--augmented-weight", "0.3", "--out", str(run)]) == 0
    tok = Tokenizer.load(run / "tokenizer.model")
    assert not any("zorbla" in tok.sp.id_to_piece(i) or "qwx" in tok.sp.id_to_piece(i) for i in range(tok.vocab_size))
    real = train_tokenizer(open_snapshot(gl).documents("train"))
    assert (run / "tokenizer.model").read_bytes() == real.model
    info = json.loads((run / "run.json").read_text())
    assert info["train"]["augmented"] == str(aug.resolve()) and info["train"]["augmented_weight"] == 0.3
    assert info["data"]["augmented"]["variants"] == 300


def test_max_seconds_stops_with_a_checkpoint_and_resumes(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, capsys) -> None:
    gl = str(corpora(tmp_path_factory)["gl"])
    run = tmp_path / "timed"
    assert train_main(["--corpus", gl, *TINY, "--steps", "60", "--max-seconds", "0", "--out", str(run)]) == 0
    assert "--max-seconds 0 reached at step 1 of 60" in capsys.readouterr().err
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["1"]
    assert train_main(["--corpus", gl, *TINY, "--steps", "3", "--out", str(run)]) == 0
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["3"]


def test_lm_train_is_the_trainer_with_the_ce_loss(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """`lm.train` adds settings and a run folder, nothing else: the same steps of `lm.trainer.train`
    with cross-entropy, on batches built here from the same pool, give bit-identical parameters."""
    from lm.data import Batches, real_pool
    from lm.losses import LossConfig
    from lm.model import preset
    from lm.trainer import LoopConfig, OptimConfig, train

    gl = corpora(tmp_path_factory)["gl"]
    cmd = tmp_path / "cmd"
    assert train_main(["--corpus", str(gl), *TINY, "--steps", "9", "--warmup", "2", "--lr", "3e-3",
                       "--eval-every", "9", "--out", str(cmd)]) == 0
    tok = Tokenizer.load(cmd / "tokenizer.model")
    snap = open_snapshot(gl)
    cfg = preset("tiny", vocab_size=tok.vocab_size)
    data = Batches(real_pool(tok, snap.documents("train"), cfg.context, None), 8, seed=0)
    direct = tmp_path / "direct"
    summary = train(direct, cfg, OptimConfig(lr=3e-3, warmup=2, decay_steps=9), LoopConfig(9, 8, 9, 9, quiet=True),
                    data, None, seed=0, loss=LossConfig())
    assert summary.steps == 9
    a, b = restore(cmd / "checkpoints" / "9" / "state"), restore(direct / "checkpoints" / "9" / "state")
    leaves = list(zip(jax.tree.leaves(a["params"]), jax.tree.leaves(b["params"]), strict=True))
    assert leaves and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in leaves)


def test_early_stopping_keeps_the_best_checkpoint(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Dev text of random token ids gets worse as the model learns real text: the first evaluation
    is the best, training stops `patience` evaluations later, and the model loaded from the run
    is that best checkpoint, not the last; a re-run has nothing to do."""
    from lm.corpus import open_snapshot
    from lm.data import Batches, Packed, real_pool
    from lm.loader import load_model
    from lm.model import preset
    from lm.run import write_run
    from lm.trainer import Dev, LoopConfig, OptimConfig, train

    gl = corpora(tmp_path_factory)["gl"]
    tok = Tokenizer.load(tiny_run(tmp_path_factory) / "tokenizer.model")
    cfg = preset("tiny", vocab_size=tok.vocab_size, dropout=0.1)
    data = Batches(real_pool(tok, open_snapshot(gl).documents("train"), cfg.context, None), 8, seed=0)
    noise = np.random.default_rng(0).integers(0, tok.vocab_size, (16, cfg.context + 1)).astype(np.int32)
    dev = Dev(Packed(noise, np.ones((16, cfg.context), np.float32)), None)
    args = (tmp_path / "es", cfg, OptimConfig(lr=1e-2, warmup=2, decay_steps=200), LoopConfig(200, 8, 4, 4, quiet=True,
                                                                                            patience=3), data, dev)
    summary = train(*args, seed=0)
    assert summary.stopped_early and summary.best_step == 4 and summary.steps == 16
    assert not summary.deadline_reached
    dev_losses = [json.loads(x)["dev_loss"] for x in (tmp_path / "es" / "metrics.jsonl").read_text().splitlines()
                  if "dev_loss" in x]
    assert len(dev_losses) == 4 and dev_losses[0] == min(dev_losses)
    best = restore(tmp_path / "es" / "best" / "4" / "state")["params"]
    last = restore(tmp_path / "es" / "checkpoints" / "16" / "state")["params"]
    tok.save(tmp_path / "es" / "tokenizer.model")
    write_run(tmp_path / "es", cfg, {"batch": 8, "seed": 0}, tok.describe(), open_snapshot(gl), 200)
    model = load_model(tmp_path / "es")
    pairs = list(zip(jax.tree.leaves(model.params), jax.tree.leaves(best), jax.tree.leaves(last), strict=True))
    assert all(np.array_equal(np.asarray(m), np.asarray(b)) for m, b, _ in pairs)
    assert not all(np.array_equal(np.asarray(m), np.asarray(x)) for m, _, x in pairs)
    again = train(*args, seed=0)  # stopped for good: resuming trains nothing
    assert again == dataclasses.replace(summary, resumed_from=16, loss=None, dev_loss=None, compile_seconds=0.0,
                                        tokens_per_second=again.tokens_per_second, elapsed=again.elapsed)
    assert not again.trained


def test_rerun_of_an_early_stopped_run_says_it_is_done(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory,
                                                        capsys) -> None:
    """`lm.train --patience K` run again on a run that stopped early exits 0 and says the run is
    done (it once failed with a KeyError: the early exit returned a summary without `dev_loss`)."""
    import lm.trainer
    evals = iter(range(1, 100))
    real_eval = lm.trainer.block_eval

    def rising_eval(*args, **kw):
        nll, n = real_eval(*args, **kw)
        return nll * next(evals), n  # every evaluation worse than the one before

    cmd = ["--corpus", str(corpora(tmp_path_factory)["gl"]), *TINY, "--steps", "40", "--eval-every", "2",
           "--patience", "2", "--out", str(tmp_path / "run")]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(lm.trainer, "block_eval", rising_eval)
        assert train_main(cmd) == 0
    assert "stopped at step 6" in capsys.readouterr().err
    assert run_cli(train_main, cmd) == 0
    out = capsys.readouterr().out
    assert "the run is done: it stopped early at step 6" in out and "best at step 2" in out


def test_dropout_trains_differently_but_scores_deterministically(tmp_path: Path,
                                                                tmp_path_factory: pytest.TempPathFactory) -> None:
    """Dropout draws from the seed and step: two runs agree bit for bit, resume included; a run
    without it differs; evaluation never drops anything."""
    gl = str(corpora(tmp_path_factory)["gl"])
    common = ["--corpus", gl, *TINY, "--eval-every", "6", "--lr", "3e-3", "--decay-steps", "6", "--warmup", "1"]
    for name, extra in (("a", ["--dropout", "0.2", "--steps", "6"]), ("b", ["--dropout", "0.2", "--steps", "3"]),
                        ("c", ["--steps", "6"])):
        assert train_main([*common, *extra, "--out", str(tmp_path / name)]) == 0
    assert train_main([*common, "--dropout", "0.2", "--steps", "6", "--out", str(tmp_path / "b")]) == 0
    leaves = {n: jax.tree.leaves(restore(tmp_path / n / "checkpoints" / "6" / "state")["params"]) for n in "abc"}
    assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(leaves["a"], leaves["b"], strict=True))
    assert not all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(leaves["a"], leaves["c"], strict=True))
    from lm.loader import load_model
    model = load_model(tmp_path / "a")
    assert model.cfg.dropout == 0.2
    x = np.asarray([[1, 2, 3, 4, 5, 6]], np.int32)
    assert np.array_equal(model.nll(x[:, :-1], x[:, 1:]), model.nll(x[:, :-1], x[:, 1:]))


@pytest.mark.parametrize("flags, message", [
    (["--heads", "0"], "model n_heads must be positive, not 0"),
    (["--context", "100000"], "--context must be at most 4096 tokens, not 100000"),
    (["--lr", "-1"], "--lr must be positive, not -1.0"),
    (["--lr", "nan"], "--lr must be positive, not nan"),
    (["--warmup", "-5"], "--warmup must be at least 0, not -5"),
    (["--log-every", "0"], "--log-every must be at least 1, not 0"),
    (["--eval-every", "0"], "--eval-every must be at least 1, not 0"),
    (["--seed", "-1"], "--seed at least 0, not 8 and -1"),
    (["--vocab-size", "-5"], "--vocab-size must be positive, not -5"),
    (["--beta2", "1.5"], "--beta2 must be in (0, 1), not 1.5"),
])
def test_bad_values_are_one_line_usage_errors(flags: list[str], message: str, tmp_path: Path,
                                              tmp_path_factory: pytest.TempPathFactory, capsys) -> None:
    """Values that used to train uphill, divide by zero or allocate terabytes stop before any work
    with exit 2 and one line naming the option (issue 29, items 11 and 12)."""
    gl = str(corpora(tmp_path_factory)["gl"])
    code = run_cli(train_main, ["--corpus", gl, *TINY, "--steps", "5", *flags, "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert not (tmp_path / "r").exists()  # checked before any work
