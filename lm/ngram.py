"""`python -m lm.ngram --corpus OUT/NAME [--method M] [--max-order N] [--json]`: the character n-gram anchor.

A character n-gram model trained on a snapshot's train text (the split's records joined as
`lm.corpus` joins them) and scored in bits per character on the same dev and test text as
`lm.scoring.evaluate`, so a neural model's figure has an honest floor to beat: the strongest
classical model of the same text. The order is the one with the lowest dev bits per character;
test is scored once, at that order.

`--method modified-kneser-ney` (the default; Chen & Goodman 1998, interpolated). The model of
order K, for a history h of k - 1 characters (h' is h without its oldest character):
`P_k(x | h) = max(a(h x) - D(a(h x)), 0) / A(h) + gamma(h) P_{k-1}(x | h')`, `A(h) = sum_y a(h y)`,
`gamma(h) = (D1 N1(h.) + D2 N2(h.) + D3+ N3+(h.)) / A(h)`, where a is the raw count at k = K and
the continuation count N1+(. h x) (distinct characters seen before h x) below K: a lower order
matters where the longer history has little evidence, so what should count there is in how many
contexts h x occurs, not how often. Nj(h.) is the number of distinct next characters whose count
a is j (3+: at least 3). Each order and kind of count has its own D(1) = D1, D(2) = D2,
D(3 or more) = D3+ from the count-of-counts n1..n4 of a: Y = n1 / (n1 + 2 n2), D1 = 1 - 2Y n2/n1,
D2 = 2 - 3Y n3/n2, D3+ = 3 - 4Y n4/n3 (one left undefined by a zero count-of-count is Y, or 0.5;
each is kept in [0.01, its count], so every character keeps some probability).
`--method witten-bell`: `P_k(x | h) = (c(h x) + t(h) P_{k-1}(x | h')) / (c(h) + t(h))` with the
raw count c at every order and t(h) the distinct characters seen after h.

Both: below order 1 the distribution is uniform over the train characters plus one symbol for
every character never seen in train (which therefore share one probability: a test character
outside the train alphabet is rare in these corpora, and this favours the n-gram, not the models
it anchors). A history never seen falls through to the next lower order (for modified KN, its
continuation level), and the first characters of a text use the history they have (the model of
the highest order it allows). The probabilities over the vocabulary sum to 1 for every history
(tested). The orders tried are 1..N; while the best is N, N grows by `WIDEN` (up to
`MAX_ORDER`), so the choice is not cut off by the range. Counting is vectorised: a k-gram's id is
the rank of (id of its last k - 1 characters, its first character), so each order is one sort.
`Ngram` is the same model over any integer symbols (a tokenizer's ids: `lm.distill.ngram_teacher`),
with `next_probs_of` giving the probability of many candidate next symbols at every position.
Exit codes: 0 ok, 1 failure (empty split), 2 usage.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Iterator, NamedTuple

import numpy as np

from lm.corpus import open_snapshot
from lm.errors import DataError, UsageError, run_cli

UNSEEN = "\uffff"  # the one symbol that stands for every character not seen in train
KN, WB = "modified-kneser-ney", "witten-bell"
METHODS = {KN: "character n-gram, interpolated modified Kneser-Ney",
           WB: "character n-gram, Witten-Bell interpolation"}
START_ORDER, WIDEN, MAX_ORDER = 16, 4, 48
MIN_DISCOUNT = 0.01  # keeps gamma(h) > 0, so every character keeps some probability


class Table(NamedTuple):
    """One order's counts as one level of the interpolation uses them. Index -1 (an n-gram or
    history not in train) reads the zero appended to each array."""
    count: np.ndarray     # per k-gram: its count (raw or continuation), then 0
    discount: np.ndarray  # D(0), D(1), D(2), D(3+): what a count of that size gives up
    gamma: np.ndarray     # per history: the mass given to the lower order, times `den`, then 0
    den: np.ndarray       # per history: the normaliser (0: never seen, fall through), then 0

    def apply(self, hist: np.ndarray, grams: np.ndarray, lower: np.ndarray) -> np.ndarray:
        """P(x | h) at every position from the history ids, k-gram ids and the lower order's P."""
        den = self.den[hist]
        c = self.count[grams]
        num = c - self.discount[np.minimum(c, 3)] + self.gamma[hist] * lower
        return np.where(den > 0, num / np.maximum(den, 1), lower)


