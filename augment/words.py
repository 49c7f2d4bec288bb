"""Word-level helpers shared by augmenters: tokenising with separators kept, matching case."""
from __future__ import annotations

import re

WORD = re.compile(r"\w+(?:[-'’]\w+)*", re.UNICODE)


def word_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of every word; everything between words (spaces, punctuation) stays put."""
    return [m.span() for m in WORD.finditer(text)]


def match_case(template: str, word: str) -> str:
    """`word` in the case pattern of `template`: UPPER, Capitalised or as it is."""
    if len(template) > 1 and template.isupper():
        return word.upper()
    if template[:1].isupper():
        return word[:1].upper() + word[1:]
    return word


def replace_spans(text: str, replacements: dict[tuple[int, int], str]) -> str:
    out, last = [], 0
    for (start, end), new in sorted(replacements.items()):
        out.append(text[last:start])
        out.append(new)
        last = end
    out.append(text[last:])
    return "".join(out)
