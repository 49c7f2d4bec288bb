"""Distillation losses and the teacher's judgement, on logits of tiny models over real gl-ctg text."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.helpers import gl_lines, np_distill_kl, np_log_softmax
from lm.data import align_noised, noised_pool, text_pool
from lm.distill.judge import quantile_filter
from lm.losses import KL_KINDS, TAILS, cross_entropy, distill_loss, kl_full, kl_topk, topk_of
from lm.loader import FlaxModel
from lm.model import ModelConfig, init_params, make_apply
from lm.scoring import LN2, buckets_for, score_stream, texts_bits_per_char

CFG = ModelConfig(vocab_size=512, dim=32, n_layers=2, n_heads=2, hidden_dim=64, context=32)


@pytest.fixture(scope="module")
def batch(tok):
    """Teacher and student logits [4, 32, 512] on real text, targets and a mask with a hole."""
    stream = np.asarray(tok.encode(" ".join(gl_lines("dev", 40))), np.int32)[: 4 * 33].reshape(4, 33)
    x, y = jnp.asarray(stream[:, :-1]), jnp.asarray(stream[:, 1:])
    apply = make_apply(CFG)
    # a trained-looking teacher: sharpen a random model's logits so distributions are peaked
    teacher = apply(init_params(CFG, 1), x) * 40.0
    student = apply(init_params(CFG, 2), x) * 25.0
    mask = jnp.ones(y.shape, jnp.float32).at[3, 20:].set(0.0)
    return teacher, student, y, mask


def np_kl(p_logits: np.ndarray, q_logits: np.ndarray, t: float) -> np.ndarray:
    def logsm(z):
        z = z / t
        z = z - z.max(-1, keepdims=True)
        return z - np.log(np.exp(z).sum(-1, keepdims=True))
    lp, lq = logsm(np.asarray(p_logits, np.float64)), logsm(np.asarray(q_logits, np.float64))
    return (np.exp(lp) * (lp - lq)).sum(-1)


@pytest.mark.parametrize("tail", TAILS)
@pytest.mark.parametrize("kind", KL_KINDS)
def test_every_kl_kind_and_tail_equals_the_numpy_reference(kind: str, tail: str) -> None:
    """Guards `kind` (forward/reverse) and both top-k tails at K < vocabulary and K = vocabulary,
    at two temperatures, through `kl_topk`, `kl_full` and `distill_loss`: each against a plain
    numpy reference on small random logits (a KL that ignored `kind` or `tail` fails here)."""
    rng = np.random.default_rng(17)
    vocab = 40
    teacher = rng.standard_normal((2, 5, vocab)).astype(np.float32) * 2.0
    student = rng.standard_normal((2, 5, vocab)).astype(np.float32) * 1.5
    targets = rng.integers(0, vocab, (2, 5))
    mask = np.ones((2, 5), np.float32)
    mask[1, 3:] = 0.0
    t_j, s_j, y_j, m_j = (jnp.asarray(a) for a in (teacher, student, targets, mask))
    logp = np_log_softmax(student)
    ce = float(-(np.take_along_axis(logp, targets[..., None], -1)[..., 0] * mask).sum() / mask.sum())
    values = {}
    for t in (1.0, 2.5):
        full = np_distill_kl(teacher, student, mask, t, kind)
        assert float(kl_full(t_j, s_j, m_j, t, kind)) == pytest.approx(full, rel=1e-5, abs=1e-6)
        loss, parts = distill_loss(s_j, y_j, m_j, alpha=0.3, temperature=t, kind=kind, teacher_logits=t_j)
        assert float(parts["kl"]) == pytest.approx(full, rel=1e-5, abs=1e-6)
        assert float(loss) == pytest.approx(0.3 * ce + 0.7 * t * t * full, rel=1e-5)
        for k in (1, 6, vocab):
            expected = np_distill_kl(teacher, student, mask, t, kind, k, tail)
            top = topk_of(t_j, k, t)
            got = float(kl_topk(top, s_j, m_j, t, kind, tail))
            assert got == pytest.approx(expected, rel=1e-4, abs=1e-5), (t, k)
            loss, parts = distill_loss(s_j, y_j, m_j, alpha=0.3, temperature=t, kind=kind, tail=tail, teacher_topk=top)
            assert float(parts["kl"]) == pytest.approx(expected, rel=1e-4, abs=1e-5)
            assert float(loss) == pytest.approx(0.3 * ce + 0.7 * t * t * expected, rel=1e-4, abs=1e-5)
            values[t, k] = expected
        # K = vocabulary: both tails are the full KL; a smaller K is not (except renorm at K = 1: 0)
        assert values[t, vocab] == pytest.approx(full, rel=1e-6, abs=1e-9)
        assert values[t, 6] != pytest.approx(full, rel=1e-2)
    # the reference itself tells the kinds and the tails apart on these logits
    other = "reverse" if kind == "forward" else "forward"
    assert np_distill_kl(teacher, student, mask, 2.5, other, 6, tail) != pytest.approx(values[2.5, 6], rel=1e-2)
    other_tail = "renorm" if tail == "bucket" else "bucket"
    assert np_distill_kl(teacher, student, mask, 2.5, kind, 6, other_tail) != pytest.approx(values[2.5, 6], rel=1e-2)


def test_alpha_one_is_cross_entropy(batch) -> None:
    teacher, student, y, mask = batch
    loss, parts = distill_loss(student, y, mask, alpha=1.0, temperature=3.0, teacher_logits=teacher)
    ce = cross_entropy(student, y, mask)
    assert float(loss) == pytest.approx(float(ce), rel=1e-6)
    assert float(parts["kl"]) > 0.01  # the KL was computed, and weighted by zero
    # without a teacher the loss is CE whatever alpha says
    assert float(distill_loss(student, y, mask, alpha=0.2, temperature=2.0)[0]) == pytest.approx(float(ce), rel=1e-6)


def test_identical_logits_give_zero_kl(batch) -> None:
    teacher, _, y, mask = batch
    for kind in ("forward", "reverse"):
        assert abs(float(kl_full(teacher, teacher, mask, 2.0, kind))) < 1e-6
        for tail in ("renorm", "bucket"):
            assert abs(float(kl_topk(topk_of(teacher, 16, 2.0), teacher, mask, 2.0, kind, tail))) < 1e-5
    loss, parts = distill_loss(teacher, y, mask, alpha=0.0, temperature=2.0, teacher_logits=teacher)
    assert abs(float(loss)) < 1e-5 and abs(float(parts["kl"])) < 1e-6


def test_top_k_with_k_equal_to_the_vocabulary_is_the_full_kl(batch) -> None:
    teacher, student, _, mask = batch
    for t in (1.0, 2.5):
        for kind in ("forward", "reverse"):
            full = float(kl_full(teacher, student, mask, t, kind))
            for tail in ("renorm", "bucket"):
                top = topk_of(teacher, CFG.vocab_size, t)
                assert float(kl_topk(top, student, mask, t, kind, tail)) == pytest.approx(full, rel=1e-4, abs=1e-6)
                # as the cache stores it: float16 log-probabilities
                top16 = top._replace(logprobs=top.logprobs.astype(jnp.float16))
                assert float(kl_topk(top16, student, mask, t, kind, tail)) == pytest.approx(full, rel=2e-2, abs=1e-3)
    # a small K: renorm ignores the tail, bucket keeps it; both below the full KL's scale and finite
    top = topk_of(teacher, 8, 2.0)
    r, b = (float(kl_topk(top, student, mask, 2.0, "forward", tail)) for tail in ("renorm", "bucket"))
    assert np.isfinite(r) and np.isfinite(b) and r != b


def test_temperature_softens_and_t_squared_keeps_the_gradient_scale(batch) -> None:
    teacher, student, y, mask = batch
    m = np.asarray(mask)
    for t in (1.0, 2.0, 4.0):
        expected = (np_kl(teacher, student, t) * m).sum() / m.sum()
        loss, parts = distill_loss(student, y, mask, alpha=0.3, temperature=t, teacher_logits=teacher)
        assert float(parts["kl"]) == pytest.approx(expected, rel=1e-4)
        ce = float(cross_entropy(student, y, mask))
        assert float(loss) == pytest.approx(0.3 * ce + 0.7 * t * t * expected, rel=1e-4)
    # softened: the teacher's entropy grows with T
    ent = []
    for t in (1.0, 2.0, 4.0):
        p = jax.nn.softmax(teacher / t, axis=-1)
        ent.append(float(-(p * jnp.log(p + 1e-30)).sum(-1).mean()))
    assert ent[0] < ent[1] < ent[2]
    # T^2 * KL has a gradient of about the same size at large T (Hinton et al.), KL alone does not

    def grad_norm(t: float, scaled: bool) -> float:
        f = lambda s: (t * t if scaled else 1.0) * kl_full(teacher / 10, s, mask, t)  # noqa: E731
        return float(jnp.linalg.norm(jax.grad(f)(student / 10)))

    ratio_scaled = grad_norm(16.0, True) / grad_norm(8.0, True)
    ratio_plain = grad_norm(16.0, False) / grad_norm(8.0, False)
    assert 0.8 < ratio_scaled < 1.25 and ratio_plain < 0.3


def test_quantile_filter_keeps_and_drops_by_the_quantile() -> None:
    real = np.linspace(2.0, 4.0, 101)            # quantile 0.9 = 3.8
    variants = np.array([1.0, 3.79, 3.8, 3.81, 5.0, np.nan, 2.5, 3.9])
    names = ["noise", "noise", "noise", "noise", "noise", "noise", "synonyms", "synonyms"]
    v = quantile_filter([real], variants, names, 0.9)
    assert v.threshold == pytest.approx(3.8)
    assert v.keep.tolist() == [True, True, True, False, False, False, True, False]
    assert v.per_augmenter == {"noise": {"variants": 6, "kept": 3, "kept_fraction": 0.5},
                               "synonyms": {"variants": 2, "kept": 1, "kept_fraction": 0.5}}
    assert quantile_filter([real], variants, names, 1.0).keep.sum() == 6
    assert quantile_filter([real], variants, names, 0.05).keep.tolist() == [True] + [False] * 7
    with pytest.raises(ValueError):
        quantile_filter([real], variants, names, 0.0)


def test_quantile_filter_holds_each_variant_to_its_own_judges_threshold() -> None:
    """Guards the keep rule `judge.judge_round` runs: a variant scored by judge k is kept against
    judge k's quantile of its real sentences, not the other's; the verdict's threshold is their mean."""
    real = [np.linspace(2.0, 4.0, 101), np.linspace(3.0, 5.0, 101)]   # quantile 0.9: 3.8 and 4.8
    variants = np.array([3.9, 3.9, 4.9, 4.7])
    v = quantile_filter(real, variants, ["a"] * 4, 0.9, judge=np.array([0, 1, 1, 0]))
    assert v.thresholds == pytest.approx([3.8, 4.8]) and v.threshold == pytest.approx(4.3)
    assert v.keep.tolist() == [False, True, False, False]


