"""Our models in Hugging Face's terms: `LlamaConfig`, the `LlamaForCausalLM` state dict, and the
SentencePiece tokenizer as a `tokenizers` Unigram model that `AutoTokenizer` loads.

The weights map one to one (`lm.model`): our kernels are `[in, out]`, torch's Linear weights
`[out, in]`. The tokenizer: our SentencePiece models escape spaces as "▁", add no dummy prefix,
normalise nothing and fall back to bytes, so a Unigram model with the same pieces and scores, a
space-to-"▁" normaliser and byte fallback segments text identically (checked on real text in the
tests). Its start token (BOS) is our end-of-sequence token, which starts every stream here.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from lm.errors import UsageError
from lm.model import ModelConfig
from lm.tokenizer import Tokenizer

ATTN = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")


def llama_config_dict(cfg: ModelConfig, eos_id: int) -> dict[str, Any]:
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.dim, "intermediate_size": cfg.hidden_dim, "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads, "num_key_value_heads": cfg.n_heads, "head_dim": cfg.head_dim,
        "max_position_embeddings": cfg.context, "rms_norm_eps": cfg.norm_eps, "rope_theta": cfg.rope_theta,
        "tie_word_embeddings": cfg.tie_embeddings, "attention_bias": False, "mlp_bias": False,
        "hidden_act": "silu", "bos_token_id": eos_id, "eos_token_id": eos_id, "torch_dtype": "float32",
    }


def hf_state_dict(params: dict[str, Any], cfg: ModelConfig) -> dict[str, np.ndarray]:
    """`LlamaForCausalLM` tensor names -> float32 arrays (lm_head only when untied)."""
    state = {"model.embed_tokens.weight": params["embed_tokens"]["embedding"],
             "model.norm.weight": params["norm"]["weight"]}
    if not cfg.tie_embeddings:
        state["lm_head.weight"] = np.asarray(params["lm_head"]["kernel"]).T
    for i, layer in params["layers"].items():
        pre = f"model.layers.{i}."
        for name in ATTN:
            state[pre + f"self_attn.{name}.weight"] = np.asarray(layer["self_attn"][name]["kernel"]).T
        for name in MLP:
            state[pre + f"mlp.{name}.weight"] = np.asarray(layer["mlp"][name]["kernel"]).T
        state[pre + "input_layernorm.weight"] = layer["input_layernorm"]["weight"]
        state[pre + "post_attention_layernorm.weight"] = layer["post_attention_layernorm"]["weight"]
    return {k: np.ascontiguousarray(np.asarray(v, np.float32)) for k, v in state.items()}


def fast_tokenizer(tok: Tokenizer) -> Any:
    """A transformers fast tokenizer with exactly our segmentation (unigram models only)."""
    from tokenizers import AddedToken, Tokenizer as Backend, decoders, models, normalizers
    from transformers import PreTrainedTokenizerFast

    if tok.model_type != "unigram":
        raise UsageError(f"the hf export converts unigram tokenizers; this run's is {tok.model_type!r}")
    sp = tok.sp
    vocab = [(sp.id_to_piece(i), float(sp.get_score(i))) for i in range(sp.get_piece_size())]
    backend = Backend(models.Unigram(vocab, unk_id=sp.unk_id(), byte_fallback=True))
    backend.normalizer = normalizers.Replace(" ", "▁")
    backend.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    eos, unk = sp.id_to_piece(sp.eos_id()), sp.id_to_piece(sp.unk_id())
    backend.add_special_tokens([AddedToken(eos, special=True), AddedToken(unk, special=True)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=eos, eos_token=eos, unk_token=unk,
                                   model_max_length=1 << 30, clean_up_tokenization_spaces=False)
