"""Generation with a key/value cache: each new token costs one position, not the whole prefix.

`forward(cfg, params, tokens, cache, pos)` is the model of `lm.model` written as a plain function
of its parameter tree (the same names, RoPE and RMSNorm helpers), for `T` new tokens at
positions `pos .. pos + T - 1`: it writes their keys and values into the cache at those positions
and attends over positions `0 .. pos + t`. The cache is `[layers, 2, batch, context, heads,
head_dim]`; positions past what was written hold zeros or stale values and are masked out.

`CachedDecoder` drives it for one sequence: `start(tokens)` runs the prompt in one pass (padded
to a power of two, so a few compilations serve every prompt) and `step(token)` one position.
When the cache is full it starts again from the last half of the tokens (a context shift), so
generation can run past the context; within the context it gives the logits of the full
recomputation (`FlaxModel.next_logits`), which the tests check token for token.

`prepare` turns stored parameters into float ones inside the jitted function (`lm.quant`
dequantises int8 weights there), so an int8 model stays int8 in memory.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from lm.model import ModelConfig, apply_rope, rope_tables


def _norm(x: jax.Array, weight: jax.Array, eps: float) -> jax.Array:
    return x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + eps) * weight


def init_cache(cfg: ModelConfig, batch: int = 1) -> jax.Array:
    return jnp.zeros((cfg.n_layers, 2, batch, cfg.context, cfg.n_heads, cfg.head_dim), jnp.float32)


def forward(cfg: ModelConfig, params: dict[str, Any], tokens: jax.Array, cache: jax.Array,
            pos: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(logits [B, T, vocab], updated cache) for `tokens` [B, T] at positions pos.. (float32)."""
    b, t = tokens.shape
    h, d = cfg.n_heads, cfg.head_dim
    cos, sin = rope_tables(pos + jnp.arange(t), d, cfg.rope_theta)
    emb = params["embed_tokens"]["embedding"]
    x = emb[tokens]
    query_pos = pos + jnp.arange(t)
    visible = jnp.arange(cfg.context)[None, :] <= query_pos[:, None]          # [T, context]
    layers = params["layers"]
    for i in range(cfg.n_layers):
        p = layers[i] if i in layers else layers[str(i)]
        a = p["self_attn"]
        y = _norm(x, p["input_layernorm"]["weight"], cfg.norm_eps)
        q = apply_rope((y @ a["q_proj"]["kernel"]).reshape(b, t, h, d), cos, sin)
        k = apply_rope((y @ a["k_proj"]["kernel"]).reshape(b, t, h, d), cos, sin)
        v = (y @ a["v_proj"]["kernel"]).reshape(b, t, h, d)
        cache = jax.lax.dynamic_update_slice(cache, jnp.stack([k, v])[None], (i, 0, 0, pos, 0, 0))
        keys, values = cache[i, 0], cache[i, 1]
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, keys) / jnp.sqrt(d)
        scores = jnp.where(visible[None, None], scores, jnp.finfo(jnp.float32).min)
        out = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(scores, axis=-1), values).reshape(b, t, -1)
        x = x + out @ a["o_proj"]["kernel"]
        m = p["mlp"]
        y = _norm(x, p["post_attention_layernorm"]["weight"], cfg.norm_eps)
        x = x + (jax.nn.silu(y @ m["gate_proj"]["kernel"]) * (y @ m["up_proj"]["kernel"])) @ m["down_proj"]["kernel"]
    x = _norm(x, params["norm"]["weight"], cfg.norm_eps)
    logits = x @ emb.T if cfg.tie_embeddings else x @ params["lm_head"]["kernel"]
    return logits.astype(jnp.float32), cache


def make_runner(cfg: ModelConfig, prepare: Callable[[Any], Any] = lambda p: p) -> Callable:
    """The jitted (params, tokens, cache, pos, last) -> (logits at `last`, cache); make it once
    per model and share it between decoders, so that every generation reuses its compilations."""
    def run(p, tokens, cache, pos, last):
        logits, cache = forward(cfg, prepare(p), tokens, cache, pos)
        return logits[0, last], cache
    return jax.jit(run, donate_argnums=(2,))  # the cache is donated: each step updates it in place


class CachedDecoder:
    """Prompt in one pass, then one position per token, for one sequence at a time."""

    def __init__(self, cfg: ModelConfig, params: Any, runner: Callable | None = None):
        self.cfg, self.params = cfg, params
        self._run = runner or make_runner(cfg)
        self.tokens: list[int] = []
        self.cache = None

    def _prefill(self, tokens: list[int]) -> np.ndarray:
        n = len(tokens)
        width = min(self.cfg.context, 1 << max(3, (n - 1).bit_length()))
        buf = np.zeros((1, width), np.int32)
        buf[0, :n] = tokens
        self.cache = init_cache(self.cfg)
        logits, self.cache = self._run(self.params, jnp.asarray(buf), self.cache, jnp.int32(0), n - 1)
        self.tokens = list(tokens)
        return np.asarray(logits)

    def start(self, tokens: list[int]) -> np.ndarray:
        """Logits after the prompt (at most `context` tokens are kept: the last ones)."""
        if not tokens:
            raise ValueError("a prompt needs at least one token (the start token)")
        return self._prefill(list(tokens)[-self.cfg.context:])

    def step(self, token: int) -> np.ndarray:
        """Logits after appending `token`: one position computed, the rest read from the cache."""
        if len(self.tokens) >= self.cfg.context:  # full: keep the last half and go on from there
            return self._prefill(self.tokens[-(self.cfg.context // 2 - 1):] + [int(token)])
        pos = len(self.tokens)
        logits, self.cache = self._run(self.params, jnp.asarray([[int(token)]], jnp.int32), self.cache,
                                       jnp.int32(pos), 0)
        self.tokens.append(int(token))
        return np.asarray(logits)
