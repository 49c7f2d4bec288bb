"""A teacher judges text: bits per character of every sentence, batched and jitted, and the
quantile filter that keeps augmented variants no worse than most real sentences.

Scoring a sentence follows `lm.evaluate` exactly: tokens `[EOS] + encode(text)`, every text
token scored once (the leading EOS is context only, no end token is scored), windows of the
model's context advancing by half of it when a text is longer than one window, and
bits per character = NLL in bits / len(text).

Batching: every window becomes one row; rows are padded to the smallest of a few length
buckets and stacked into batches of about `tokens_per_batch` tokens, so one jitted scorer is
compiled once per bucket (a handful of shapes) instead of once per length, and short sentences
do not pay for long ones' padding.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from lm.evaluate import LN2, windows

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


def bits_per_char(nll: NllFn, encode: Callable[[str], list[int]], eos: int, texts: Sequence[str],
                  context: int, tokens_per_batch: int = 8192) -> np.ndarray:
    """Bits per character of each text on its own (NaN for an empty text)."""
    streams = [np.asarray([eos] + list(encode(t)), np.int32) for t in texts]
    nats = score_streams(nll, streams, context, eos, tokens_per_batch)
    chars = np.asarray([len(t) for t in texts], np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(chars > 0, nats / LN2 / chars, np.nan)


@dataclass(frozen=True)
class Verdict:
    threshold: float                 # bits/char: the Q quantile of the real sentences
    keep: np.ndarray                 # bool per variant
    per_augmenter: dict[str, dict]   # name -> {"variants", "kept", "kept_fraction"}


def quantile_filter(real_bpc: np.ndarray, variant_bpc: np.ndarray, augmenters: Sequence[str],
                    q: float) -> Verdict:
    """Keep a variant when it scores no worse than the `q` quantile of the real sentences' bits
    per character; the threshold is the same for every augmenter, counts are per augmenter."""
    if not 0.0 < q <= 1.0:
        raise ValueError(f"--keep-quantile must be in (0, 1], not {q}")
    real = real_bpc[np.isfinite(real_bpc)]
    threshold = float(np.quantile(real, q)) if len(real) else math.inf
    keep = np.isfinite(variant_bpc) & (variant_bpc <= threshold)
    per: dict[str, dict] = {}
    names = np.asarray(augmenters, dtype=object)
    for name in sorted(set(augmenters)):
        sel = names == name
        n, k = int(sel.sum()), int(keep[sel].sum())
        per[name] = {"variants": n, "kept": k, "kept_fraction": round(k / n, 4) if n else 0.0}
    return Verdict(threshold, keep, per)
