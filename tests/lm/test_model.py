"""The Llama-style model: presets, parameter counts, causality, and (torch is a test dependency) the
same logits as Hugging Face's LlamaForCausalLM given the same weights."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from lm.errors import UsageError
from lm.model import PRESETS, ModelConfig, count_params, init_params, make_apply, preset
from lm.ship.hf_format import hf_state_dict, llama_config_dict


def test_presets_sizes() -> None:
    student, teacher = PRESETS["student"], PRESETS["teacher"]
    assert (student.dim, student.n_layers, student.n_heads, student.context) == (128, 4, 4, 64)
    assert 0.7e6 < student.n_params() < 0.9e6  # nanoGPT's CPU model: 0.80M
    assert teacher.n_params() >= 4 * student.n_params()
    assert PRESETS["tiny"].n_params() < 50_000
    for cfg in PRESETS.values():
        assert count_params(init_params(cfg, 0)) == cfg.n_params()


def test_overrides_and_bad_shapes() -> None:
    cfg = preset("student", dim=64, n_layers=2, context=None)
    assert (cfg.dim, cfg.n_layers, cfg.context) == (64, 2, 64)
    with pytest.raises(UsageError):
        preset("huge")
    with pytest.raises(UsageError):
        ModelConfig(dim=30, n_heads=4)
    untied = PRESETS["tiny"].replace(tie_embeddings=False)
    assert untied.n_params() == PRESETS["tiny"].n_params() + untied.vocab_size * untied.dim
    assert "lm_head" in init_params(untied, 0)


def test_init_is_deterministic_and_seeded() -> None:
    cfg = PRESETS["tiny"]
    a, b, c = init_params(cfg, 1), init_params(cfg, 1), init_params(cfg, 2)
    assert all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
    assert not np.array_equal(a["embed_tokens"]["embedding"], c["embed_tokens"]["embedding"])


def test_model_is_causal() -> None:
    cfg = PRESETS["tiny"]
    apply = jax.jit(make_apply(cfg))
    params = init_params(cfg, 0)
    x = np.random.default_rng(0).integers(0, cfg.vocab_size, (2, cfg.context)).astype(np.int32)
    y = x.copy()
    y[:, 20:] = (y[:, 20:] + 1) % cfg.vocab_size
    la, lb = np.asarray(apply(params, x)), np.asarray(apply(params, y))
    assert la.shape == (2, cfg.context, cfg.vocab_size)
    np.testing.assert_allclose(la[:, :20], lb[:, :20], atol=1e-6)
    assert not np.allclose(la[:, 20:], lb[:, 20:])


def test_bfloat16_compute_keeps_float32_params_and_logits() -> None:
    cfg = PRESETS["tiny"].replace(dtype="bfloat16")
    params = init_params(cfg, 0)
    assert all(x.dtype == np.float32 for x in jax.tree.leaves(params))
    x = jnp.zeros((1, 8), jnp.int32)
    out = jax.jit(make_apply(cfg))(params, x)
    ref = jax.jit(make_apply(PRESETS["tiny"]))(params, x)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), atol=0.05)


@pytest.mark.parametrize("tied", [True, False])
def test_same_logits_as_hugging_face_llama(tied: bool) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM
    cfg = PRESETS["tiny"].replace(tie_embeddings=tied)
    params = init_params(cfg, 0)
    hf = LlamaForCausalLM(LlamaConfig(**llama_config_dict(cfg, eos_id=1))).eval()
    state = hf_state_dict(params, cfg)  # one-to-one: our kernels are [in, out], torch's [out, in]
    missing, unexpected = hf.load_state_dict({k: torch.tensor(np.asarray(v)) for k, v in state.items()}, strict=False)
    assert not unexpected and set(missing) <= ({"lm_head.weight"} if tied else set())
    x = np.random.default_rng(1).integers(0, cfg.vocab_size, (2, cfg.context))
    with torch.no_grad():
        ref = hf(torch.tensor(x)).logits.numpy()
    ours = np.asarray(jax.jit(make_apply(cfg))(params, x.astype(np.int32)))
    np.testing.assert_allclose(ours, ref, atol=2e-5, rtol=1e-4)
