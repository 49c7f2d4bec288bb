"""The n-gram in the teacher: soft targets q = w p_teacher + (1 - w) p_ngram.

A token-level interpolated modified Kneser-Ney n-gram (`lm.ngram.Ngram`) of the real train
tokens, in the teacher's tokenizer, mixed into the teacher's next-token distribution. On a scarce
corpus a count model and a network err in different places (the network overfits what it saw
often, the counts keep rare strings exactly), so a mixture can beat either; a student learns the
mixture and needs no n-gram to run.

Chosen on dev, reported on test: the order is the one with the lowest dev NLL of the n-gram alone
(`lm.ngram.dev_curve`), then the teacher's weight w on the grid `WEIGHTS` that gives the lowest dev
bits per character of the mixture. Both models score every dev token once: the teacher through
the windows of `lm.scoring.evaluate` (`stream_nll`), the n-gram from the stream before the token.
w = 1 is the teacher alone (nothing is mixed). Test is scored once, at that order and weight.

In the top-k cache (`lm.distill.teacher_cache`), `NgramMix.mix` rewrites each position's K
log-probabilities to ln q on the teacher's K tokens; the cache's bucket, 1 - sum q, then holds both
models' mass outside them. The n-gram reads each row's own tokens as its history, as the teacher
does. The mixture is not tempered: at a temperature other than 1 the teacher's part is.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from lm.corpus import Snapshot
from lm.data import token_stream
from lm.fit import split_key
from lm.ngram import KN, START_ORDER, Ngram, dev_curve
from lm.scoring import LN2, eval_stream, stream_nll
from lm.tokenizer import Tokenizer

from lm.distill.report import MIX_MODEL
from lm.distill.workspace import Workspace

WEIGHTS = tuple(round(float(w), 2) for w in np.linspace(0.0, 1.0, 21))


@dataclass(frozen=True)
class NgramMix:
    ngram: Ngram
    order: int
    weight: float  # the teacher's; 1 - weight is the n-gram's

    @property
    def key(self) -> str:
        """What a cache of mixed outputs depends on besides the teacher."""
        return f"kn{self.order}w{self.weight:.2f}"

    def mix(self, inputs: np.ndarray, idx: np.ndarray, logp: np.ndarray) -> np.ndarray:
        """ln q of the teacher's top-k tokens `idx` [R, T, K] after `inputs` [R, T]."""
        p = self.ngram.next_probs_of(inputs, idx, self.order)
        return np.log(self.weight * np.exp(logp.astype(np.float64)) + (1.0 - self.weight) * p)


def token_ngram(tok: Tokenizer, snap: Snapshot, max_order: int = START_ORDER) -> Ngram:
    """The n-gram of the train split's token stream (`lm.data.token_stream`, as the teacher's pool)."""
    stream = token_stream(tok, snap.documents("train"), split_key(snap, "train"))
    return Ngram(stream, tok.vocab_size, tok.vocab_size, max_order, KN)


def mixture_bits(p_teacher: np.ndarray, p_ngram: np.ndarray, weight: float, chars: int) -> float:
    return float(-np.log(weight * p_teacher + (1.0 - weight) * p_ngram).sum() / LN2 / chars)


def fit_mix(model: Any, snap: Snapshot, ngram: Ngram | None = None) -> tuple[NgramMix, dict[str, Any]]:
    """The order and weight chosen on dev for a teacher (`lm.scoring.ScoredModel`), and the
    figures: dev and test bits per character of the mixture and of the token n-gram alone, the
    dev curve over the weights."""
    ngram = ngram or token_ngram(model.tokenizer, snap)
    stride = max(1, model.context // 2)
    split = {}
    for name in ("dev", "test"):
        text, stream = eval_stream(model.tokenizer, snap, name)
        split[name] = (len(text), stream, np.exp(-stream_nll(model, stream, stride)))
    chars, dev, p_teacher = split["dev"]
    order = int(np.argmin(dev_curve(ngram, dev))) + 1
    p_ngram = {name: np.exp(ngram.log_probs(stream, order)[1:]) for name, (_, stream, _) in split.items()}
    by_weight = {w: mixture_bits(p_teacher, p_ngram["dev"], w, chars) for w in WEIGHTS}
    weight = min(WEIGHTS, key=lambda w: (by_weight[w], -w))  # a tie: more teacher
    test_chars, _, p_test = split["test"]
    figures = {"order": order, "teacher_weight": weight,
               "dev_bits_per_char": by_weight[weight],
               "test_bits_per_char": mixture_bits(p_test, p_ngram["test"], weight, test_chars),
               "ngram_dev_bits_per_char": by_weight[0.0],
               "ngram_test_bits_per_char": mixture_bits(p_test, p_ngram["test"], 0.0, test_chars),
               "dev_bits_per_char_by_weight": {str(w): round(b, 6) for w, b in by_weight.items()}}
    return NgramMix(ngram, order, weight), figures


def teacher_mix(ws: Workspace, teacher: Any) -> NgramMix | None:
    """The run's mixture (None: not asked for, no teacher of ours, `--cache never`, or the teacher
    alone best on dev), chosen once and read back from its DONE.json on a re-run."""
    s = ws.settings
    if teacher is None or not s.teacher_ngram:
        return None
    if s.cache == "never":
        ws.log("--cache never: the n-gram is not mixed into the teacher (it is mixed in the top-k cache)")
        return None
    done = ws.done(MIX_MODEL)
    if done is None:
        mix, figures = fit_mix(teacher, ws.snapshot)
        done = ws.mark_done(MIX_MODEL, {"params": None, **figures})
        ws.log(f"teacher + token n-gram (order {mix.order}, teacher weight {mix.weight}, chosen on dev): "
               f"dev {figures['dev_bits_per_char']:.4f} bits/char")
    else:
        mix = NgramMix(token_ngram(ws.tok, ws.snapshot, done["order"]), done["order"], done["teacher_weight"])
    return mix if mix.weight < 1.0 else None
