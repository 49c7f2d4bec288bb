"""Our models in llama.cpp's terms: a GGUF file (architecture `llama`) written with the `gguf` package.

Weights: Hugging Face's Llama tensors (`hf_format.hf_state_dict`) under GGUF's names, q and k
rows permuted from the rotate-half rotary layout (ours, Hugging Face's) to the interleaved one
llama.cpp's `llama` architecture applies, as llama.cpp's own converter does. A tied model has no
`output.weight`: llama.cpp then reads the embedding as the output layer.

Types: `f32`, `f16` or `q8_0` for the matrices; norms stay float32 (llama.cpp's converter does
the same). A matrix whose rows are not a whole number of 32-value blocks cannot be q8_0 and is
kept in f16 (`kept`: named in the export's description).

Tokenizer: llama.cpp's `t5` model (UGM), the same Viterbi over the same pieces and scores as
SentencePiece's unigram, with our options: no space prefix, spaces escaped as "▁", no
whitespace folding, no normalisation table, BOS (our end-of-sequence token, which starts every
text here) added and EOS not; "\\n" is a user-defined piece, as in our model. One difference,
checked by the tests: UGM has no byte fallback, so a run of characters outside the vocabulary
becomes one unknown token in llama.cpp where ours writes their UTF-8 bytes. Unigram tokenizers
only: llama.cpp's `llama` (SPM) model merges greedily by score, which is not our segmentation.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from lm.errors import UsageError
from lm.model import ModelConfig
from lm.tokenizer import USER_DEFINED, Tokenizer

QUANTS = ("f32", "f16", "q8_0")
BLOCK = 32  # values per q8_0 block
# Hugging Face name (after "model.layers.N.") -> GGUF name (after "blk.N.")
LAYER_NAMES = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
               "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
               "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
TOP_NAMES = {"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output"}


def gguf_name(hf_name: str) -> str:
    stem = hf_name.removesuffix(".weight")
    if stem in TOP_NAMES:
        return TOP_NAMES[stem] + ".weight"
    _, _, layer, rest = stem.split(".", 3)  # model.layers.N.rest
    return f"blk.{layer}.{LAYER_NAMES[rest]}.weight"


def to_interleaved(w: np.ndarray, n_heads: int) -> np.ndarray:
    """q or k rows ([out, in]) from rotate-half pairs (i, i + d/2) to adjacent pairs (2i, 2i + 1)."""
    return w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def tensors(state: dict[str, np.ndarray], cfg: ModelConfig) -> dict[str, np.ndarray]:
    """GGUF name -> float32 array, rotary rows permuted."""
    out = {}
    for name, w in state.items():
        if name.endswith(("q_proj.weight", "k_proj.weight")):
            w = to_interleaved(w, cfg.n_heads)
        out[gguf_name(name)] = np.ascontiguousarray(w, np.float32)
    return out


def tokenizer_fields(tok: Tokenizer) -> tuple[list[bytes], list[float], list[int]]:
    """Pieces (UTF-8), scores and GGUF token types (NORMAL 1, UNKNOWN 2, CONTROL 3, USER_DEFINED 4,
    UNUSED 5, BYTE 6, SentencePiece's own numbering)."""
    if tok.model_type != "unigram":
        raise UsageError(f"the gguf export converts unigram tokenizers; this run's is {tok.model_type!r}")
    sp = tok.sp
    pieces, scores, types = [], [], []
    for i in range(sp.get_piece_size()):
        piece = sp.id_to_piece(i)
        kind = (2 if sp.is_unknown(i) else 3 if sp.is_control(i) else 6 if sp.is_byte(i) else 5 if sp.is_unused(i)
                else 4 if piece in USER_DEFINED else 1)
        pieces.append(piece.encode("utf-8"))
        scores.append(float(sp.get_score(i)))
        types.append(kind)
    return pieces, scores, types


def write_gguf(path: Path, state: dict[str, np.ndarray], cfg: ModelConfig, tok: Tokenizer, quant: str,
               name: str) -> list[str]:
    """Writes the GGUF file; returns the matrices kept wider than `quant` asks (q8_0 only)."""
    import gguf

    if quant not in QUANTS:
        raise UsageError(f"--quant must be one of {', '.join(QUANTS)}, not {quant!r}")
    qtype = {"f32": gguf.GGMLQuantizationType.F32, "f16": gguf.GGMLQuantizationType.F16,
             "q8_0": gguf.GGMLQuantizationType.Q8_0}[quant]
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name(name)
    w.add_context_length(cfg.context)
    w.add_embedding_length(cfg.dim)
    w.add_block_count(cfg.n_layers)
    w.add_feed_forward_length(cfg.hidden_dim)
    w.add_head_count(cfg.n_heads)
    w.add_head_count_kv(cfg.n_heads)
    w.add_rope_dimension_count(cfg.head_dim)
    w.add_rope_freq_base(cfg.rope_theta)
    w.add_layer_norm_rms_eps(cfg.norm_eps)
    w.add_vocab_size(cfg.vocab_size)
    w.add_file_type({"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                     "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[quant])
    pieces, scores, types = tokenizer_fields(tok)
    w.add_tokenizer_model("t5")
    w.add_token_list(pieces)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_unk_token_id(tok.sp.unk_id())
    w.add_eos_token_id(tok.eos_id)
    w.add_bos_token_id(tok.eos_id)  # every stream here starts with EOS
    w.add_add_bos_token(True)  # prompts start after our start-of-text token, as in training
    w.add_add_eos_token(False)
    w.add_add_space_prefix(False)
    w.add_remove_extra_whitespaces(False)
    kept = []
    for tname, arr in tensors(state, cfg).items():
        if arr.ndim == 1 or qtype == gguf.GGMLQuantizationType.F32:
            w.add_tensor(tname, arr)  # norms stay float32
        elif qtype == gguf.GGMLQuantizationType.F16 or arr.shape[-1] % BLOCK:
            kept += [tname] if qtype != gguf.GGMLQuantizationType.F16 else []
            w.add_tensor(tname, arr.astype(np.float16))
        else:
            w.add_tensor(tname, gguf.quants.quantize(arr, qtype), raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return kept

