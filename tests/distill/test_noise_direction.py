"""The direction of noise in the distillation rounds: the pools that `Rounds.build_pools` makes
from a round's kept variants read each noised variant as the student's input and predict its clean
parent, so noised text is never a target (other augmenters' variants are plain text pools)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lm.corpus import augmenter_kinds, open_snapshot
from lm.data import Batches, text_pool
from lm.distill.config import Settings
from lm.distill.rounds import Rounds
from lm.distill.variants import ensure_augmented, read_variants, write_variants
from lm.distill.workspace import Workspace
from lm.tokenizer import Tokenizer
from tests.helpers import SYNONYMS_AND_NOISE, augmented_gl


@pytest.fixture(scope="module")
def snapshot_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """120 train lines of gl-ctg, augmented by MyThes synonyms and noise (two variants each)."""
    return augmented_gl(tmp_path_factory.mktemp("noise-direction"), (120, 20, 20),
                        "[augment]\nseed = 5\n" + SYNONYMS_AND_NOISE, "glnoise")


def rounds_for(snapshot_dir: Path, run: Path, tok: Tokenizer) -> Rounds:
    """The rounds of a run on the snapshot, as far as building pools needs (no judges, no teacher:
    `Rounds.__init__` would train nothing here, but scores real text with the judges)."""
    snap = open_snapshot(str(snapshot_dir))
    settings = Settings(corpus=str(snap.root), preset="tiny")
    assert settings.noised_input  # the default: noise is input, never a target
    loop = Rounds.__new__(Rounds)
    loop.ws = Workspace(run, snap, settings, tok, True, 0.0)
    loop.noise_kinds = augmenter_kinds(ensure_augmented(snap))
    loop.student_cfg = settings.student_model(tok.vocab_size)
    return loop


def test_round_pools_read_noise_and_predict_the_clean_parent(snapshot_dir: Path, tmp_path: Path, tok) -> None:
    loop = rounds_for(snapshot_dir, tmp_path, tok)
    assert loop.noise_kinds == {"synonyms": "synonyms", "noise": "noise"}
    snap = loop.ws.snapshot
    variants = read_variants(ensure_augmented(snap))
    # a round's kept variants, as the loop reads them back: RUN/rounds/r1/kept.parquet
    write_variants(loop.path(1, "kept.parquet"), variants)
    kept = loop.kept_until(1)
    pools = {p.name: p for p in loop.build_pools(kept)}
    assert set(pools) == {"synonyms", "noise"}
    parents = {r["id"]: r["text"] for r in snap.records("train")}
    noise = [r for r in kept if r["augmenter"] == "noise"]
    assert len(noise) > 50 and sum(r["text"] != parents[r["parent_id"]] for r in noise) > 50
    ctx, sep = loop.student_cfg.context, snap.separator
    clean = text_pool("clean", tok, [parents[r["parent_id"]] for r in noise], ctx, sep)
    noised = text_pool("noised", tok, [r["text"] for r in noise], ctx, sep)
    pool = pools["noise"]
    # the targets: the clean parents' tokens exactly, in the kept variants' order
    assert pool.inputs is not None and np.array_equal(pool.packed.tokens, clean.packed.tokens)
    assert not np.array_equal(pool.packed.tokens, noised.packed.tokens)
    # the inputs: the noised tokens written over the clean ones where they differ
    differ = pool.inputs != pool.packed.tokens[:, :-1]
    assert 0.02 < differ.mean() < 0.6
    noised_ids = set(np.concatenate([tok.encode(r["text"]) for r in noise]).tolist())
    assert set(pool.inputs[differ].tolist()) <= noised_ids
    stream = np.concatenate([pool.packed.tokens[0, :1], pool.packed.tokens[:, 1:][pool.packed.mask > 0]])
    target_lines = set(tok.decode(t for t in stream.tolist() if t != tok.eos_id).split(sep))
    assert not target_lines & {r["text"] for r in noise if r["text"] != parents[r["parent_id"]]}
    # the other augmenter's variants are text: read as they are, no separate input
    synonyms = [r["text"] for r in kept if r["augmenter"] == "synonyms"]
    assert pools["synonyms"].inputs is None
    assert np.array_equal(pools["synonyms"].packed.tokens, text_pool("s", tok, synonyms, ctx, sep).packed.tokens)


def test_round_batches_train_on_clean_targets_of_noised_rows(snapshot_dir: Path, tmp_path: Path, tok) -> None:
    """What the student is fed from those pools: a noise row's targets are its parent's next
    tokens, its inputs the noised ones (`Batches`, as `Rounds.train_student` builds it)."""
    loop = rounds_for(snapshot_dir, tmp_path, tok)
    snap = loop.ws.snapshot
    kept = [r for r in read_variants(ensure_augmented(snap)) if r["augmenter"] == "noise"]
    (pool,) = loop.build_pools(kept)
    parents = {r["id"]: r["text"] for r in snap.records("train")}
    ctx, sep = loop.student_cfg.context, snap.separator
    clean = text_pool("clean", tok, [parents[r["parent_id"]] for r in kept], ctx, sep)
    real = text_pool("real", tok, list(parents.values()), ctx, sep)
    batches = Batches(real, 8, 1, [pool], {"noise": 1.0}, share=0.5)
    seen = 0
    for _ in range(6):
        b = batches.next()
        for i, (k, row) in enumerate(zip(b.pools, b.rows)):
            if batches.pools[k].name != "noise":
                continue
            seen += 1
            assert np.array_equal(b.targets[i], clean.packed.tokens[row, 1:])
            assert np.array_equal(b.inputs[i], pool.inputs[row])
            assert np.array_equal(b.clean_inputs[i], clean.packed.tokens[row, :-1])
    assert seen > 5
