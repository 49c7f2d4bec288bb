"""`python -m lm.ngram --corpus OUT/NAME [--max-order N] [--json]`: the character n-gram anchor.

A character n-gram model with Witten-Bell interpolation, trained on a snapshot's train text (the
split's records joined as `lm.corpus` joins them) and scored in bits per character on the same
dev and test text as `lm.scoring.evaluate`, so a neural model's figure has an honest floor to
beat. The order (1..N) is the one with the lowest dev bits per character; test is scored once,
at that order.

Witten-Bell: for a history h seen `c(h)` times followed by `t(h)` distinct characters,
`P(x | h) = (c(h x) + t(h) P(x | h')) / (c(h) + t(h))`, where h' is h without its oldest
character; below order 1 the distribution is uniform over the train characters plus one symbol
for every character never seen in train (which therefore share one probability: a test
character outside the train alphabet is rare in these corpora, and this favours the n-gram, not
the models it anchors). Histories never seen fall through to the next lower order, and the first
characters of a text use the history they have. The probabilities over the vocabulary sum to 1
for every history (tested). Exit codes: 0 ok, 1 failure (empty split), 2 usage.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from collections import Counter
from typing import Any

from lm.corpus import open_snapshot
from lm.errors import DataError, UsageError, run_cli

UNSEEN = "\uffff"  # the one symbol that stands for every character not seen in train


class CharNgram:
    """Interpolated Witten-Bell character n-gram of orders 1..`max_order`."""

    def __init__(self, text: str, max_order: int = 8):
        if max_order < 1:
            raise UsageError(f"--max-order must be at least 1, not {max_order}")
        if not text:
            raise DataError("no train text for the n-gram model")
        self.max_order = max_order
        self.vocab = sorted(set(text) | {UNSEEN})
        self.counts: Counter[str] = Counter()      # n-gram (history + next char) -> count
        self.totals: Counter[str] = Counter()      # history -> count as a history
        self.types: Counter[str] = Counter()       # history -> distinct next characters
        for k in range(1, max_order + 1):
            grams = Counter(text[i - k + 1:i + 1] for i in range(k - 1, len(text)))
            self.counts.update(grams)
            for g, n in grams.items():
                self.totals[g[:-1]] += n
                self.types[g[:-1]] += 1

    def probs(self, history: str, char: str) -> list[float]:
        """P(char | the last k - 1 characters of history) for k = 1..max_order (shorter history:
        the highest order it allows, repeated)."""
        if char not in self.counts:
            char = UNSEEN
        p = 1.0 / len(self.vocab)
        out = []
        for k in range(1, self.max_order + 1):
            if k - 1 <= len(history):
                h = history[len(history) - (k - 1):] if k > 1 else ""
                total = self.totals.get(h, 0)
                if total:
                    t = self.types[h]
                    p = (self.counts.get(h + char, 0) + t * p) / (total + t)
            out.append(p)
        return out

    def bits_per_char(self, text: str) -> list[float]:
        """Bits per character of `text` at every order 1..max_order (index 0 is order 1)."""
        if not text:
            raise DataError("no text to score")
        nll = [0.0] * self.max_order
        span = self.max_order - 1
        for i, c in enumerate(text):
            for k, p in enumerate(self.probs(text[max(0, i - span):i], c)):
                nll[k] -= math.log2(p)
        return [x / len(text) for x in nll]


def anchor(corpus: str, max_order: int = 8) -> dict[str, Any]:
    """The n-gram of a snapshot: order chosen on dev, then dev and test bits per character."""
    snap = open_snapshot(corpus)
    train, dev, test = (snap.text(s) for s in ("train", "dev", "test"))
    if not dev or not test:
        raise DataError(f"{snap.root}: the n-gram anchor needs non-empty dev and test splits")
    model = CharNgram(train, max_order)
    dev_bpc = model.bits_per_char(dev)
    order = min(range(max_order), key=lambda k: dev_bpc[k]) + 1
    test_bpc = model.bits_per_char(test)[order - 1]
    return {"model": "character n-gram, Witten-Bell interpolation", "order": order,
            "dev_bits_per_char": dev_bpc[order - 1], "test_bits_per_char": test_bpc,
            "dev_bits_per_char_by_order": [round(x, 4) for x in dev_bpc], "train_chars": len(train),
            "corpus": {"name": snap.name, "version": snap.version}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lm.ngram", description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", required=True, help="OUT/NAME (follows LATEST) or a version folder")
    p.add_argument("--max-order", type=int, default=8, help="orders 1..N are tried on dev (8)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    r = anchor(args.corpus, args.max_order)
    print(json.dumps(r) if args.json else
          f"{r['corpus']['name']}: order {r['order']} (chosen on dev), dev {r['dev_bits_per_char']:.4f}, "
          f"test {r['test_bits_per_char']:.4f} bits/char")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
