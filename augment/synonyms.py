"""Synonym replacement: a fraction of content words swapped for thesaurus synonyms.

Case and punctuation are kept (only word spans change). Content words are words of at least
`min_chars` letters that are not stop words. The stop list is the union of NLTK's list for the
language (when its data is installed), the corpus's most frequent words (the pipeline passes
them in) and the words an Apertium analyser of the language reads as function words
(`augment.closed_class`: a rare relative pronoun is still a function word).
"""
from __future__ import annotations

import random
from typing import Iterable, Sequence

from augment.base import Augmenter, check_number, rngs
from augment.closed_class import function_words
from augment.thesaurus import Thesaurus, make_thesaurus
from augment.words import match_case, replace_spans, word_spans

NLTK_STOPWORD_NAMES = {"en": "english", "es": "spanish", "pt": "portuguese", "ca": "catalan", "fr": "french",
                       "de": "german", "it": "italian", "nl": "dutch", "da": "danish", "nb": "norwegian",
                       "no": "norwegian", "sv": "swedish", "fi": "finnish", "eu": "basque", "ru": "russian"}


def nltk_stopwords(language: str) -> set[str] | None:
    """NLTK's stop words for `language`, or None when its data is not installed."""
    import nltk

    name = NLTK_STOPWORD_NAMES.get(language)
    if name is None:
        return None
    try:
        nltk.data.find(f"corpora/stopwords/{name}")
    except LookupError:
        return None
    from nltk.corpus import stopwords
    return set(stopwords.words(name))


def frequent_words(texts: Iterable[str], top: int = 100) -> list[str]:
    """The corpus's most frequent words, the stop-word list of last resort (ties broken by word)."""
    from collections import Counter

    counts = Counter(text[s:e].lower() for text in texts for s, e in word_spans(text))
    return [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top]]


class SynonymAugmenter(Augmenter):
    name = "synonyms"

    def __init__(self, language: str, backend: str = "wordnet", rate: float = 0.15, variants: int = 1,
                 min_chars: int = 3, stopwords: Iterable[str] | None = None,
                 thesaurus: Thesaurus | None = None):
        super().__init__(variants=variants, backend=backend, rate=rate, min_chars=min_chars)
        check_number("rate", rate, 0.0, 1.0)
        if not 0 < rate:
            raise ValueError(f"rate: must be in (0, 1] (got {rate})")
        check_number("min_chars", min_chars, 1, 1000, integer=True)
        self.language, self.backend, self.rate, self.min_chars = language, backend, rate, min_chars
        self.thesaurus = thesaurus
        self.stopwords = set(stopwords) if stopwords is not None else None
        self._analysed: set[str] = set()  # words already put to the analyser

    def setup(self) -> None:
        if self.thesaurus is None:
            self.thesaurus = make_thesaurus(self.backend, self.language)
        if self.stopwords is None:
            self.stopwords = nltk_stopwords(self.language) or set()

    def set_stopwords(self, words: Iterable[str]) -> None:
        """The corpus's frequent words, added to the stop list."""
        if self.stopwords is None:
            self.stopwords = nltk_stopwords(self.language) or set()
        self.stopwords |= {w.lower() for w in words}

    def add_function_words(self, texts: Sequence[str]) -> None:
        """Put the words of `texts` not seen before to the analyser; function words join the stop list."""
        new = {t[s:e].lower() for t in texts for s, e in word_spans(t)} - self._analysed
        if new:
            self._analysed |= new
            self.stopwords |= function_words(self.language, new)

    def eligible(self, text: str) -> list[tuple[int, int]]:
        """Spans of content words: long enough, alphabetic, not stop words."""
        out = []
        for start, end in word_spans(text):
            word = text[start:end]
            if len(word) >= self.min_chars and word.isalpha() and word.lower() not in self.stopwords:
                out.append((start, end))
        return out

    def replace(self, text: str, rng: random.Random) -> str | None:
        """Replace round(rate * words) content words (at least one); None when none has a synonym.

        Words are visited in a random order and looked up only until enough are found, so a
        long text costs a few thesaurus look-ups, not one per word."""
        spans = self.eligible(text)
        rng.shuffle(spans)
        k = max(1, round(self.rate * len(word_spans(text))))
        repl = {}
        for start, end in spans:
            word = text[start:end]
            syns = self.thesaurus.synonyms(word.lower())
            if syns:
                repl[(start, end)] = match_case(word, rng.choice(syns))
                if len(repl) == k:
                    break
        return replace_spans(text, repl) if repl else None

    def augment_batch(self, texts: Sequence[str], seeds: int | Sequence[int]) -> list[list[str]]:
        if self.thesaurus is None:
            self.setup()
        self.add_function_words(texts)
        out = []
        for text, rng in zip(texts, rngs(seeds, len(texts))):
            variants = [self.replace(text, rng) for _ in range(self.variants)]
            out.append([v for v in variants if v is not None])
        return out
