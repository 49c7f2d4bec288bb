"""Quality filters with spec thresholds: length, symbol and digit ratios, Gopher repetition.

`quality_reason` is a pure function (text, FilterSpec) -> reason or None, so the same rules run
inside the Beam DoFn, in tests and in benchmarks. The repetition rules follow Gopher (Rae et al.
2021, table A1) as datatrove implements them: the share of characters covered by the most
frequent word 2-, 3-, 4-gram, and by duplicated word 5- to 10-grams.
"""
from __future__ import annotations

import functools
import unicodedata
from collections import Counter
from typing import Any, Callable, Iterator

import apache_beam as beam

from pipelines.records import reject, reject_record
from pipelines.spec import FilterSpec


def top_ngram_chars(words: list[str], n: int) -> int:
    """Characters covered by the most frequent n-gram, counting all its occurrences (0 if unique)."""
    grams = Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
    if not grams:
        return 0
    gram, count = grams.most_common(1)[0]
    return sum(map(len, gram)) * count if count > 1 else 0


def duplicate_ngram_chars(words: list[str], n: int) -> int:
    """Characters in n-grams that repeat an earlier one (non-overlapping), as in Gopher."""
    seen: set[tuple[str, ...]] = set()
    repeated, i = 0, 0
    while i <= len(words) - n:
        gram = tuple(words[i:i + n])
        if gram in seen:
            repeated += sum(map(len, gram))
            i += n
        else:
            seen.add(gram)
            i += 1
    return repeated


@functools.lru_cache(maxsize=1 << 16)
def _symbol_or_control(ch: str) -> bool:
    return unicodedata.category(ch)[0] in "SC"


def quality_reason(text: str, f: FilterSpec) -> str | None:
    """The first rule `text` breaks, or None when it passes."""
    if not f.enabled:
        return None
    n = len(text)
    if f.min_chars and n < f.min_chars:
        return "too_short"
    if f.max_chars and n > f.max_chars:
        return "too_long"
    words = text.split()
    if f.min_words and len(words) < f.min_words:
        return "too_few_words"
    symbols = digits = 0
    for ch, k in Counter(text).items():  # each distinct character once: a text has few
        if ch.isdigit():
            digits += k
        elif _symbol_or_control(ch):
            symbols += k
    if f.max_symbol_ratio and symbols / n > f.max_symbol_ratio:
        return "symbol_ratio"
    if f.max_digit_ratio and digits / n > f.max_digit_ratio:
        return "digit_ratio"
    # A word counts when it has a letter; most words are all letters, which one call tells.
    if f.min_alpha_ratio and sum(w.isalpha() or any(map(str.isalpha, w)) for w in words) / len(words) < f.min_alpha_ratio:
        return "alpha_ratio"
    if f.repetition_min_words and len(words) >= f.repetition_min_words:
        chars = sum(map(len, words))
        return (_repetition(words, chars, f.top_ngram_sizes, f.top_ngram_fraction, top_ngram_chars, "top")
                or _repetition(words, chars, f.dup_ngram_sizes, f.dup_ngram_fraction, duplicate_ngram_chars, "dup"))
    return None


def _repetition(words: list[str], chars: int, sizes: tuple[int, ...], limits: tuple[float, ...],
                measure: Callable[[list[str], int], int], label: str) -> str | None:
    """`{label}_{n}gram` for the first n whose repeated characters (`measure`) pass its limit."""
    for k, limit in zip(sizes, limits):
        repeated = measure(words, k)
        if limit and repeated / chars > limit:
            return f"{label}_{k}gram"
        if not repeated:
            break  # no repeated n-gram means no repeated longer one: the longer checks are all 0
    return None


class QualityFilter(beam.DoFn):
    def __init__(self, filters: FilterSpec):
        self.filters = filters

    def process(self, record: dict[str, Any]) -> Iterator[Any]:
        reason = quality_reason(record["text"], self.filters)
        if reason is None:
            yield record
        else:
            yield reject(reject_record(record, "quality", reason))