def test_texts_bits_per_char_equals_lm_evaluate_text_by_text(tok) -> None:
    """Bucketed, padded, windowed scoring gives each text the bits per character lm.evaluate gives it."""
    model = FlaxModel(CFG, init_params(CFG, 3), tok, {})
    texts = gl_lines("test", 12) + [" ".join(gl_lines("test", 30)[12:20]), "Si."]
    assert any(len(tok.encode(t)) > CFG.context for t in texts)  # windows are exercised
    got = texts_bits_per_char(model.nll, tok.encode, tok.eos_id, texts, CFG.context, tokens_per_batch=256)
    for text, bpc in zip(texts, got):
        stream = np.asarray([tok.eos_id] + tok.encode(text), np.int32)
        nll, n = score_stream(model, stream, CFG.context // 2)
        assert n == len(stream) - 1
        assert bpc == pytest.approx(nll / LN2 / len(text), rel=1e-5)
    assert buckets_for(128) == [16, 32, 48, 64, 96, 128] and buckets_for(32) == [16, 32]


def test_noised_input_alignment_keeps_the_clean_length(tok) -> None:
    clean = "A análise das políticas públicas de emprego"
    noised = "A anális edas politicas públicas de empreog"
    c, n = tok.encode(clean), tok.encode(noised)
    a = align_noised(c, n)
    assert len(a) == len(c) and a != c and set(a) <= set(c) | set(n)
    assert align_noised(c, c) == c
    # a pool of (clean parent, noised variant) pairs: targets are the clean text, inputs noised
    from augment.noise import NoiseAugmenter
    parents = gl_lines("train", 30)
    noised = [v[0] if v else p for p, v in zip(parents, NoiseAugmenter(ops=["typo", "swap"], rate=0.2).augment_batch(parents, 3))]
    pool = noised_pool("noise", tok, list(zip(parents, noised)), 32, "\n")
    clean = text_pool("clean", tok, parents, 32, "\n")
    assert pool.inputs.shape == clean.packed.tokens[:, :-1].shape
    assert np.array_equal(pool.packed.tokens, clean.packed.tokens)  # the targets: clean text exactly
    differ = (pool.inputs != pool.packed.tokens[:, :-1]).mean()
    assert 0.02 < differ < 0.6


def test_noised_input_batches_read_noised_tokens_and_predict_the_clean_ones(tok) -> None:
    """In a batch, a row of the noise pool reads the noised tokens aligned to its clean parent,
    position by position, while its targets are the parent's next tokens; real rows read clean
    text. The loop's default (`Settings.noised_input`) is this, never noise as a target."""
    from augment.noise import NoiseAugmenter
    from lm.data import Batches
    from lm.distill.config import Settings
    assert Settings(corpus="c", preset="tiny").noised_input is True
    parents = gl_lines("train", 80)
    out = NoiseAugmenter("gl", ops=["typo", "swap", "strip_diacritics"], rate=0.2).augment_batch(parents, 11)
    pairs = [(p, v[0]) for p, v in zip(parents, out) if v and v[0] != p]
    noise = noised_pool("noise", tok, pairs, 32, "\n")
    real = text_pool("real", tok, parents, 32, "\n")
    clean = text_pool("clean", tok, [p for p, _ in pairs], 32, "\n")
    batches = Batches(real, 16, 3, [noise], {"noise": 1.0}, share=0.5)
    rows, same = 0, []
    for _ in range(8):
        b = batches.next()
        assert b.inputs.shape == b.targets.shape == b.clean_inputs.shape
        for i, (k, r) in enumerate(zip(b.pools, b.rows)):
            pool = batches.pools[k]
            assert np.array_equal(b.targets[i], pool.packed.tokens[r, 1:])       # clean next tokens
            assert np.array_equal(b.clean_inputs[i], pool.packed.tokens[r, :-1])  # what the teacher reads
            if pool.name == "noise":
                rows += 1
                assert np.array_equal(b.targets[i], clean.packed.tokens[r, 1:])   # the parent's tokens
                assert np.array_equal(b.inputs[i], noise.inputs[r])
                # token by token: input t is the noised token standing where clean token t stands
                same.append(b.inputs[i] == b.clean_inputs[i])
            else:
                assert np.array_equal(b.inputs[i], b.clean_inputs[i])
    assert rows >= 20
    same = np.stack(same)
    assert 0.4 < same.mean() < 0.97 and (~same).any(axis=1).mean() > 0.5
