"""Decoder-only transformer in the Llama mould, in Flax NNX.

RMSNorm before attention and MLP, rotary positions (Hugging Face's rotate-half layout), SwiGLU
MLP, no biases anywhere, optionally tied input/output embeddings: every weight maps one-to-one
onto `transformers.LlamaForCausalLM` (q/k/v/o_proj, gate/up/down_proj, input_layernorm,
post_attention_layernorm, norm, embed_tokens, lm_head). Parameters are float32; `dtype` sets the
compute type (bfloat16 for accelerators; the loss and softmax stay float32).

The same modules serve generation with a key/value cache: `Llama(tokens, cache, pos)` takes the
`T` new tokens at positions `pos .. pos + T - 1`, writes their keys and values into the cache at
those positions and lets them attend over positions `0 .. pos + t`, returning `(logits, cache)`.
The cache (`init_cache`) is a tuple with one `[2, batch, context, heads, head_dim]` array of the
compute dtype per layer (keys, values); positions past what was written are masked out.
`make_apply` (training, scoring) and `make_cached_apply` (`lm.decode`) are their pure functions.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lm.errors import UsageError


MAX_CONTEXT = 4096  # tokens: small models on small corpora; past this attention alone outgrows a laptop

@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int = 512
    dim: int = 128
    n_layers: int = 4
    n_heads: int = 4
    hidden_dim: int = 352          # SwiGLU width (Llama: about 8/3 * dim)
    context: int = 64              # training sequence length and evaluation window
    tie_embeddings: bool = True
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    dtype: str = "float32"         # compute dtype: float32 or bfloat16
    dropout: float = 0.0           # training only: on the embeddings and each residual branch

    def __post_init__(self) -> None:
        for name in ("vocab_size", "dim", "n_layers", "n_heads", "hidden_dim", "context"):
            if getattr(self, name) <= 0:
                raise UsageError(f"model {name} must be positive, not {getattr(self, name)}")
        if self.context > MAX_CONTEXT:  # attention's memory grows with its square
            raise UsageError(f"--context must be at most {MAX_CONTEXT} tokens, not {self.context}")
        if self.dim % self.n_heads or (self.dim // self.n_heads) % 2:
            raise UsageError(f"--dim {self.dim} must split into --heads {self.n_heads} heads of even size")
        if not 0.0 <= self.dropout < 1.0:
            raise UsageError(f"--dropout must be in [0, 1), not {self.dropout}")
        if self.dtype not in ("float32", "bfloat16"):
            raise UsageError(f"--dtype must be float32 or bfloat16, not {self.dtype!r}")

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    def replace(self, **changes: Any) -> "ModelConfig":
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def n_params(self) -> int:
        """Exact parameter count (norm weights included), without building the model."""
        d, h, v = self.dim, self.hidden_dim, self.vocab_size
        per_layer = 4 * d * d + 3 * d * h + 2 * d
        return self.n_layers * per_layer + d + v * d * (1 if self.tie_embeddings else 2)

    def flops_per_token(self) -> int:
        """Training FLOPs per token: 6 x matmul parameters + attention (PaLM appendix B)."""
        d, v = self.dim, self.vocab_size
        matmul = self.n_layers * (4 * d * d + 3 * d * self.hidden_dim) + v * d
        return 6 * matmul + 12 * self.n_layers * d * self.context // 2  # causal: half the scores


# nanoGPT's CPU model is 4 layers, 4 heads, 128 wide, context 64 (0.80M parameters at 65
# characters); `student` is that shape with SwiGLU. `teacher` is 6x the student and still
# trains at thousands of tokens per second on two cores.
PRESETS: dict[str, ModelConfig] = {
    "tiny": ModelConfig(dim=32, n_layers=2, n_heads=2, hidden_dim=64, context=32),
    "student": ModelConfig(dim=128, n_layers=4, n_heads=4, hidden_dim=352, context=64),
    "teacher": ModelConfig(dim=256, n_layers=6, n_heads=8, hidden_dim=688, context=128),
}


def preset(name: str, **overrides: Any) -> ModelConfig:
    if name not in PRESETS:
        raise UsageError(f"--preset must be one of {', '.join(PRESETS)}, not {name!r}")
    return PRESETS[name].replace(**overrides)


def _dense(rngs: nnx.Rngs, d_in: int, d_out: int, std: float, dtype: Any) -> nnx.Linear:
    return nnx.Linear(d_in, d_out, use_bias=False, dtype=dtype, param_dtype=jnp.float32,
                      kernel_init=nnx.initializers.normal(std), rngs=rngs)


def fused(x: jax.Array, *projections: nnx.Linear) -> list[jax.Array]:
    """Several bias-free projections of the same input as one matrix product, split after: XLA on
    CPU runs one wide product (and its backward) faster than several narrow ones (bench/profile_step.py
    times the step). The parameters stay one per projection, as Hugging Face's Llama names them."""
    kernels = [p.kernel[...] for p in projections]
    dtype = projections[0].dtype
    out = x.astype(dtype) @ jnp.concatenate(kernels, axis=1).astype(dtype)
    return jnp.split(out, np.cumsum([k.shape[1] for k in kernels[:-1]]).tolist(), axis=-1)


