"""Key/value-cached generation runs the model's own forward: the cached apply gives the logits of
the whole-sequence forward, and `CachedDecoder` (prompt in one pass, one position per token, a
context shift when the cache is full) picks the tokens that full recomputation picks, in float32
and in bfloat16, past the context; int8 parameters are dequantised inside the jitted step."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm.decode import CachedDecoder, make_runner
from lm.loader import FlaxModel
from lm.model import PRESETS, init_cache, init_params, make_apply, make_cached_apply
from lm.quant import dequantize, quantize_params

TINY = PRESETS["tiny"]  # context 32


def close(got: np.ndarray, ref: np.ndarray, rel: float = 1e-4) -> None:
    """Within `rel` of the reference's scale (logits near zero make elementwise rtol meaningless)."""
    err = float(np.max(np.abs(np.asarray(got) - np.asarray(ref))))
    assert err <= rel * float(np.max(np.abs(ref))), (err, float(np.max(np.abs(ref))))


def full_recomputation(cfg, params, prompt: list[int], n: int) -> tuple[list[int], list[np.ndarray], list[list[int]]]:
    """Greedy tokens by running `make_apply` over the whole window for every token (the window is
    what the decoder holds: the prompt's last `context` tokens, and after a full window the last
    `context // 2 - 1` tokens plus the new one). Returns tokens, logits and windows, step by step."""
    apply = jax.jit(make_apply(cfg))
    window = list(prompt)[-cfg.context:]
    tokens, logits, windows = [], [], []
    for _ in range(n):
        buf = np.zeros((1, cfg.context), np.int32)  # one compilation; causal, so the padding is unseen
        buf[0, :len(window)] = window
        out = np.asarray(apply(params, buf))[0, len(window) - 1]
        tok = int(out.argmax())
        tokens.append(tok)
        logits.append(out)
        windows.append(list(window))
        window = window[-(cfg.context // 2 - 1):] + [tok] if len(window) >= cfg.context else window + [tok]
    return tokens, logits, windows


def cached(decoder: CachedDecoder, prompt: list[int], n: int) -> tuple[list[int], list[np.ndarray], list[list[int]]]:
    tokens, logits, windows = [], [], []
    out = decoder.start(prompt)
    for _ in range(n):
        tok = int(out.argmax())
        tokens.append(tok)
        logits.append(out)
        windows.append(list(decoder.tokens))
        out = decoder.step(tok)
    return tokens, logits, windows


def prompt_of(n: int, cfg=TINY, seed: int = 0) -> list[int]:
    return np.random.default_rng(seed).integers(0, cfg.vocab_size, n).tolist()


def sharp_params(cfg, seed: int = 0):
    """A random model with its matrices 20x the initial scale: at the initial scale greedy decoding
    repeats one token forever (the tied embedding predicts its own input), here it wanders over the
    vocabulary, so every step tests something."""
    return jax.tree.map(lambda x: x * 20 if x.ndim == 2 else x, init_params(cfg, seed))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("prompt_len", [5, 40])  # padded prefill; longer than the context (shifts at once)
def test_cached_greedy_tokens_equal_full_recomputation_past_the_context(dtype: str, prompt_len: int) -> None:
    cfg = TINY.replace(dtype=dtype)
    params = sharp_params(cfg)
    prompt, n = prompt_of(prompt_len), 3 * cfg.context  # several context shifts
    ref_tokens, ref_logits, ref_windows = full_recomputation(cfg, params, prompt, n)
    got_tokens, got_logits, got_windows = cached(CachedDecoder(cfg, params), prompt, n)
    assert got_windows == ref_windows  # the same context shifts
    assert sum(len(w) == cfg.context for w in got_windows) >= 3
    assert got_tokens == ref_tokens
    assert len(set(got_tokens)) > cfg.context  # not one token over and over
    for got, ref in zip(got_logits, ref_logits):
        assert got.dtype == np.float32
        close(got, ref, 1e-4 if dtype == "float32" else 1e-2)


@pytest.mark.parametrize("tied", [True, False])
def test_cached_apply_in_chunks_gives_the_whole_sequence_logits(tied: bool) -> None:
    cfg = TINY.replace(tie_embeddings=tied)
    params = init_params(cfg, 1)
    x = np.random.default_rng(2).integers(0, cfg.vocab_size, (2, cfg.context)).astype(np.int32)
    ref = np.asarray(jax.jit(make_apply(cfg))(params, x))
    apply = jax.jit(make_cached_apply(cfg))
    cache, pos, parts = init_cache(cfg, batch=2), 0, []
    for width in (7, 1, 8, 16):  # uneven chunks, at positions 0, 7, 8 and 16
        logits, cache = apply(params, x[:, pos:pos + width], cache, jnp.int32(pos))
        parts.append(np.asarray(logits))
        pos += width
    close(np.concatenate(parts, axis=1), ref)
    # the cache holds every position's keys and values: one more pass over the last token agrees
    again, _ = apply(params, x[:, -1:], cache, jnp.int32(cfg.context - 1))
    close(np.asarray(again)[:, 0], ref[:, -1])


def test_cache_follows_the_compute_dtype() -> None:
    for dtype in ("float32", "bfloat16"):
        cfg = TINY.replace(dtype=dtype)
        cache = init_cache(cfg, batch=3)
        assert len(cache) == cfg.n_layers
        assert all(c.shape == (2, 3, cfg.context, cfg.n_heads, cfg.head_dim) and c.dtype == jnp.dtype(dtype)
                   for c in cache)
        logits, new = jax.jit(make_cached_apply(cfg))(init_params(cfg, 0), jnp.zeros((3, 4), jnp.int32), cache,
                                                      jnp.int32(0))
        assert logits.dtype == jnp.float32 and logits.shape == (3, 4, cfg.vocab_size)
        assert all(c.dtype == jnp.dtype(dtype) for c in new)


def test_int8_parameters_are_dequantised_inside_the_step() -> None:
    cfg = TINY
    q = quantize_params(sharp_params(cfg))
    model = FlaxModel(cfg, q, tokenizer=None, info={}, prepare=dequantize)  # the int8 export's loader
    dec = model.decoder()
    assert dec.params is q and str(q["layers"][0]["mlp"]["up_proj"]["kernel"]["q"].dtype) == "int8"
    floats = jax.tree.map(np.asarray, dequantize(q))
    prompt, n = prompt_of(5), cfg.context + 8
    got_tokens, got_logits, _ = cached(dec, prompt, n)
    ref_tokens, ref_logits, _ = full_recomputation(cfg, floats, prompt, n)
    assert got_tokens == ref_tokens
    for got, ref in zip(got_logits, ref_logits):
        close(got, ref)
    # one runner per model, shared by its decoders
    assert model.decoder()._run is dec._run


def test_runner_donates_the_cache() -> None:
    cfg = TINY
    run = make_runner(cfg)
    cache = init_cache(cfg)
    _, new = run(init_params(cfg, 0), jnp.zeros((1, 8), jnp.int32), cache, jnp.int32(0), 7)
    assert all(c.is_deleted() for c in cache)  # donated: the step reused its buffers
    assert len(new) == cfg.n_layers
