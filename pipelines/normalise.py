"""Repair and normalise text: mojibake, control characters, Unicode NFC, whitespace."""
from __future__ import annotations

import re
import unicodedata
from typing import Any, Iterator

import apache_beam as beam
import ftfy
from ftfy.badness import is_bad
from ftfy.chardata import CONTROL_CHARS, LIGATURES, WIDTH_MAP

from pipelines.records import record_id, reject, reject_record

# Keep typographic quotes and HTML-looking text as they are: they are real text, not damage.
_FTFY = ftfy.TextFixerConfig(uncurl_quotes=False, unescape_html=False, normalization="NFC", explain=False)
_SPACES = re.compile(r"[^\S\n]+")  # any whitespace but the newline
# C0 and C1 control characters (category Cc) except tab and newline.
_CONTROL = {c: None for c in [*range(0x20), *range(0x7F, 0xA0)] if c not in (0x09, 0x0A)}


def _class_of(codes: set[int]) -> str:
    return "".join(re.escape(chr(c)) for c in sorted(codes))


# ASCII without control characters (tab and newline aside) is text ftfy leaves as it is with the
# settings above: mojibake, odd widths, ligatures and NFC all need non-ASCII characters.
_ASCII_CONTROL = re.compile("[" + _class_of({c for c in _CONTROL if c < 0x80}) + "]")
_ANY_CONTROL = re.compile("[" + _class_of(set(_CONTROL)) + "]")


# Every character one of ftfy's fixers (other than fix_encoding) acts on, with the settings above:
# C1 controls (fix_c1_controls, and NEXT LINE for fix_line_breaks), ligatures, wide and narrow
# forms, line and paragraph separators and CR, surrogates, the escape that starts a terminal
# sequence, and the control characters it removes.
_FTFY_ACTS_ON = re.compile("[" + _class_of({*range(0x80, 0xA0), *LIGATURES, *WIDTH_MAP, *CONTROL_CHARS,
                                             0x0D, 0x2028, 0x2029, 0x1B}) + "\ud800-\udfff]")


def _repaired(text: str) -> str:
    """`ftfy.fix_text(text, _FTFY)`, without its cost where it would only apply NFC.

    fix_text fixes each line apart (and each 1M characters of a longer one), each in passes until
    one changes nothing: fix_encoding leaves a line alone that `is_bad` finds no mojibake in, and
    each other fixer one without a character it acts on. A line where none of them acts, before
    or after NFC, comes out as its NFC: most non-ASCII text (accents, curly quotes, dashes).
    tests/pipelines/test_normalise.py checks this against fix_text on real text and on each kind of damage."""
    limit = _FTFY.max_decode_length
    out, pos = [], 0
    while pos < len(text):
        end = text.find("\n", pos) + 1 or len(text)
        end = min(end, pos + limit)
        segment = text[pos:end]
        nfc = unicodedata.normalize("NFC", segment)
        if any(_FTFY_ACTS_ON.search(s) or is_bad(s) for s in {segment, nfc}):
            return ftfy.fix_text(text, _FTFY)
        out.append(nfc)
        pos = end
    return "".join(out)


def normalise_text(text: str) -> str:
    """Repaired, NFC, no control characters, single spaces, no empty lines, stripped."""
    if not text.isascii() or _ASCII_CONTROL.search(text):
        text = _repaired(text)
        if _ANY_CONTROL.search(text):  # a search is much faster than a translate that changes nothing
            text = text.translate(_CONTROL)
    lines = (_SPACES.sub(" ", line).strip() for line in text.split("\n"))
    return unicodedata.normalize("NFC", "\n".join(line for line in lines if line))


class NormaliseText(beam.DoFn):
    """Normalises each record and gives it its id; a record left empty is rejected."""

    def process(self, record: dict[str, Any]) -> Iterator[Any]:
        text = normalise_text(record["text"])
        if not text:
            yield reject(reject_record({**record, "id": None}, "normalise", "empty"))
            return
        yield {**record, "text": text, "id": record_id(text)}
