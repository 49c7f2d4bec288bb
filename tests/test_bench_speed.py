"""bench/train.py's `jax_paired` row times two arms in one vmapped step: it must be the same
training as the arms one at a time, or its tokens/s would compare different work."""
from __future__ import annotations


def test_two_arms_in_one_vmapped_update_train_as_each_arm_alone() -> None:
    import jax
    import numpy as np

    from lm.losses import LossConfig
    from lm.model import init_params, preset
    from lm.objective import make_update
    from lm.trainer import OptimConfig, make_optimizer

    cfg = preset("tiny", vocab_size=64)
    tx, _ = make_optimizer(OptimConfig(lr=1e-2, decay_steps=10, warmup=1))
    update = make_update(cfg, LossConfig(), tx)
    rng = np.random.default_rng(0)
    batches = []
    for _ in range(2):
        t = rng.integers(0, 64, (4, cfg.context + 1)).astype(np.int32)
        batches.append({"x": t[:, :-1], "y": t[:, 1:], "m": np.ones((4, cfg.context), np.float32)})
    arms = [init_params(cfg, seed) for seed in (0, 1)]
    stack = lambda trees: jax.tree.map(lambda *xs: np.stack(xs), *trees)  # noqa: E731

    alone = []
    for params, batch in zip(arms, batches):
        opt = tx.init(params)
        for step in range(3):
            params, opt, _ = jax.jit(update)(params, opt, {}, batch, np.int32(step))
        alone.append(params)
    params, batch = stack(arms), stack(batches)
    opt = jax.vmap(tx.init)(params)
    paired = jax.jit(jax.vmap(update, in_axes=(0, 0, None, 0, None)))
    for step in range(3):
        params, opt, losses = paired(params, opt, {}, batch, np.int32(step))
    assert losses[0].shape == (2,)
    for arm in (0, 1):
        got = jax.tree.map(lambda p, arm=arm: np.asarray(p[arm]), params)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), got, alone[arm])
    moved = jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - np.asarray(b)).max()), alone[0], arms[0])
    assert max(jax.tree.leaves(moved)) > 1e-3  # three updates changed the weights: the check has teeth