def dropout(x: jax.Array, rate: float, key: jax.Array | None) -> jax.Array:
    """Inverted dropout; the identity without a key (evaluation, generation) or at rate 0."""
    if key is None or rate == 0.0:
        return x
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0.0).astype(x.dtype)


class RMSNorm(nnx.Module):
    def __init__(self, dim: int, eps: float):
        self.weight = nnx.Param(jnp.ones((dim,), jnp.float32))
        self.eps = eps

    @jax.named_scope("norm")
    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return (y * self.weight[...]).astype(x.dtype)


def rope_tables(positions: jax.Array, head_dim: int, theta: float) -> tuple[jax.Array, jax.Array]:
    inv = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
    ang = positions.astype(jnp.float32)[:, None] * inv[None, :]
    ang = jnp.concatenate([ang, ang], axis=-1)          # [T, head_dim], rotate-half layout
    return jnp.cos(ang), jnp.sin(ang)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    # x: [B, T, H, D]; (x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin), as Hugging Face's Llama
    x1, x2 = jnp.split(x, 2, axis=-1)
    rotated = jnp.concatenate([-x2, x1], axis=-1)
    return (x * cos[None, :, None, :] + rotated * sin[None, :, None, :]).astype(x.dtype)


class Attention(nnx.Module):
    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs, out_std: float):
        dt = jnp.dtype(cfg.dtype)
        self.n_heads, self.head_dim = cfg.n_heads, cfg.head_dim
        self.q_proj = _dense(rngs, cfg.dim, cfg.dim, 0.02, dt)
        self.k_proj = _dense(rngs, cfg.dim, cfg.dim, 0.02, dt)
        self.v_proj = _dense(rngs, cfg.dim, cfg.dim, 0.02, dt)
        self.o_proj = _dense(rngs, cfg.dim, cfg.dim, out_std, dt)

    @jax.named_scope("attention")
    def __call__(self, x: jax.Array, cos: jax.Array, sin: jax.Array, cache: jax.Array | None = None,
                 pos: jax.Array | int = 0) -> Any:
        """x [B, T, dim] -> [B, T, dim]; with this layer's cache [2, B, context, H, D] the `T`
        positions are `pos ..` and the result is (out, cache with their keys and values)."""
        b, t, _ = x.shape
        shape = (b, t, self.n_heads, self.head_dim)
        q, k, v = (y.reshape(shape) for y in fused(x, self.q_proj, self.k_proj, self.v_proj))
        with jax.named_scope("rope"):
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:  # attend over the cache, these positions' keys and values written in
            cache = jax.lax.dynamic_update_slice(cache, jnp.stack([k, v]).astype(cache.dtype), (0, 0, pos, 0, 0))
            k, v = cache[0], cache[1]
        with jax.named_scope("attend"):
            out = self.attend(q, k, v, cache, pos)
        return self.o_proj(out) if cache is None else (self.o_proj(out), cache)

    def attend(self, q: jax.Array, k: jax.Array, v: jax.Array, cache: jax.Array | None, pos: jax.Array | int) -> jax.Array:
        """Softmax attention of q [B, T, H, D] over k, v [B, S, H, D] -> [B, T, H * D]."""
        b, t = q.shape[:2]
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) / jnp.sqrt(self.head_dim)
        if cache is None:  # the whole sequence at once: causal over itself
            mask = jnp.tril(jnp.ones((t, t), dtype=bool))
        else:  # query t at position pos + t sees cache positions 0 .. pos + t: [T, context]
            mask = jnp.arange(cache.shape[2])[None, :] <= (pos + jnp.arange(t))[:, None]
        scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
        probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
        return jnp.einsum("bhqk,bkhd->bqhd", probs, v).reshape(b, t, -1)


