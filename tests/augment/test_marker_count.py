"""Machine-translation markers (`*`, `#`, `@`) are counted, not just looked for: a variant holding a
marker more often than its parent is caught by the filter and by back-translation's clean-up, even
where the parent has that marker too, while a variant with no more markers than its parent passes."""
from __future__ import annotations

import pytest

from augment.backtranslate import BackTranslateAugmenter
from augment.filters import VariantFilter, new_markers, strip_new_markers
from tests.helpers import gl_lines


def line_with(split: str, needle: str) -> str:
    (line,) = [t for t in gl_lines(split) if needle in t]
    return line


def parents_and_variants() -> list[tuple[str, str, str]]:
    """(marker, a real gl-ctg parent holding it once, the parent with one more, as Apertium marks
    a word: `*` unknown, `#` generation error, `@` untranslated lemma)."""
    star = line_with("train", "encóntranse os seguintes: * Identificación")  # one `*` of its own
    at = line_with("train", "obsesionad@s")                                # one `@` of its own
    # no gl-ctg line holds a `#`: a real line with one word made a hashtag
    hashtag = line_with("train", "calidade de augas nas augas continentais").replace("de Galicia", "de #Galicia")
    out = [("*", star, star.replace("xenes relacionados", "*xenes relacionados")),
           ("@", at, at.replace("intensificar", "@intensificar")),
           ("#", hashtag, hashtag.replace("Resulta difícil", "Resultar# difícil"))]
    for marker, parent, variant in out:
        assert parent.count(marker) == 1 and variant.count(marker) == 2, (marker, parent, variant)
    return out


@pytest.mark.parametrize("marker,parent,variant", parents_and_variants(), ids=["star", "at", "hash"])
def test_one_more_marker_than_the_parent_is_caught(marker: str, parent: str, variant: str) -> None:
    assert new_markers(parent, variant) == marker
    assert VariantFilter().reason(parent, variant) == "mt_marker"
    stripped = strip_new_markers(parent, variant)
    assert stripped.count(marker) <= parent.count(marker) and VariantFilter().reason(parent, stripped) != "mt_marker"
    # back-translation's own clean-up: rejected outright, or the new marker stripped
    assert BackTranslateAugmenter("gl", pivot="pt", markers="reject").clean(parent, variant) == ""
    cleaned = BackTranslateAugmenter("gl", pivot="pt", markers="strip").clean(parent, variant)
    assert cleaned and not new_markers(parent, cleaned)


def test_no_more_markers_than_the_parent_passes() -> None:
    """The parent's own markers, however many, are not MT leftovers: a variant that keeps them
    (or drops one) and changes a word is kept."""
    parent = line_with("test", "Cartografía do Coñecemento: * mapas de información")
    assert parent.count("*") == 3
    f = VariantFilter()
    same = parent.replace("verdadeira eficacia", "auténtica eficacia")
    fewer = parent.replace(", * mapas de competencias", ", mapas de competencias")
    for variant in (same, fewer):
        assert new_markers(parent, variant) == "" and f.reason(parent, variant) is None
        assert strip_new_markers(parent, variant) == variant
        assert BackTranslateAugmenter("gl", pivot="pt", markers="reject").clean(parent, variant) == variant
    # one more `*`, as many as the parent's own plus one: caught
    more = same.replace("ferramentas", "*ferramentas")
    assert more.count("*") == 4 and new_markers(parent, more) == "*" and f.reason(parent, more) == "mt_marker"
    # two markers at once: each one counted apart
    both = more.replace("Fálase", "Falar# se")
    assert new_markers(parent, both) == "*#" and f.reason(parent, both) == "mt_marker"
