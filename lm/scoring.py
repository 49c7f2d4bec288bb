"""Bits per character: sliding windows over a split's raw text, and batched scoring of many texts.

Bits per character on raw held-out text = the total negative log-likelihood of the text in bits
divided by its number of characters (Unicode code points). It does not depend on the tokenizer,
so models with different vocabularies, and character-level results, compare directly.

Scoring takes a model and never loads one (`ScoredModel`: what it reads of a model; the
callers load it, `lm.loader.load_model` for a MODEL path).

* `evaluate(model, split)`: the split's records in (source, doc, pos) order joined with the
  corpus separator ("\\n" for one-record-a-line corpora such as gl-ctg; "\\n\\n" for paragraph
  corpora such as tinyshakespeare, which gives back the published validation text: see
  `lm.corpus`); tokens `[EOS] + encode(text)`: the leading EOS is context only, every text token
  is scored exactly once, and no end-of-text token is scored (it is not a character). Windows of
  the model's `context` tokens advance by `stride` tokens (default context / 2); the first window
  scores all its tokens, each later one only its last `stride` tokens, which therefore see at
  least `context - stride` tokens of context.
* `texts_bits_per_char(...)`: each text on its own, scored as `evaluate` scores a split (used by
  bench/equal_terms.py). Every window becomes one row; rows are padded to the smallest of a few
  length buckets and stacked into batches of about `tokens_per_batch` tokens, so one jitted
  scorer is compiled once per bucket (a handful of shapes) instead of once per length, and short
  texts do not pay for long ones' padding.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from lm.corpus import Snapshot, open_snapshot
from lm.data import token_stream
from lm.errors import DataError, LMError, UsageError
from lm.tokenizer import Tokenizer

LN2 = math.log(2.0)


class ScoredModel(Protocol):
    """What scoring reads of a model; callers load it (`lm.loader.load_model` gives one)."""

    tokenizer: Tokenizer
    context: int
    info: dict[str, Any]

    def nll(self, inputs: np.ndarray, targets: np.ndarray) -> np.ndarray: ...


def bits_per_char(nll_nats: float, chars: int) -> float:
    """Total negative log-likelihood (nats) of a text over its characters, in bits."""
    return nll_nats / LN2 / chars


def windows(n_tokens: int, context: int, stride: int) -> list[tuple[int, int]]:
    """(start, first scored target) per window over a stream of `n_tokens` (stream[0] = EOS).

    A window starting at b feeds stream[b : b + context] and predicts stream[b + 1 : b + context + 1];
    it scores targets from its first-scored index up to b + context (or the end).
    """
    if not 0 < stride <= context:
        raise UsageError(f"--stride must be in 1..{context} (the context), not {stride}")
    out, scored_to, b = [], 0, 0  # targets 1..scored_to are scored
    while scored_to < n_tokens - 1:
        out.append((b, scored_to + 1))
        scored_to = min(b + context, n_tokens - 1)
        b += stride
    return out


def stream_nll(model: ScoredModel, stream: np.ndarray, stride: int, batch: int = 32) -> np.ndarray:
    """The NLL in nats of each token of stream[1:], each scored once, windows as above."""
    ctx = model.context
    wins = windows(len(stream), ctx, stride)
    out = np.zeros(len(stream) - 1)
    for i in range(0, len(wins), batch):
        chunk = wins[i:i + batch]
        seqs = np.zeros((batch, ctx + 1), np.int32)
        for j, (b, _) in enumerate(chunk):
            seq = stream[b:b + ctx + 1]
            seqs[j, :len(seq)] = seq
        nll = np.asarray(model.nll(seqs[:, :-1], seqs[:, 1:]), np.float64)
        for j, (b, first) in enumerate(chunk):
            # target k of this window is stream[b + 1 + k]: scored when first <= b + 1 + k < len
            lo, hi = first - b - 1, min(ctx, len(stream) - b - 1)
            out[first - 1:b + hi] = nll[j, lo:hi]
    return out


def score_stream(model: ScoredModel, stream: np.ndarray, stride: int, batch: int = 32) -> tuple[float, int]:
    """(total NLL in nats, tokens scored) of stream[1:], each token once, windows as above."""
    nll = stream_nll(model, stream, stride, batch)
    return float(nll.sum()), len(nll)


def eval_stream(tok: Tokenizer, snap: Snapshot, split: str) -> tuple[str, np.ndarray]:
    """A split's text and its tokens `[EOS] + encode(text)` (cached)."""
    text = snap.text(split)
    if not text:
        raise DataError(f"the {split} split of {snap.root} is empty: nothing to evaluate")
    return text, token_stream(tok, [text], f"{snap.name}/{snap.version}/{split}/eval")[:-1]


