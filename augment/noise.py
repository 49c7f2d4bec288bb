"""Noising: EDA edits (random swap, deletion, synonym insertion), keyboard typos with a layout
per language, diacritic stripping (common in real low-resource text) and span drops.

`ops` run in the order given, each at its own rate (`rates`, falling back to `rate`):
swap and insert make round(rate * words) edits (at least one); a swap exchanges a word with one
at most `swap_window` places away (1, the default: neighbours, the local reorderings real text
has; 0: anywhere in the line, EDA's random swap, which as a language-model target teaches word
salad); delete drops each word with
probability rate (never all); typo changes round(rate * words) letters to a neighbouring key;
strip_diacritics strips each word's accents with probability rate; span_drop removes one run of
round(rate * words) words.
"""
from __future__ import annotations

import random
import unicodedata
from typing import Sequence

from augment.base import Augmenter, check_number, rngs
from augment.thesaurus import Thesaurus, make_thesaurus

OPS = ("swap", "delete", "insert", "typo", "strip_diacritics", "span_drop")
# Letter rows of common layouts; neighbours are the keys left, right, above and below.
LAYOUTS = {
    "qwerty": ("qwertyuiop", "asdfghjkl", "zxcvbnm"),
    "qwerty-es": ("qwertyuiop", "asdfghjklñ", "zxcvbnm"),
    "qwerty-pt": ("qwertyuiop", "asdfghjklç", "zxcvbnm"),
    "azerty": ("azertyuiop", "qsdfghjklm", "wxcvbn"),
    "qwertz": ("qwertzuiopü", "asdfghjklöä", "yxcvbnm"),
    "nordic": ("qwertyuiopå", "asdfghjklæø", "zxcvbnm"),
}
LANGUAGE_LAYOUT = {"gl": "qwerty-es", "es": "qwerty-es", "ca": "qwerty-es", "ast": "qwerty-es", "eu": "qwerty-es",
                   "pt": "qwerty-pt", "fr": "azerty", "de": "qwertz", "fo": "nordic", "is": "nordic",
                   "da": "nordic", "no": "nordic", "nb": "nordic", "nn": "nordic", "sv": "nordic"}


def neighbours(layout: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for r, row in enumerate(layout):
        for c, ch in enumerate(row):
            near = [row[c - 1]] if c > 0 else []
            near += [row[c + 1]] if c + 1 < len(row) else []
            for other in (r - 1, r + 1):
                if 0 <= other < len(layout):
                    near += [layout[other][k] for k in (c - 1, c) if 0 <= k < len(layout[other])]
            out[ch] = "".join(near)
    return out


def strip_accents(word: str) -> str:
    return unicodedata.normalize("NFC", "".join(ch for ch in unicodedata.normalize("NFD", word)
                                                if unicodedata.category(ch) != "Mn"))


class NoiseAugmenter(Augmenter):
    name = "noise"

    def __init__(self, language: str = "en", ops: Sequence[str] = ("swap", "delete", "typo"), rate: float = 0.1,
                 rates: dict[str, float] | None = None, variants: int = 1, layout: str | None = None,
                 backend: str | None = None, thesaurus: Thesaurus | None = None, swap_window: int = 1):
        unknown = [op for op in ops if op not in OPS]
        if unknown:
            raise ValueError(f"unknown noise op {unknown[0]!r} (choose from {', '.join(OPS)})")
        layout = layout or LANGUAGE_LAYOUT.get(language, "qwerty")
        if layout not in LAYOUTS:
            raise ValueError(f"unknown keyboard layout {layout!r} (choose from {', '.join(LAYOUTS)})")
        if "insert" in ops and backend is None and thesaurus is None:
            raise ValueError("noise op 'insert' needs a thesaurus: set backend = \"wordnet\" or \"mythes\"")
        if isinstance(swap_window, bool) or not isinstance(swap_window, int) or swap_window < 0:
            raise ValueError(f"swap_window must be a whole number >= 0 (got {swap_window!r})")
        check_number("rate", rate, 0.0, 1.0)
        if not isinstance(rates, (dict, type(None))):
            raise ValueError(f"rates must be a table of op = rate (got {rates!r})")
        for op, value in (rates or {}).items():
            if op not in ops:  # a rate for an op that does not run is a typo
                raise ValueError(f"rates.{op}: not one of this step's ops ({', '.join(ops)})")
            check_number(f"rates.{op}", value, 0.0, 1.0)
        self.rates = {op: float((rates or {}).get(op, rate)) for op in ops}
        super().__init__(variants=variants, ops=list(ops), rates=self.rates, layout=layout, backend=backend,
                         swap_window=swap_window)
        self.swap_window = swap_window
        self.language, self.ops, self.backend, self.thesaurus = language, list(ops), backend, thesaurus
        self.keys = neighbours(LAYOUTS[layout])

    def setup(self) -> None:
        if "insert" in self.ops and self.thesaurus is None:
            self.thesaurus = make_thesaurus(self.backend, self.language)

    def _apply(self, op: str, words: list[str], rng: random.Random) -> list[str]:
        rate, n = self.rates[op], len(words)
        edits = max(1, round(rate * n))
        if op == "swap" and n >= 2:
            for _ in range(edits):
                if self.swap_window:
                    i = rng.randrange(n - 1)
                    j = min(n - 1, i + rng.randint(1, self.swap_window))
                else:
                    i, j = rng.sample(range(n), 2)
                words[i], words[j] = words[j], words[i]
        elif op == "delete" and n >= 2:
            kept = [w for w in words if rng.random() >= rate]
            words = kept or [rng.choice(words)]
        elif op == "insert" and n >= 1:
            for _ in range(edits):
                word = rng.choice(words)
                syns = self.thesaurus.synonyms(word.strip(".,;:!?¿¡()\"'").lower())
                if syns:
                    words.insert(rng.randrange(len(words) + 1), rng.choice(syns))
        elif op == "typo":
            spots = [(i, k) for i, w in enumerate(words) for k, ch in enumerate(w) if ch.lower() in self.keys]
            for i, k in rng.sample(spots, min(edits, len(spots))):
                ch = words[i][k]
                new = rng.choice(self.keys[ch.lower()])
                words[i] = words[i][:k] + (new.upper() if ch.isupper() else new) + words[i][k + 1:]
        elif op == "strip_diacritics":
            words = [strip_accents(w) if rng.random() < rate else w for w in words]
        elif op == "span_drop" and n >= 2:
            length = min(n - 1, edits)
            start = rng.randrange(n - length + 1)
            words = words[:start] + words[start + length:]
        return words

    def noise(self, text: str, rng: random.Random) -> str:
        """Each line noised on its own, so verse and dialogue keep their line breaks."""
        lines = []
        for line in text.split("\n"):
            words = line.split()
            for op in self.ops:
                if words:
                    words = self._apply(op, words, rng)
            lines.append(" ".join(words))
        return "\n".join(lines)

    def augment_batch(self, texts: Sequence[str], seeds: int | Sequence[int]) -> list[list[str]]:
        if "insert" in self.ops and self.thesaurus is None:
            self.setup()
        return [[self.noise(t, rng) for _ in range(self.variants)] for t, rng in zip(texts, rngs(seeds, len(texts)))]
