"""The normaliser's shortcut around ftfy gives exactly what ftfy.fix_text gives."""
from __future__ import annotations

import unicodedata

import ftfy
import pytest

from tests.helpers import SHAKESPEARE, gl_lines
from pipelines.normalise import _FTFY, _repaired

# One of each kind of damage ftfy repairs, alone, inside clean non-ASCII text and on a later line.
DAMAGED = [
    "sÃ³", "voilÃ le travail", "itâ€™s", "Ã¡ Ã© Ã­",  # mojibake
    "ﬂubberiﬁc", "ＬＯＵＤ　ＮＯＩＳＥＳ",  # ligatures, wide forms
    "cafe\u0301 ok\u2028más", "una\r\nliña", "nova\u0085liña",  # line breaks
    "fiestas \x80 en\x9f", "rota \ud83d aquí", "\x1b[31mvermello\x1b[0m", "cero\x00 e \ufeffbom",
]


def test_shortcut_gives_what_ftfy_gives_on_real_text() -> None:
    lines = gl_lines("train") + gl_lines("dev") + gl_lines("test")
    lines += SHAKESPEARE.read_text(encoding="utf-8").split("\n\n")
    lines = [x for x in lines if not x.isascii()]  # normalise_text sends only these (and controls) here
    assert len(lines) > 3000
    assert [_repaired(x) for x in lines] == [ftfy.fix_text(x, _FTFY) for x in lines]


@pytest.mark.parametrize("damage", DAMAGED)
def test_shortcut_gives_what_ftfy_gives_on_damage(damage: str) -> None:
    for text in (damage, f"Unha liña limpa, á é ñ. {damage} e máis", f"Primeira liña, ó.\n{damage}\núltima"):
        fixed = ftfy.fix_text(text, _FTFY)
        assert fixed != unicodedata.normalize("NFC", text)  # ftfy does more than NFC here
        assert _repaired(text) == fixed