class MLP(nnx.Module):
    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs, out_std: float):
        dt = jnp.dtype(cfg.dtype)
        self.gate_proj = _dense(rngs, cfg.dim, cfg.hidden_dim, 0.02, dt)
        self.up_proj = _dense(rngs, cfg.dim, cfg.hidden_dim, 0.02, dt)
        self.down_proj = _dense(rngs, cfg.hidden_dim, cfg.dim, out_std, dt)

    @jax.named_scope("mlp")
    def __call__(self, x: jax.Array) -> jax.Array:
        gate, up = fused(x, self.gate_proj, self.up_proj)
        return self.down_proj(jax.nn.silu(gate) * up)


class Block(nnx.Module):
    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        # GPT-2's scaled init of the residual projections keeps early training stable.
        out_std = 0.02 / (2 * cfg.n_layers) ** 0.5
        self.input_layernorm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.self_attn = Attention(cfg, rngs, out_std)
        self.post_attention_layernorm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.mlp = MLP(cfg, rngs, out_std)

    def __call__(self, x: jax.Array, cos: jax.Array, sin: jax.Array, cache: jax.Array | None = None,
                 pos: jax.Array | int = 0, *, rate: float = 0.0, key: jax.Array | None = None) -> Any:
        if cache is None:
            k1, k2 = jax.random.split(key) if key is not None else (None, None)
            x = x + dropout(self.self_attn(self.input_layernorm(x), cos, sin), rate, k1)
            return x + dropout(self.mlp(self.post_attention_layernorm(x)), rate, k2)
        h, cache = self.self_attn(self.input_layernorm(x), cos, sin, cache, pos)
        x = x + h
        return x + self.mlp(self.post_attention_layernorm(x)), cache


