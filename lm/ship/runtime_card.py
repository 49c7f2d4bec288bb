"""The model card (`README.md`) of a `gguf` or `onnx` export: what each file is and how to run it
with the runtime alone (`pip install llama-cpp-python`, or `onnxruntime numpy sentencepiece`),
nothing of this project installed. The tests run both code blocks from a card as written.
"""
from __future__ import annotations

from typing import Any

from lm.model import ModelConfig
from lm.ship.model_card import recorded_figures

PROMPT = "A "
NEW_TOKENS = 48


def llama_cpp_command(weights: str, context: int, prompt: str = PROMPT, tokens: int = NEW_TOKENS) -> str:
    """Greedy continuation of `prompt` on llama.cpp (its BOS is our start-of-text token)."""
    return (f"python -c \"from llama_cpp import Llama; m = Llama('{weights}', n_ctx={context}, verbose=False); "
            f"print(m({prompt!r}, max_tokens={tokens}, temperature=0.0, top_k=1)['choices'][0]['text'])\"")


def onnx_snippet(cfg: ModelConfig, weights: str, prompt: str = PROMPT, tokens: int = NEW_TOKENS) -> str:
    """Greedy continuation of `prompt` on ONNX Runtime with the key/value cache."""
    return f'''import numpy as np, onnxruntime as ort, sentencepiece as spm

sp = spm.SentencePieceProcessor(model_file="tokenizer.model")
session = ort.InferenceSession("{weights}", providers=["CPUExecutionProvider"])
CONTEXT = {cfg.context}  # positions the model knows; the prompt must fit


def empty():  # a key/value cache per layer: [batch, heads, 0 positions, head_dim]
    return {{f"past_{{kind}}_{{i}}": np.zeros((1, {cfg.n_heads}, 0, {cfg.head_dim}), np.float32)
            for i in range({cfg.n_layers}) for kind in ("key", "value")}}


seen, feed, past, new = [], [sp.eos_id()] + sp.encode({prompt!r}), empty(), []
for _ in range({tokens}):
    if len(seen) + len(feed) > CONTEXT:  # the cache is full: start again from its last half
        feed, past, seen = seen[-(CONTEXT // 2 - 1):] + feed, empty(), []
    logits, *present = session.run(None, {{"input_ids": np.array([feed], np.int64), **past}})
    past, seen = dict(zip(past, present)), seen + feed
    feed = [int(logits[0, -1].argmax())]
    if feed[0] == sp.eos_id():
        break
    new += feed
print(sp.decode(new))
'''


def runtime_card(info: dict[str, Any], cfg: ModelConfig, export: dict[str, Any]) -> str:
    fmt, weights, quant = export["format"], export["weights"], export["quant"]
    corpus = info.get("corpus", {})
    bpc = recorded_figures(info).get("model")
    size = f"{export['bytes'] / 1e6:.2f} MB"
    if fmt == "gguf":
        runtime = "llama.cpp"
        how = ("Greedy continuation of a prompt with llama.cpp's Python binding (`pip install llama-cpp-python`):\n\n"
               f"```sh\n{llama_cpp_command(weights, cfg.context)}\n```\n\n"
               "The tokenizer is in the file (llama.cpp's unigram model, `t5`): it gives our tokenizer's ids, except "
               "that a character outside the vocabulary becomes the unknown token instead of its UTF-8 bytes.")
        kept = export.get("kept_f16") or []
        types = f"{quant} matrices, float32 norms" + (f"; kept in f16 (rows not whole q8_0 blocks): {', '.join(kept)}"
                                                      if kept else "")
    else:
        runtime = "ONNX Runtime"
        how = ("Greedy continuation with ONNX Runtime (`pip install onnxruntime numpy sentencepiece`), run in this "
               f"folder:\n\n```python\n{onnx_snippet(cfg, weights)}```")
        types = "float32" if quant == "f32" else "int8 MatMul weights and embedding (ONNX Runtime dynamic quantisation)"
    quality = (f"{bpc:.4f} test bits per character (the source run's, in Flax)" if bpc is not None
               else "test bits per character: not recorded (`python -m lm.evaluate` on this folder measures it)")
    return (f"# {fmt.upper()} export for {runtime}\n\n"
            f"A {cfg.n_params():,}-parameter Llama ({cfg.n_layers} layers, width {cfg.dim}, {cfg.n_heads} heads, "
            f"context {cfg.context}) trained on {corpus.get('name', 'an unnamed corpus')} "
            f"{corpus.get('version', '')}; {quality}.\n\n"
            f"| file | what |\n|---|---|\n| `{weights}` | weights ({types}), {size} |\n"
            "| `tokenizer.model` | the SentencePiece tokenizer |\n"
            "| `export.json` | source run, checkpoint, shape, sha256 of the weights |\n\n" + how + "\n")
