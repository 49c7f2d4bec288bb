"""Generation with a key/value cache: each new token costs one position, not the whole prefix.

The model's own cached forward does the work (`lm.model.make_cached_apply`: the same modules,
dtype and numerics as training, keys and values kept in `lm.model.init_cache`); this module only
drives it. `make_runner` jits it once per model, with the cache donated so each step updates it in
place. `CachedDecoder` drives it for one sequence: `start(tokens)` runs the prompt in one pass
(padded to a power of two, so a few compilations serve every prompt) and `step(token)` one
position. When the cache is full it starts again from the last half of the tokens (a context
shift, `lm.runtimes.ShiftingDecoder`: the rule of every decoder), so generation can run past
the context; within the context it gives the logits of the full recomputation
(`FlaxModel.next_logits`), which the tests check token for token.

`prepare` turns stored parameters into float ones inside the jitted function (`lm.quant`
dequantises int8 weights there), so an int8 model stays int8 in memory.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from lm.model import ModelConfig, init_cache, make_cached_apply
from lm.runtimes import ShiftingDecoder


def make_runner(cfg: ModelConfig, prepare: Callable[[Any], Any] = lambda p: p) -> Callable:
    """The jitted (params, tokens, cache, pos, last) -> (logits at `last`, cache); make it once
    per model and share it between decoders, so that every generation reuses its compilations."""
    apply = make_cached_apply(cfg)

    def run(p, tokens, cache, pos, last):
        logits, cache = apply(prepare(p), tokens, cache, pos)
        return logits[0, last], cache
    return jax.jit(run, donate_argnums=(2,))  # the cache is donated: each step updates it in place


class CachedDecoder(ShiftingDecoder):
    """Prompt in one pass, then one position per token, for one sequence at a time."""

    def __init__(self, cfg: ModelConfig, params: Any, runner: Callable | None = None):
        super().__init__(cfg.context)
        self.cfg, self.params = cfg, params
        self._run = runner or make_runner(cfg)
        self.cache = None

    def _prefill(self, tokens: list[int]) -> np.ndarray:
        n = len(tokens)
        width = min(self.cfg.context, 1 << max(3, (n - 1).bit_length()))
        buf = np.zeros((1, width), np.int32)
        buf[0, :n] = tokens
        self.cache = init_cache(self.cfg)
        logits, self.cache = self._run(self.params, jnp.asarray(buf), self.cache, jnp.int32(0), n - 1)
        return np.asarray(logits)

    def _extend(self, token: int, pos: int) -> np.ndarray:
        logits, self.cache = self._run(self.params, jnp.asarray([[token]], jnp.int32), self.cache, jnp.int32(pos), 0)
        return np.asarray(logits)