class Llama(nnx.Module):
    """tokens [B, T] int32 -> logits [B, T, vocab] float32; with a cache (`init_cache`) and the
    position `pos` of the first token -> (logits, updated cache). `key`: training with dropout
    (`cfg.dropout` on the embeddings and every residual branch, as nanoGPT)."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.embed_tokens = nnx.Embed(cfg.vocab_size, cfg.dim, dtype=jnp.dtype(cfg.dtype), param_dtype=jnp.float32,
                                      embedding_init=nnx.initializers.normal(0.02), rngs=rngs)
        self.layers = nnx.List([Block(cfg, rngs) for _ in range(cfg.n_layers)])
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.lm_head = None if cfg.tie_embeddings else _dense(rngs, cfg.dim, cfg.vocab_size, 0.02, jnp.dtype(cfg.dtype))

    def __call__(self, tokens: jax.Array, cache: tuple[jax.Array, ...] | None = None,
                 pos: jax.Array | int = 0, key: jax.Array | None = None) -> Any:
        positions = jnp.arange(tokens.shape[1]) if cache is None else pos + jnp.arange(tokens.shape[1])
        cos, sin = rope_tables(positions, self.cfg.head_dim, self.cfg.rope_theta)
        with jax.named_scope("embed"):
            x = self.embed_tokens(tokens)
        if cache is None:
            n = len(self.layers) + 1
            keys = list(jax.random.split(key, n)) if key is not None else [None] * n
            x = dropout(x, self.cfg.dropout, keys[-1])
            for layer, k in zip(self.layers, keys):
                x = layer(x, cos, sin, rate=self.cfg.dropout, key=k)
        else:
            if len(cache) != len(self.layers):
                raise ValueError(f"a cache of {len(cache)} layers for a model of {len(self.layers)}")
            new_cache = []
            for layer, c in zip(self.layers, cache):
                x, c = layer(x, cos, sin, c, pos)
                new_cache.append(c)
        x = self.norm(x)
        with jax.named_scope("head"):
            logits = self.embed_tokens.attend(x) if self.lm_head is None else self.lm_head(x)
        return logits.astype(jnp.float32) if cache is None else (logits.astype(jnp.float32), tuple(new_cache))


Params = dict[str, Any]


def abstract_params(cfg: ModelConfig) -> Params:
    """The parameter tree as ShapeDtypeStructs: nothing is allocated."""
    return nnx.to_pure_dict(nnx.state(nnx.eval_shape(lambda: Llama(cfg, rngs=nnx.Rngs(0)))))


def init_params(cfg: ModelConfig, seed: int) -> Params:
    """The parameters as a plain nested dict (what Orbax saves).

    Drawn with numpy (PCG64 seeded by `seed`, leaf by leaf in sorted path order), so the same
    seed gives the same model on every backend and nothing is compiled (JAX's initialisers compile
    for seconds on CPU). The rule is the modules' own: norms 1, projections into the residual
    stream (o_proj, down_proj) N(0, 0.02 / sqrt(2 * layers)), every other matrix N(0, 0.02).
    """
    abstract = abstract_params(cfg)
    rng = np.random.default_rng(seed)
    out_std = 0.02 / (2 * cfg.n_layers) ** 0.5

    def draw(path: tuple, x: jax.ShapeDtypeStruct) -> np.ndarray:
        names = {str(getattr(k, "key", k)) for k in path}
        if len(x.shape) == 1:
            return np.ones(x.shape, np.float32)
        std = out_std if names & {"o_proj", "down_proj"} else 0.02
        return (rng.standard_normal(x.shape, dtype=np.float32) * std).astype(np.float32)

    return jax.tree_util.tree_map_with_path(draw, abstract)


def _binder(cfg: ModelConfig):
    """params -> the Llama module holding them; the structure is built once, abstractly."""
    abstract = nnx.eval_shape(lambda: Llama(cfg, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(abstract)

    def bind(params: Params) -> Llama:
        s = jax.tree.map(lambda x: x, state)  # a fresh copy to fill; `state` stays abstract
        nnx.replace_by_pure_dict(s, params)
        return nnx.merge(graphdef, s)

    return bind


def make_apply(cfg: ModelConfig):
    """A pure function (params, tokens) -> logits, for jax.jit."""
    bind = _binder(cfg)
    return lambda params, tokens: bind(params)(tokens)


def make_train_apply(cfg: ModelConfig):
    """A pure function (params, tokens, key) -> logits: the training forward, with dropout drawn
    from `key` when `cfg.dropout` > 0 (otherwise `make_apply`'s forward, the key unused)."""
    if not cfg.dropout:
        apply = make_apply(cfg)
        return lambda params, tokens, key: apply(params, tokens)
    bind = _binder(cfg)
    return lambda params, tokens, key: bind(params)(tokens, key=key)


def make_cached_apply(cfg: ModelConfig):
    """A pure function (params, tokens, cache, pos) -> (logits, cache) for jax.jit: `tokens` [B, T]
    at positions pos .. pos + T - 1 (pos an int32 scalar, traced), the cache from `init_cache`."""
    bind = _binder(cfg)
    return lambda params, tokens, cache, pos: bind(params)(tokens, cache, pos)


def init_cache(cfg: ModelConfig, batch: int = 1) -> tuple[jax.Array, ...]:
    """An empty key/value cache: per layer [2 (keys, values), batch, context, heads, head_dim] in
    the compute dtype."""
    shape = (2, batch, cfg.context, cfg.n_heads, cfg.head_dim)
    return tuple(jnp.zeros(shape, jnp.dtype(cfg.dtype)) for _ in range(cfg.n_layers))


def count_params(params: Params) -> int:
    return int(sum(x.size for x in jax.tree.leaves(params)))
