"""The top-k teacher cache (`lm.distill.teacher_cache`) on real gl-ctg text: what `lookup` returns
is the teacher's own top-k of the same rows, position by position; filled rows are read back
(this process or the next) without running the teacher; and a student's first step has the same
loss with the cache (`--cache always`) as with the teacher in the step (`--cache never`), the
loss the numpy reference gives."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.helpers import gl_lines, np_distill_kl, np_log_softmax
from lm.data import Batches, Pool, noised_pool, real_pool, text_pool
from lm.distill.config import DEFAULT_CACHE_K, PRESETS, Settings
from lm.distill.rounds import KDPlan, plan_kd
from lm.distill.teacher_cache import TeacherCache, pays
from lm.losses import topk_of
from lm.model import ModelConfig, init_params, make_apply, preset
from lm.tokenizer import Tokenizer
from lm.trainer import LoopConfig, OptimConfig, train

K, T = 8, 2.0


@pytest.fixture(scope="module")
def pools(tok: Tokenizer) -> list[Pool]:
    """Real text, a noised-input pool (clean parents as targets) and a text pool, context 32."""
    from augment.noise import NoiseAugmenter
    parents = gl_lines("train", 120)[60:]
    out = NoiseAugmenter("gl", ops=["typo", "swap"], rate=0.2).augment_batch(parents, 5)
    pairs = [(p, v[0]) for p, v in zip(parents, out) if v and v[0] != p]
    return [real_pool(tok, gl_lines("train", 40), 32, None), noised_pool("noise", tok, pairs, 32, "\n"),
            text_pool("text", tok, gl_lines("dev", 40), 32, "\n")]


def batches(pools: list[Pool], seed: int = 3) -> Batches:
    return Batches(pools[0], 8, seed, pools[1:], {"noise": 0.5, "text": 0.5}, share=0.5)


@pytest.fixture(scope="module")
def teacher(tok: Tokenizer) -> tuple[ModelConfig, Any]:
    """A teacher as peaked as a trained one: a random model with its final norm scaled up."""
    cfg = preset("tiny", vocab_size=tok.vocab_size, dim=64, hidden_dim=128)
    params = init_params(cfg, 11)
    params["norm"] = jax.tree.map(lambda w: w * 40.0, params["norm"])
    return cfg, params


def test_lookup_is_the_teachers_own_top_k_of_the_same_rows(pools: list[Pool], teacher, tmp_path: Path) -> None:
    """Guards the cache's alignment: for every row of a batch (real, noised and text pools) and
    every position, `lookup` gives the teacher's top-k ids and log-probabilities at T of the
    clean input, as computed directly; a row read twice is not computed twice."""
    cfg, params = teacher
    apply = make_apply(cfg)
    cache = TeacherCache(tmp_path, "t@1", K, T, apply, params)
    data = batches(pools)
    cache.prepare(data.pools)
    noised_rows = 0
    for _ in range(6):
        b = data.next()
        top = cache.lookup(b, data.pools)
        assert top.indices.shape == top.logprobs.shape == (8, 32, K)
        direct = topk_of(apply(params, jnp.asarray(b.clean_inputs)), K, T)
        assert np.array_equal(top.indices, np.asarray(direct.indices))
        np.testing.assert_allclose(top.logprobs.astype(np.float32), np.asarray(direct.logprobs), rtol=2e-3, atol=2e-3)
        noised = b.pools == 1
        noised_rows += int(noised.sum())
        if noised.any():  # the teacher reads the clean parent, not the noised input
            on_noise = np.asarray(topk_of(apply(params, jnp.asarray(b.inputs)), K, T).indices)
            assert not np.array_equal(top.indices[noised], on_noise[noised])
        before = cache.computed_tokens
        again = cache.lookup(b, data.pools)
        assert cache.computed_tokens == before and np.array_equal(again.indices, top.indices)
    assert noised_rows > 0 and (-np.diff(top.logprobs.astype(np.float32), axis=-1) >= 0).all()


def test_filled_rows_are_read_back_without_the_teacher(pools: list[Pool], teacher, tmp_path: Path) -> None:
    """Guards `fill`, `flush` and `prepare`: planned rows are computed once in full batches, read
    back by later lookups and by a new cache on the same folder without running the teacher; a
    row whose flag was lost is computed again; another K starts the pool afresh."""
    cfg, params = teacher
    apply = make_apply(cfg)
    cache = TeacherCache(tmp_path, "t@1", K, T, apply, params)
    data = batches(pools)
    cache.prepare(data.pools)
    plan = data.plan(5)
    cache.fill(data.pools, plan, 8)
    rows = sum(len(np.unique(r)) for r in plan.values())
    assert cache.computed_tokens == rows * 32
    assert cache.stats()["rows_filled"] == rows
    first = [cache.lookup(data.next(), data.pools) for _ in range(5)]
    assert cache.computed_tokens == rows * 32  # all five batches were planned
    reopened = TeacherCache(tmp_path, "t@1", K, T, apply, params)
    data = batches(pools)
    reopened.prepare(data.pools)
    for top in first:
        again = reopened.lookup(data.next(), data.pools)
        assert np.array_equal(again.indices, top.indices) and np.array_equal(again.logprobs, top.logprobs)
    assert reopened.computed_tokens == 0
    (tmp_path / "teacher-cache" / "real.filled.npy").unlink()  # lost flags: computed again, same values
    lost = TeacherCache(tmp_path, "t@1", K, T, apply, params)
    data = batches(pools)
    lost.prepare(data.pools)
    again = lost.lookup(data.next(), data.pools)
    assert lost.computed_tokens > 0 and np.array_equal(again.indices, first[0].indices)
    other_k = TeacherCache(tmp_path, "t@1", K + 1, T, apply, params)
    other_k.prepare(batches(pools).pools)
    assert other_k.stats()["rows_filled"] == 0
    meta = json.loads((tmp_path / "teacher-cache" / "meta.json").read_text())
    assert {m["k"] for m in meta.values()} == {K + 1}


def test_a_cache_pays_when_students_read_more_teacher_tokens_than_the_pools_hold() -> None:
    assert pays(students=2, steps=10, batch=8, context=32, pool_tokens=5119)
    assert not pays(students=2, steps=10, batch=8, context=32, pool_tokens=5120)


def plan_for(cache: str, run: Path, teacher, top_k: int | None = K, **loss: Any) -> tuple[Settings, KDPlan]:
    s = Settings(corpus="c", preset="tiny", top_k=top_k, cache=cache, **loss)
    cfg, params = teacher
    ws = SimpleNamespace(settings=s, preset=PRESETS["tiny"], run=run)
    model = SimpleNamespace(info={"path": "teacher", "checkpoint": 16}, cfg=cfg, params=params)
    return s, plan_kd(ws, model, students=1, context=32, pool_estimate=10**9)


def test_first_step_loss_is_the_same_cached_and_live(pools: list[Pool], teacher, tmp_path: Path) -> None:
    """Guards `--cache always` against `--cache never` (`plan_kd`, then `lm.trainer.train`): with
    --top-k K the student's first-step loss, CE and KL are the same from the cache as with the
    teacher in the step, and equal the numpy reference of alpha CE + (1 - alpha) T^2 KL on the
    first batch: kind, tail and temperature, none of them the default, reach the step."""
    kl, tail = "reverse", "renorm"
    loss_opts = {"alpha": 0.3, "temperature": T, "kl": kl, "tail": tail}
    cfg = preset("tiny", vocab_size=teacher[0].vocab_size)
    first: dict[str, dict] = {}
    for mode in ("always", "never"):
        s, plan = plan_for(mode, tmp_path / mode, teacher, **loss_opts)
        assert plan.mode == {"always": "cached", "never": "live"}[mode] and plan.top_k == K
        out = tmp_path / mode / "student"
        train(out, cfg, OptimConfig(lr=1e-3, decay_steps=2), LoopConfig(steps=1, batch=8, eval_every=1, save_every=1,
                                                                          quiet=True),
              batches(pools), None, seed=2, loss=s.loss(True, top_k=plan.top_k), teacher=plan.teacher)
        first[mode] = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert first["always"]["step"] == first["never"]["step"] == 1
    for key in ("loss", "ce", "kl"):
        assert first["always"][key] == pytest.approx(first["never"][key], rel=2e-3), key
    b = batches(pools).next()
    t_logits = np.asarray(make_apply(teacher[0])(teacher[1], jnp.asarray(b.clean_inputs)))
    s_logits = np.asarray(make_apply(cfg)(init_params(cfg, 2), jnp.asarray(b.inputs)))
    kl_ref = np_distill_kl(t_logits, s_logits, b.mask, T, kl, K, tail)
    logp = np_log_softmax(s_logits)
    ce_ref = float(-(np.take_along_axis(logp, b.targets[..., None], -1)[..., 0] * b.mask).sum() / b.mask.sum())
    assert first["never"]["kl"] == pytest.approx(kl_ref, rel=1e-4, abs=1e-5)
    assert first["always"]["kl"] == pytest.approx(kl_ref, rel=2e-3)
    assert first["never"]["ce"] == pytest.approx(ce_ref, rel=1e-5)
    assert first["never"]["loss"] == pytest.approx(0.3 * ce_ref + 0.7 * T * T * kl_ref, rel=1e-4)
    assert kl_ref > 0.05  # a peaked teacher: the KL term weighs in the loss


def test_plan_without_top_k_is_the_full_distribution_live_or_the_default_k_cached(teacher, tmp_path: Path) -> None:
    """Guards `plan_kd`'s defaults: no --top-k is the teacher's full distribution in the step,
    and DEFAULT_CACHE_K when cached; `auto` caches only when it pays."""
    _, live = plan_for("never", tmp_path, teacher, top_k=None)
    _, cached = plan_for("always", tmp_path, teacher, top_k=None)
    assert (live.mode, live.top_k, live.cache) == ("live", 0, None)
    assert (cached.mode, cached.top_k) == ("cached", DEFAULT_CACHE_K) and cached.cache.k == DEFAULT_CACHE_K
    assert cached.teacher.cache is cached.cache and cached.cache.teacher_id == "teacher@16"
    assert plan_for("auto", tmp_path, teacher)[1].mode == "live"  # pool_estimate 10**9: never pays
    assert cached.describe("renorm") == f"top-{DEFAULT_CACHE_K} cache (renorm)"
