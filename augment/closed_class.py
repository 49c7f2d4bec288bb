"""Function words (relatives, prepositions, determiners, pronouns, conjunctions) found by an
Apertium morphological analyser, for languages whose stop-word list a small corpus cannot give.

A few hundred kilobytes rank a relative pronoun such as Galician "cuxa" 1,554th, far below any
frequency cut-off, and a thesaurus offers "pucha" (a cap) for it. The analyser of an installed
Apertium pair (`lt-proc` on its `automorf.bin`, no shell) lists every reading of a word; a word
with any closed-class reading is a function word ("sobre": preposition or noun). Where no pair
analyses the language this finds nothing and the frequency list stays the only guard.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Iterable

from augment.backtranslate import CODES

MODES_DIR = Path("/usr/share/apertium/modes")
CLOSED = {"rel", "pr", "det", "prn", "predet", "preadv", "cnjcoo", "cnjsub", "cnjadv", "vbmod", "vbser", "vbhaver"}
_ANALYSIS = re.compile(r"\^([^/$]*)/([^$]*)\$")
_TAG = re.compile(r"<([^>]+)>")


@lru_cache(maxsize=None)
def analyser(language: str) -> str | None:
    """The `automorf.bin` of an installed Apertium mode translating from `language`, or None."""
    if shutil.which("lt-proc") is None or not MODES_DIR.is_dir():
        return None
    for code in CODES.get(language, (language,)):
        for mode in sorted(MODES_DIR.glob(f"{code}-*.mode")):
            m = re.search(r"lt-proc\s+'?([^'\s]+automorf\.bin)", mode.read_text(encoding="utf-8", errors="replace"))
            if m and Path(m.group(1)).is_file():
                return m.group(1)
    return None


def function_words(language: str, words: Iterable[str], timeout_s: float = 120) -> set[str]:
    """The words of `words` (lower case) that the language's analyser reads as closed-class."""
    path = analyser(language)
    words = sorted({w for w in words if w and "\n" not in w})
    if path is None or not words:
        return set()
    out = subprocess.run(["lt-proc", path], input="\n".join(words) + "\n", capture_output=True, text=True,
                         timeout=timeout_s, check=False).stdout
    found = set()
    for surface, readings in _ANALYSIS.findall(out):
        tags = {t for reading in readings.split("/") for t in _TAG.findall(reading)[:1]}
        if tags & CLOSED:
            found.add(surface.lower())
    return found