def discounts(counts: np.ndarray) -> np.ndarray:
    """[0, D1, D2, D3+] of modified Kneser-Ney from the count-of-counts of `counts`."""
    n1, n2, n3, n4 = np.bincount(counts, minlength=5)[1:5].astype(float)
    y = n1 / (n1 + 2 * n2) if n1 + 2 * n2 > 0 else 0.5
    d = [1 - 2 * y * n2 / n1 if n1 else y, 2 - 3 * y * n3 / n2 if n2 else y, 3 - 4 * y * n4 / n3 if n3 else y]
    return np.array([0.0] + [min(max(x, MIN_DISCOUNT), j + 1) for j, x in enumerate(d)])


def _padded(a: np.ndarray) -> np.ndarray:
    return np.append(a, np.zeros(1, a.dtype))


def kn_table(counts: np.ndarray, gram_hist: np.ndarray, n_hist: int) -> Table:
    d = discounts(counts)
    gamma = np.bincount(gram_hist, d[np.minimum(counts, 3)], n_hist)
    den = np.bincount(gram_hist, counts, n_hist).astype(np.int64)
    return Table(_padded(counts.astype(np.int64)), d, _padded(gamma), _padded(den))


def wb_table(counts: np.ndarray, gram_hist: np.ndarray, n_hist: int) -> Table:
    types = np.bincount(gram_hist, minlength=n_hist)
    den = np.bincount(gram_hist, counts, n_hist).astype(np.int64) + types
    return Table(_padded(counts.astype(np.int64)), np.zeros(4), _padded(types.astype(float)), _padded(den))


def _histories(ids: np.ndarray, k: int) -> np.ndarray:
    """The id of the k - 1 characters before each position, from the (k-1)-gram ids (-1: none)."""
    if k == 1:
        return np.zeros(len(ids), np.int64)  # the empty history, there at every position
    return np.concatenate([np.full(1, -1, np.int64), ids[:-1]])


def _candidates(prev: np.ndarray, chars: np.ndarray, k: int, base: int) -> tuple[np.ndarray, np.ndarray]:
    """Each position's k-gram as one key, (id of its last k - 1 characters) * base + its first
    character, and where that key exists (a full k-gram of known characters)."""
    m, start = len(chars), min(k - 1, len(chars))
    p, c = prev[start:], chars[:max(0, m - k + 1)]
    keys, valid = np.full(m, -1, np.int64), np.zeros(m, bool)
    keys[start:] = p * base + c
    valid[start:] = (p >= 0) & (c >= 0)
    return keys, valid


def check_options(max_order: int, method: str) -> None:
    if max_order < 1:
        raise UsageError(f"--max-order must be at least 1, not {max_order}")
    if method not in METHODS:
        raise UsageError(f"--method must be one of {', '.join(METHODS)}, not {method!r}")


