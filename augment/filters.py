"""Constraints every variant must pass, whatever augmenter made it; each drop has a reason.

As in TextAttack's transformation-plus-constraints split, augmenters only propose and these
rules decide: identical to its parent, length ratio out of bounds, characters from a script
the parent does not use, leftover MT markers, too many edits.
"""
from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from functools import lru_cache

MARKERS = "*#@"  # Apertium's unknown-word, generation-error and untranslated-lemma marks


def new_markers(parent: str, variant: str) -> str:
    """The marker characters `variant` holds more often than `parent` (anywhere: "quedar#" too)."""
    return "".join(c for c in MARKERS if variant.count(c) > parent.count(c))


def strip_new_markers(parent: str, variant: str) -> str:
    """`variant` without the marker characters its parent lacks, spaces tidied line by line."""
    extra = new_markers(parent, variant)
    if not extra:
        return variant
    variant = variant.translate({ord(c): None for c in extra})
    return "\n".join(" ".join(line.split()) for line in variant.split("\n"))


@lru_cache(maxsize=4096)
def script_of(ch: str) -> str | None:
    """The script of a letter from its Unicode name (LATIN, CYRILLIC, ARABIC, ...); None for others."""
    if not ch.isalpha():
        return None
    try:
        return unicodedata.name(ch).split(" ")[0]
    except ValueError:
        return "UNKNOWN"


def scripts(text: str) -> set[str]:
    return {s for s in map(script_of, set(text)) if s}


def word_edit_ratio(a: str, b: str) -> float:
    """Word-level Levenshtein distance over the longer length (0 same, 1 all different)."""
    x, y = a.split(), b.split()
    if not x and not y:
        return 0.0
    if len(x) * len(y) > 4_000_000:  # very long lines: bag-of-words distance instead of O(n*m)
        from collections import Counter
        common = sum((Counter(x) & Counter(y)).values())
        return 1 - common / max(len(x), len(y))
    prev = list(range(len(y) + 1))
    for i, wx in enumerate(x, 1):
        cur = [i] + [0] * len(y)
        for j, wy in enumerate(y, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (wx != wy))
        prev = cur
    return prev[-1] / max(len(x), len(y))


@dataclass(frozen=True)
class VariantFilter:
    min_length_ratio: float = 0.5
    max_length_ratio: float = 2.0
    max_edit_ratio: float = 0.9
    check_scripts: bool = True
    check_markers: bool = True

    def reason(self, parent: str, variant: str) -> str | None:
        """Why `variant` is dropped, or None to keep it."""
        if not variant.strip():
            return "empty"
        if variant == parent:
            return "identical"
        ratio = len(variant) / max(1, len(parent))
        if not self.min_length_ratio <= ratio <= self.max_length_ratio:
            return "length_ratio"
        if self.check_scripts and not scripts(variant) <= scripts(parent):
            return "foreign_script"
        if self.check_markers and new_markers(parent, variant):
            return "mt_marker"
        if self.max_edit_ratio < 1.0 and word_edit_ratio(parent, variant) > self.max_edit_ratio:
            return "too_many_edits"
        return None

    @classmethod
    def from_table(cls, table: dict) -> "VariantFilter":
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(table) - known)
        if unknown:
            raise ValueError(f"augment.filters.{unknown[0]}: unknown key")
        for key, value in table.items():
            where = f"augment.filters.{key}"
            if isinstance(getattr(cls, key), bool):
                if not isinstance(value, bool):
                    raise ValueError(f"{where}: must be true or false (got {value!r})")
            elif isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 100:
                raise ValueError(f"{where}: must be a number in [0, 100] (got {value!r})")  # also NaN
        f = cls(**table)
        if f.min_length_ratio > f.max_length_ratio or f.max_edit_ratio > 1:
            raise ValueError(f"augment.filters: need min_length_ratio <= max_length_ratio and max_edit_ratio <= 1 "
                             f"(got {f.min_length_ratio}, {f.max_length_ratio}, {f.max_edit_ratio})")
        return f
