"""Repair and normalise text: mojibake, control characters, Unicode NFC, whitespace."""
from __future__ import annotations

import re
import unicodedata
from typing import Any, Iterator

import apache_beam as beam
import ftfy

from pipelines.records import record_id, reject, reject_record

# Keep typographic quotes and HTML-looking text as they are: they are real text, not damage.
_FTFY = ftfy.TextFixerConfig(uncurl_quotes=False, unescape_html=False, normalization="NFC", explain=False)
_SPACES = re.compile(r"[^\S\n]+")  # any whitespace but the newline
# C0 and C1 control characters (category Cc) except tab and newline.
_CONTROL = {c: None for c in [*range(0x20), *range(0x7F, 0xA0)] if c not in (0x09, 0x0A)}


# ASCII without control characters (tab and newline aside) is text ftfy leaves as it is with the
# settings above: mojibake, odd widths, ligatures and NFC all need non-ASCII characters.
_ASCII_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_ANY_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # the keys of _CONTROL


def normalise_text(text: str) -> str:
    """Repaired, NFC, no control characters, single spaces, no empty lines, stripped."""
    if not text.isascii() or _ASCII_CONTROL.search(text):
        text = ftfy.fix_text(text, _FTFY)
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
