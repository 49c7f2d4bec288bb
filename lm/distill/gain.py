"""Dev gain of each training pool: how well a step on it points down the dev loss.

The first-order change of the dev loss after a small gradient step on a batch of pool A is
-lr * <grad dev, grad A>. Its scale-free form, the cosine between the two gradients (Fisher-like
"gradient alignment", as in data-selection work such as Wang et al. 2020), is the dev gain:
positive when pool A's text teaches what dev text needs, about 0 when it is noise for the model,
negative when it pulls the other way. It is measured on the trained student at the end of a round
and sets the next round's mixture weights together with the kept fraction. Cheap: a few
gradient evaluations per pool, one jitted function.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from lm.data import Packed, Pool
from lm.losses import cross_entropy
from lm.model import ModelConfig, make_apply


def dev_gains(cfg: ModelConfig, params: Any, dev: Packed, pools: list[Pool], batch: int, seed: int,
              n_batches: int = 4) -> dict[str, float]:
    """{pool name: cosine(mean dev gradient, mean gradient on the pool)}, CE loss, fixed batches."""
    apply = make_apply(cfg)

    @jax.jit
    def grad(p, x, y, m):
        return ravel_pytree(jax.grad(lambda q: cross_entropy(apply(q, x), y, m))(p))[0]

    def mean_grad(tokens: np.ndarray, mask: np.ndarray, inputs: np.ndarray | None, rows: np.ndarray) -> jnp.ndarray:
        total = None
        for i in range(0, len(rows), batch):
            r = rows[i:i + batch]
            if len(r) < batch:
                r = np.resize(r, batch)  # one compiled shape
            x = inputs[r] if inputs is not None else tokens[r, :-1]
            g = grad(params, jnp.asarray(x), jnp.asarray(tokens[r, 1:]), jnp.asarray(mask[r]))
            total = g if total is None else total + g
        return total

    rng = np.random.default_rng([seed, 7])
    n = batch * n_batches
    dev_rows = rng.permutation(len(dev))[:n]
    g_dev = mean_grad(dev.tokens, dev.mask, None, dev_rows)
    out = {}
    for pool in pools:
        rows = rng.permutation(len(pool))[:n]
        g = mean_grad(pool.packed.tokens, pool.packed.mask, pool.inputs, rows)
        cos = jnp.vdot(g_dev, g) / (jnp.linalg.norm(g_dev) * jnp.linalg.norm(g) + 1e-12)
        out[pool.name] = round(float(cos), 4)
    return out


def next_weights(kept_fraction: dict[str, float], gains: dict[str, float], floor: float = 0.02) -> dict[str, float]:
    """Mixture weights for the next round: kept fraction x positive dev gain, normalised;
    every augmenter keeps at least `floor` so it can prove itself again."""
    raw = {a: kept_fraction.get(a, 0.0) * max(gains.get(a, 0.0), 0.0) for a in kept_fraction}
    total = sum(raw.values())
    if total <= 0:
        return {a: round(1.0 / len(raw), 4) for a in raw} if raw else {}
    w = {a: max(v / total, floor) for a, v in raw.items()}
    s = sum(w.values())
    return {a: round(v / s, 4) for a, v in w.items()}
