"""Training text as packed pools (`lm.mixture.Pool`): real text, augmented text, noised text.

* Real text is packed as `lm.train` packs it (documents with EOS between them).
* Each augmenter's kept variants are one pool: the variants joined with the corpus separator,
  so they look like the real text (one sentence a line, or paragraphs), then packed.
* Noised input, clean targets: for noise variants whose parent sentence is known, the pool's
  tokens are the clean parent and its `inputs` the noised text aligned to it token by token
  (difflib opcodes: a replaced span puts the noised tokens over the clean ones as far as they
  go; deletions and insertions leave the clean tokens). The student reads typos and swaps but
  is asked for the clean next token, and the teacher reads the clean text.
"""
from __future__ import annotations

import difflib
from typing import Sequence

import numpy as np

from lm.data import pack, token_stream
from lm.mixture import Pool
from lm.tokenizer import Tokenizer


def real_pool(tok: Tokenizer, docs: list[str], context: int, cache_key: str | None) -> Pool:
    return Pool("real", pack(token_stream(tok, docs, cache_key), context, tok.eos_id))


def text_pool(name: str, tok: Tokenizer, texts: Sequence[str], context: int, separator: str) -> Pool:
    return Pool(name, pack(token_stream(tok, [separator.join(texts)], None), context, tok.eos_id))


def align_noised(clean: list[int], noised: list[int]) -> list[int]:
    """`clean` with the noised tokens written over it where the two differ (same length as clean)."""
    out = list(clean)
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, clean, noised, autojunk=False).get_opcodes():
        if tag == "replace":
            n = min(i2 - i1, j2 - j1)
            out[i1:i1 + n] = noised[j1:j1 + n]
    return out


def noised_pool(name: str, tok: Tokenizer, pairs: Sequence[tuple[str, str]], context: int, separator: str) -> Pool:
    """(clean parent, noised variant) pairs -> a pool whose inputs are noised, targets clean."""
    sep = tok.encode(separator)
    clean, noisy = [tok.eos_id], [tok.eos_id]
    for i, (parent, variant) in enumerate(pairs):
        c = tok.encode(parent)
        if i:
            clean += sep
            noisy += sep
        clean += c
        noisy += align_noised(c, tok.encode(variant))
    cp = pack(np.asarray(clean + [tok.eos_id], np.int32), context, tok.eos_id)
    npk = pack(np.asarray(noisy + [tok.eos_id], np.int32), context, tok.eos_id)
    return Pool(name, cp, inputs=npk.tokens[:, :-1])


def pool_tokens(pools: Sequence[Pool]) -> int:
    return int(sum(p.packed.tokens.shape[0] * (p.packed.tokens.shape[1] - 1) for p in pools))