def evaluate(model: ScoredModel, split: str, corpus: str | None = None, stride: int | None = None) -> dict[str, Any]:
    if split not in ("dev", "test"):
        raise UsageError(f"--split must be dev or test, not {split!r}")
    where = corpus or model.info.get("corpus", {}).get("path")
    if not where:
        raise UsageError("this model does not name its corpus: give --corpus OUT/NAME")
    snap = open_snapshot(where)
    text, stream = eval_stream(model.tokenizer, snap, split)
    stride = stride or max(1, model.context // 2)
    nll, n_tokens = score_stream(model, stream, stride)
    assert n_tokens == len(stream) - 1, "every token is scored exactly once"
    if not math.isfinite(nll):  # never a NaN score: it is no number (and no JSON)
        raise LMError(f"model {model.info.get('path')} ({model.info.get('checkpoint')}) scored a non-finite "
                      f"loss on the {split} split of {snap.root}: its weights or logits are not finite")
    return {
        "split": split, "bits_per_char": bits_per_char(nll, len(text)), "nats_per_char": nll / len(text),
        "nll_bits": nll / LN2, "chars": len(text), "tokens": n_tokens, "ppl": math.exp(nll / n_tokens),
        "context": model.context, "stride": stride,
        "corpus": {"name": snap.name, "version": snap.version}, "model": model.info.get("path"),
        "checkpoint": model.info.get("checkpoint"),
    }


def describe(result: dict[str, Any]) -> str:
    """One line for people: an `evaluate` result."""
    r = result
    return (f"{r['corpus']['name']} {r['split']}: {r['bits_per_char']:.4f} bits/char ({r['nats_per_char']:.4f} "
            f"nats/char), ppl {r['ppl']:.2f} per token, {r['chars']} chars, {r['tokens']} tokens, "
            f"context {r['context']}, stride {r['stride']}")


NllFn = Callable[[np.ndarray, np.ndarray], np.ndarray]  # [B, L] inputs, targets -> [B, L] nats


def buckets_for(context: int) -> list[int]:
    """Row lengths (inputs, without the shifted target): 16, 32, 48, 64, 96, 128, ... (powers of
    two and the midpoints above 32), and the context: padding stays under a third of a row,
    for a handful of compilations."""
    out, n = [], 16
    while n < context:
        out.append(n)
        if n >= 32 and n + n // 2 < context:
            out.append(n + n // 2)
        n *= 2
    return out + [context]


@dataclass(frozen=True)
class _Row:
    text: int          # which text
    tokens: np.ndarray # stream[b : b + L + 1]
    first: int         # first scored target position within the row (0-based on targets)


def _rows(streams: Sequence[np.ndarray], context: int) -> list[_Row]:
    rows = []
    for t, stream in enumerate(streams):
        if len(stream) < 2:
            continue
        for b, first in windows(len(stream), context, max(1, context // 2)):
            rows.append(_Row(t, stream[b:b + context + 1], first - (b + 1)))
    return rows


def score_streams(nll: NllFn, streams: Sequence[np.ndarray], context: int, pad_id: int,
                  tokens_per_batch: int = 8192) -> np.ndarray:
    """Total NLL in nats of stream[1:] for every stream ([EOS] + text tokens), batched by length."""
    totals = np.zeros(len(streams), np.float64)
    rows = _rows(streams, context)
    sizes = buckets_for(context)
    by_bucket: dict[int, list[_Row]] = {}
    for r in rows:
        need = len(r.tokens) - 1
        by_bucket.setdefault(next(s for s in sizes if s >= need), []).append(r)
    for length, group in sorted(by_bucket.items()):
        batch = max(1, tokens_per_batch // length)
        for i in range(0, len(group), batch):
            chunk = group[i:i + batch]
            seqs = np.full((batch, length + 1), pad_id, np.int32)
            mask = np.zeros((batch, length), np.float64)
            for j, r in enumerate(chunk):
                seqs[j, :len(r.tokens)] = r.tokens
                mask[j, r.first:len(r.tokens) - 1] = 1.0
            out = np.asarray(nll(seqs[:, :-1], seqs[:, 1:]), np.float64)
            sums = (out * mask).sum(axis=1)
            for j, r in enumerate(chunk):
                totals[r.text] += sums[j]
    return totals


def texts_bits_per_char(nll: NllFn, encode: Callable[[str], list[int]], eos: int, texts: Sequence[str],
                  context: int, tokens_per_batch: int = 8192) -> np.ndarray:
    """Bits per character of each text on its own (NaN for an empty text)."""
    streams = [np.asarray([eos] + list(encode(t)), np.int32) for t in texts]
    nats = score_streams(nll, streams, context, eos, tokens_per_batch)
    chars = np.asarray([len(t) for t in texts], np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(chars > 0, nats / LN2 / chars, np.nan)