class Ngram:
    """Interpolated n-gram of orders 1..`max_order` (`method`: KN or WB) over integer symbols
    0..`base` - 1 (-1: a symbol outside them, which only order 0 knows); order 0 is uniform over
    `uniform` symbols."""

    def __init__(self, symbols: np.ndarray, base: int, uniform: int, max_order: int = 8, method: str = KN):
        check_options(max_order, method)
        if not len(symbols):
            raise DataError("no train text for the n-gram model")
        self.method, self.base, self.uniform = method, base, uniform
        self._text = np.asarray(symbols, np.int64)
        self._ids = np.zeros(len(symbols), np.int64)  # the ids of the top order's grams in train
        self._top_hist = (np.zeros(0, np.int64), 1)  # the top order's gram -> history, history count
        self._keys: list[np.ndarray] = []   # per order: its k-grams' keys, sorted (id = index)
        self._raw: list[Table] = []         # per order: raw counts (every order of Witten-Bell)
        self._cont: list[Table] = []        # per order below the top: continuation counts (KN)
        self.max_order = 0
        self.extend(max_order)

    def encode(self, text: Any) -> np.ndarray:
        """Symbols as the counts index them: here the ids themselves."""
        return np.asarray(text, np.int64)

    def extend(self, max_order: int) -> None:
        """Count orders up to `max_order` (the lower ones are kept)."""
        while self.max_order < max_order:
            self._add_order()

    def _add_order(self) -> None:
        k, base = self.max_order + 1, self.base
        n_hist = len(self._keys[-1]) if self._keys else 1
        hist = _histories(self._ids, k)
        keys, valid = _candidates(self._ids, self._text, k, base)
        uniq, inv, counts = np.unique(keys[valid], return_inverse=True, return_counts=True)
        gram_hist = np.zeros(len(uniq), np.int64)
        gram_hist[inv] = hist[valid]
        if self.method == KN and k > 1:
            # the continuation count of a (k-1)-gram: the distinct k-grams that extend it leftwards
            cont = np.bincount(uniq // base, minlength=len(self._keys[-1]))
            self._cont.append(kn_table(cont, *self._top_hist))
        self._raw.append((kn_table if self.method == KN else wb_table)(counts, gram_hist, n_hist))
        self._keys.append(uniq)
        self._ids = np.full(len(self._text), -1, np.int64)
        self._ids[valid] = inv
        self._top_hist = (gram_hist, n_hist)
        self.max_order = k

    def _find(self, k: int, keys: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """The train ids of k-gram `keys` (-1: not in train, or not `valid`)."""
        known = self._keys[k - 1]
        if not len(known):  # an order longer than the train text
            return np.full(keys.shape, -1, np.int64)
        pos = np.searchsorted(known, keys).clip(max=len(known) - 1)
        return np.where(valid & (known[pos] == keys), pos, -1)

    def _lookup(self, k: int, prev: np.ndarray, chars: np.ndarray) -> np.ndarray:
        """The train ids of the k-grams ending at each position of `chars` (-1: not in train)."""
        return self._find(k, *_candidates(prev, chars, k, self.base))

    def _lower(self, k: int) -> Table:
        """The table order k contributes as the lower order of k + 1."""
        return (self._cont if self.method == KN else self._raw)[k - 1]

    def _orders(self, chars: np.ndarray, tops: set[int]) -> Iterator[tuple[int, np.ndarray]]:
        """(K, P(each character | its history) under the model of order K) for K in `tops`, in
        one pass: the lower levels (continuation counts for KN) are shared by every K."""
        m, top = len(chars), max(tops)
        lower = np.full(m, 1.0 / self.uniform)
        ids = np.zeros(m, np.int64)
        first = np.zeros(min(m, top))  # first[i]: P at position i under order i + 1, its full history
        for k in range(1, top + 1):
            hist = _histories(ids, k)
            ids = self._lookup(k, ids, chars)
            raw = self._raw[k - 1]
            if k <= m:
                first[k - 1] = raw.apply(hist[k - 1:k], ids[k - 1:k], lower[k - 1:k])[0]
            if k in tops:
                p = raw.apply(hist, ids, lower)
                p[:k - 1] = first[:k - 1]  # a short history: the highest order it allows
                yield k, p
            if k < top:
                lower = self._lower(k).apply(hist, ids, lower)

    def log_probs(self, symbols: Any, order: int) -> np.ndarray:
        """ln P(each symbol | the ones before it) under the model of `order`."""
        (_, p), = self._orders(self.encode(symbols), {order})
        return np.log(p)

    def bits_per_char(self, text: Any) -> list[float]:
        """Bits per symbol of `text` (per character for `CharNgram`) at every order 1..max_order
        (index 0 is order 1)."""
        if not len(text):
            raise DataError("no text to score")
        chars = self.encode(text)
        return [float(-np.log2(p).sum() / len(text)) for _, p in self._orders(chars, set(range(1, self.max_order + 1)))]

    def bits_per_char_at(self, text: Any, order: int) -> float:
        """Bits per symbol of `text` under the model of `order` alone."""
        if not len(text):
            raise DataError("no text to score")
        if not 1 <= order <= self.max_order:
            raise UsageError(f"order {order} is outside 1..{self.max_order}")
        (_, p), = self._orders(self.encode(text), {order})
        return float(-np.log2(p).sum() / len(text))

    def next_probs_of(self, rows: np.ndarray, cands: np.ndarray, order: int) -> np.ndarray:
        """[R, T, C] P(cands[r, t, c] follows rows[r, :t + 1]) under the model of `order`, each
        row its own text (so a history shorter than order - 1: the highest order it allows, as
        in `_orders`). One vectorised pass: the candidate's k-gram is its (k-1)-gram extended
        leftwards by the history's symbol k - 1 back, the history's id the observed (k-1)-gram."""
        seq, c = self.encode(rows), self.encode(cands)
        t_len = seq.shape[1]
        pos = np.broadcast_to(np.arange(t_len), seq.shape)
        lower = np.full(c.shape, 1.0 / self.uniform)
        out = np.empty(c.shape)
        obs = np.zeros(seq.shape, np.int64)   # id of the observed (k-1)-gram ending at t
        for k in range(1, order + 1):
            if k == 1:  # the candidate's k-gram id (below: from its (k-1)-gram's)
                gram = self._find(1, c, c >= 0)
            else:
                back = np.full(seq.shape, -1, np.int64)  # the history's symbol k - 1 back from the target
                back[:, k - 2:] = seq[:, :t_len - k + 2]
                gram = self._find(k, gram * self.base + back[..., None], (gram >= 0) & (back >= 0)[..., None])
            hist = obs[..., None]
            p = self._raw[k - 1].apply(hist, gram, lower)
            at = (pos + 2 == k) | ((k == order) & (pos + 2 >= k))
            out[at] = p[at]
            if k < order:
                lower = self._lower(k).apply(hist, gram, lower)
                first = np.full(seq.shape, -1, np.int64)  # the observed k-gram's first symbol
                first[:, k - 1:] = seq[:, :t_len - k + 1]
                obs = self._find(k, obs * self.base + first, (obs >= 0) & (first >= 0))
        return out


class CharNgram(Ngram):
    """Interpolated character n-gram: the symbols are the train alphabet's characters, plus
    UNSEEN at order 0."""

    def __init__(self, text: str, max_order: int = 8, method: str = KN):
        if not text:  # before the alphabet is read from it; the options: `Ngram`
            raise DataError("no train text for the n-gram model")
        self.vocab = sorted(set(text) | {UNSEEN})
        self._alphabet = np.array(sorted(ord(c) for c in set(text)), np.int64)
        self._unseen = int(np.searchsorted(self._alphabet, ord(UNSEEN))) if UNSEEN in text else -1
        super().__init__(self.encode(text), len(self._alphabet), len(self.vocab), max_order, method)

    def encode(self, text: Any) -> np.ndarray:
        """The index of each character in the train alphabet; a character not in it: UNSEEN's."""
        cp = np.frombuffer(text.encode("utf-32-le"), np.uint32).astype(np.int64)
        idx = np.searchsorted(self._alphabet, cp).clip(max=len(self._alphabet) - 1)
        return np.where(self._alphabet[idx] == cp, idx, self._unseen)

    def probs(self, history: str, char: str) -> list[float]:
        """P(char | the last k - 1 characters of history) for k = 1..max_order (shorter history:
        the highest order it allows, repeated)."""
        chars = self.encode(history + char)
        return [float(p[-1]) for _, p in self._orders(chars, set(range(1, self.max_order + 1)))]

    def next_probs(self, history: str, order: int) -> tuple[str, np.ndarray]:
        """(the train characters, P(each | history)) under the model of `order` (a shorter
        history: the highest order it allows). UNSEEN is left out: it stands for characters the
        model cannot write, so the probabilities sum to a little under 1."""
        order = min(order, len(history) + 1)
        h = self.encode(history[len(history) - order + 1:] if order > 1 else "")
        cand = np.array([i for i in range(len(self._alphabet)) if i != self._unseen], np.int64)
        # one pass over blocks "h x" for every candidate x: each x is read after exactly h
        chars = np.concatenate([np.append(h, x) for x in cand])
        (_, p), = self._orders(chars, {order})
        return "".join(chr(self._alphabet[i]) for i in cand), p[order - 1::order]

    def sample(self, prompt: str, n_chars: int, order: int, temperature: float = 1.0, seed: int = 0) -> str:
        """`n_chars` characters after `prompt`, each drawn from the model of `order` at
        `temperature` (seeded: the same call writes the same text)."""
        rng, out = np.random.default_rng(seed), prompt
        for _ in range(n_chars):
            chars, p = self.next_probs(out, order)
            logits = np.log(p) / temperature
            q = np.exp(logits - logits.max())
            out += chars[rng.choice(len(chars), p=q / q.sum())]
        return out[len(prompt):]



def dev_curve(model: Ngram, dev: Any, cap: int = MAX_ORDER) -> list[float]:
    """Dev bits per character at orders 1..N, N widened (the model counts more orders) while the
    top order is best, so the choice is not cut off by the range; its argmin + 1 is the order."""
    by_order = model.bits_per_char(dev)
    while int(np.argmin(by_order)) + 1 == model.max_order < cap:
        model.extend(min(cap, model.max_order + WIDEN))
        by_order = model.bits_per_char(dev)
    return by_order


def fit(train: str, dev: str, test: str, max_order: int = START_ORDER, method: str = KN,
        cap: int = MAX_ORDER) -> dict[str, Any]:
    """Count train, choose the order on dev (`dev_curve`), then score test once at that order."""
    model = CharNgram(train, max_order, method)
    dev_bpc = dev_curve(model, dev, cap)
    order = int(np.argmin(dev_bpc)) + 1
    return {"model": METHODS[method], "method": method, "order": order,
            "dev_bits_per_char": dev_bpc[order - 1], "test_bits_per_char": model.bits_per_char_at(test, order),
            "dev_bits_per_char_by_order": dev_bpc,  # unrounded: its argmin is the order (rounding ties)
            "train_chars": len(train)}


def anchor(corpus: str, max_order: int = START_ORDER, method: str = KN) -> dict[str, Any]:
    """The n-gram of a snapshot: order chosen on dev, then dev and test bits per character."""
    check_options(max_order, method)
    snap = open_snapshot(corpus)
    train, dev, test = (snap.text(s) for s in ("train", "dev", "test"))
    if not dev or not test:
        raise DataError(f"{snap.root}: the n-gram anchor needs non-empty dev and test splits")
    return fit(train, dev, test, max_order, method) | {"corpus": {"name": snap.name, "version": snap.version}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lm.ngram", description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", required=True, help="OUT/NAME (follows LATEST) or a version folder")
    p.add_argument("--method", choices=list(METHODS), default=KN, help=f"the smoothing ({KN})")
    p.add_argument("--max-order", type=int, default=START_ORDER,
                   help=f"orders 1..N are tried on dev, N widened by {WIDEN} while it is best, "
                        f"up to {MAX_ORDER} ({START_ORDER})")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    r = anchor(args.corpus, args.max_order, args.method)
    print(json.dumps(r) if args.json else
          f"{r['corpus']['name']}: {args.method} order {r['order']} (chosen on dev), "
          f"dev {r['dev_bits_per_char']:.4f}, test {r['test_bits_per_char']:.4f} bits/char")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
