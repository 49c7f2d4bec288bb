"""`python -m lm.evaluate MODEL --split dev|test [--corpus OUT/NAME] [--json]`

Bits per character on raw held-out text: the total negative log-likelihood of the split's text
in bits divided by its number of characters (Unicode code points). It does not depend on the
tokenizer, so models with different vocabularies, and character-level results, compare directly.

* Text: the split's records in (source, doc, pos) order joined with the corpus separator
  ("\\n" for one-record-a-line corpora such as gl-ctg; "\\n\\n" for paragraph corpora such as
  tinyshakespeare, which gives back the published validation text: see `lm.corpus`).
  `chars` = len(text).
* Tokens: `[EOS] + encode(text)`; the leading EOS is context only, every text token is scored
  exactly once, and no end-of-text token is scored (it is not a character).
* Context: windows of `context` tokens (the model's) advance by `--stride` tokens (default
  context / 2). The first window scores all its tokens; each later one scores only its last
  `stride` tokens, which therefore see at least `context - stride` tokens of context.

Prints `bits_per_char`, `nats_per_char`, `nll_bits`, `chars`, `tokens` and perplexity per token
(`ppl`); `--json` prints one JSON object. MODEL is anything `lm.loader.load_model` reads (a run
folder today). Exit codes: 0 ok, 1 missing/corrupt model or empty split, 2 usage.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

import numpy as np

from lm import parallel
from lm.compile_cache import enable_compile_cache
from lm.corpus import open_snapshot
from lm.data import token_stream
from lm.errors import DataError, UsageError, run_cli
from lm.loader import LanguageModel, load_model

LN2 = math.log(2.0)


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


def score_stream(model: LanguageModel, stream: np.ndarray, stride: int, batch: int = 32) -> tuple[float, int]:
    """(total NLL in nats, tokens scored) of stream[1:], each token once, windows as above."""
    ctx = model.context
    wins = windows(len(stream), ctx, stride)
    pad = np.full(ctx + 1, 0, np.int32)
    total, count = 0.0, 0
    for i in range(0, len(wins), batch):
        chunk = wins[i:i + batch]
        seqs = np.zeros((batch, ctx + 1), np.int32)
        mask = np.zeros((batch, ctx), np.float64)
        for j, (b, first) in enumerate(chunk):
            seq = stream[b:b + ctx + 1]
            seqs[j] = pad
            seqs[j, :len(seq)] = seq
            # target k of this window is stream[b + 1 + k]: scored when first <= b + 1 + k < len
            k = np.arange(ctx) + b + 1
            mask[j] = (k >= first) & (k < len(stream))
        nll = model.nll(seqs[:, :-1], seqs[:, 1:]).astype(np.float64)
        total += float((nll * mask).sum())
        count += int(mask.sum())
    return total, count


def evaluate(model: LanguageModel, split: str, corpus: str | None = None, stride: int | None = None) -> dict[str, Any]:
    if split not in ("dev", "test"):
        raise UsageError(f"--split must be dev or test, not {split!r}")
    where = corpus or model.info.get("corpus", {}).get("path")
    if not where:
        raise UsageError("this model does not name its corpus: give --corpus OUT/NAME")
    snap = open_snapshot(where)
    text = snap.text(split)
    if not text:
        raise DataError(f"the {split} split of {snap.root} is empty: nothing to evaluate")
    stream = token_stream(model.tokenizer, [text], f"{snap.name}/{snap.version}/{split}/eval")[:-1]
    stride = stride or max(1, model.context // 2)
    nll, n_tokens = score_stream(model, stream, stride)
    assert n_tokens == len(stream) - 1, "every token is scored exactly once"
    return {
        "split": split, "bits_per_char": bits_per_char(nll, len(text)), "nats_per_char": nll / len(text),
        "nll_bits": nll / LN2, "chars": len(text), "tokens": n_tokens, "ppl": math.exp(nll / n_tokens),
        "context": model.context, "stride": stride,
        "corpus": {"name": snap.name, "version": snap.version}, "model": model.info.get("path"),
        "checkpoint": model.info.get("checkpoint"),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lm.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="a run folder (python -m lm.train --out RUN)")
    p.add_argument("--split", required=True, choices=("dev", "test"))
    p.add_argument("--corpus", help="OUT/NAME or a version folder (default: the run's own)")
    p.add_argument("--stride", type=int, help="tokens a window advances (default: context / 2)")
    p.add_argument("--checkpoint", default="best", choices=("best", "last"))
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    parallel.use_cpu_cores()
    enable_compile_cache()
    result = evaluate(load_model(args.model, args.checkpoint), args.split, args.corpus, args.stride)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['corpus']['name']} {args.split}: {result['bits_per_char']:.4f} bits/char "
              f"({result['nats_per_char']:.4f} nats/char), ppl {result['ppl']:.2f} per token, "
              f"{result['chars']} chars, {result['tokens']} tokens, context {result['context']}, stride {result['stride']}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
