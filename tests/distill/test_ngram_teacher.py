"""The n-gram in the teacher (`lm.distill.ngram_teacher`) on real gl-ctg text: the order and the
teacher's weight are chosen on dev alone (another test split changes neither), the weight is the
argmin of the dev curve, whose ends are the teacher alone (as `lm.scoring.evaluate` scores it) and
the token n-gram alone; a mixed top-k cache holds ln(w p_teacher + (1 - w) p_ngram) on the
teacher's own top-k, and the teacher alone's cache beside it is left as it was."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import lm.distill.ngram_teacher as ngram_teacher
from lm.corpus import open_snapshot
from lm.data import Batches, real_pool
from lm.distill.ngram_teacher import WEIGHTS, NgramMix, fit_mix, token_ngram
from lm.distill.teacher_cache import TeacherCache
from lm.loader import load_model
from lm.model import init_params, make_apply, preset
from lm.ngram import Ngram
from lm.scoring import evaluate
from tests.helpers import corpora, gl_lines, tiny_run


@pytest.fixture(scope="module")
def teacher_and_corpus(tmp_path_factory: pytest.TempPathFactory):
    run = tiny_run(tmp_path_factory)
    return load_model(str(run)), open_snapshot(str(corpora(tmp_path_factory)["gl"]))


def test_order_and_weight_are_chosen_on_dev_alone(teacher_and_corpus, monkeypatch: pytest.MonkeyPatch) -> None:
    model, snap = teacher_and_corpus
    mix, fig = fit_mix(model, snap)
    curve = {float(w): b for w, b in fig["dev_bits_per_char_by_weight"].items()}
    assert list(curve) == list(WEIGHTS) and mix.weight == min(curve, key=curve.get) == fig["teacher_weight"]
    assert fig["dev_bits_per_char"] <= min(curve[0.0], curve[1.0]) + 1e-6 and curve[0.0] != curve[1.0]
    # the curve's ends: the teacher alone as evaluate scores it, the token n-gram alone
    assert curve[1.0] == pytest.approx(evaluate(model, "dev", str(snap.root))["bits_per_char"], abs=1e-5)
    assert fig["ngram_dev_bits_per_char"] == pytest.approx(curve[0.0], abs=1e-6)
    # another test split: the same choice, another test figure
    real = ngram_teacher.eval_stream

    def other_test(tok, snapshot, split):
        return real(tok, snapshot, "dev" if split == "test" else split)
    monkeypatch.setattr(ngram_teacher, "eval_stream", other_test)
    mix2, fig2 = fit_mix(model, snap)
    assert (mix2.order, mix2.weight) == (mix.order, mix.weight)
    assert fig2["test_bits_per_char"] == pytest.approx(fig["dev_bits_per_char"], abs=1e-5) != fig["test_bits_per_char"]


def test_a_mixed_cache_holds_the_mixture_on_the_teachers_top_k(tok, tmp_path: Path) -> None:
    cfg = preset("tiny", vocab_size=tok.vocab_size, dim=64, hidden_dim=128)
    apply, params = make_apply(cfg), init_params(cfg, 11)
    pools = [real_pool(tok, gl_lines("train", 60), 32, None)]
    stream = real_pool(tok, gl_lines("train", 300), 32, None).packed.tokens.reshape(-1)
    mix = NgramMix(Ngram(stream, tok.vocab_size, tok.vocab_size, 4), 3, 0.7)
    plain = TeacherCache(tmp_path, "t@1", 8, 1.0, apply, params)
    mixed = TeacherCache(tmp_path, "t@1", 8, 1.0, apply, params, mix)
    for c in (plain, mixed):
        c.prepare(pools)
    batch = Batches(pools[0], 8, 0).next()
    alone, both = plain.lookup(batch, pools), mixed.lookup(batch, pools)
    assert np.array_equal(alone.indices, both.indices)
    p_ngram = mix.ngram.next_probs_of(batch.clean_inputs, alone.indices, 3)
    want = np.log(0.7 * np.exp(alone.logprobs.astype(np.float64)) + 0.3 * p_ngram)
    np.testing.assert_allclose(both.logprobs.astype(np.float64), want, atol=2e-3, rtol=1e-3)
    assert not np.allclose(both.logprobs, alone.logprobs, atol=1e-2)
    assert (np.exp(both.logprobs.astype(np.float64)).sum(-1) < 1.0 + 1e-2).all()  # the bucket keeps the rest
    plain.flush()
    mixed.flush()
    reopened = TeacherCache(tmp_path, "t@1", 8, 1.0, apply, params)
    reopened.prepare(pools)
    again = reopened.lookup(batch, pools)
    assert reopened.computed_tokens == 0 and np.array_equal(again.logprobs, alone.logprobs)


def test_a_token_ngram_counts_the_train_stream_only(teacher_and_corpus) -> None:
    model, snap = teacher_and_corpus
    ngram = token_ngram(model.tokenizer, snap, 3)
    assert ngram.base == ngram.uniform == model.tokenizer.vocab_size
    dev_piece = model.tokenizer.encode(snap.text("dev")[:400])
    train_piece = model.tokenizer.encode(snap.text("train")[:400])
    assert ngram.bits_per_char_at(train_piece, 3) < ngram.bits_per_char_at(dev_piece, 3)
