"""Augmenters and filters on real gl-ctg and Tiny Shakespeare text, with the real backends."""
from __future__ import annotations


import pytest

from augment.backtranslate import BackTranslateAugmenter, installed_modes
from augment.base import AugmenterError, record_seed
from augment.filters import VariantFilter, new_markers, strip_new_markers
from augment.noise import NoiseAugmenter, strip_accents
from augment.registry import parse_augment
from augment.synonyms import SynonymAugmenter, frequent_words
from augment.thesaurus import MyThesThesaurus, WordNetThesaurus, find_mythes
from augment.words import word_spans

from tests.helpers import SHAKESPEARE, gl_lines

STRANGE = ["", "x", "palabra " * 6250, "Isto é 🙂 un emoji 🚀 no medio", "مرحبا بالعالم هذا نص عربي",
           "שלום עולם זה טקסט", "Mixto: Galicia и Россия 中文 ﻿text", "\u200f\u200e", "a\nb\n\nc"]


def seeds_for(texts: list[str], name: str) -> list[int]:
    return [record_seed(str(i), name, 0, 13) for i in range(len(texts))]


@pytest.fixture(scope="module")
def gl() -> list[str]:
    return gl_lines("train", 120)


@pytest.fixture(scope="module")
def shakespeare() -> list[str]:
    paragraphs = SHAKESPEARE.read_text(encoding="utf-8").split("\n\n")
    return [p for p in paragraphs[:200] if p.strip()]


@pytest.fixture(scope="module")
def wordnet() -> WordNetThesaurus:
    return WordNetThesaurus()


@pytest.fixture(scope="module")
def mythes_gl() -> MyThesThesaurus:
    return MyThesThesaurus("gl")


def augmenters(wordnet: WordNetThesaurus, mythes_gl: MyThesThesaurus, stop: list[str]) -> dict:
    return {
        "backtranslate-gl": (BackTranslateAugmenter("gl", pivot=["es", "pt"]), "gl"),
        "synonyms-gl": (SynonymAugmenter("gl", "mythes", rate=0.3, thesaurus=mythes_gl, stopwords=stop), "gl"),
        "synonyms-en": (SynonymAugmenter("en", "wordnet", rate=0.2, thesaurus=wordnet, stopwords=stop), "en"),
        "noise-gl": (NoiseAugmenter("gl", ops=["swap", "delete", "insert", "typo", "strip_diacritics", "span_drop"],
                                    rate=0.1, variants=2, thesaurus=mythes_gl), "gl"),
    }


@pytest.mark.parametrize("name", ["backtranslate-gl", "synonyms-gl", "synonyms-en", "noise-gl"])
def test_each_augmenter_changes_text_and_is_deterministic(name: str, gl, shakespeare, wordnet, mythes_gl) -> None:
    texts = shakespeare[:80] if name.endswith("en") else gl[:80]
    aug, _ = augmenters(wordnet, mythes_gl, frequent_words(texts, 50))[name]
    aug.setup()
    seeds = seeds_for(texts, name)
    first = aug.augment_batch(texts, seeds)
    assert len(first) == len(texts)
    changed = sum(any(v != t for v in vs) for t, vs in zip(texts, first))
    # mythes-gl lists synonyms for few Galician content words once function words are out of reach
    assert changed >= (0.15 if name == "synonyms-gl" else 0.3) * len(texts), (name, changed)
    assert aug.augment_batch(texts, seeds) == first
    if not aug.context_free:
        return  # Apertium: output depends on batch-mates; the pipeline fixes batches by id
    # Batching and order do not matter: each record has its own random stream.
    halves = aug.augment_batch(texts[40:], seeds[40:]) + aug.augment_batch(texts[:40], seeds[:40])
    assert halves == first[40:] + first[:40]


def test_apertium_round_trip_changes_galician_and_leaves_no_markers(gl) -> None:
    assert {"gl-es", "es-gl", "gl-pt", "pt-gl"} <= set(installed_modes())
    aug = BackTranslateAugmenter("gl", pivot=["es", "pt"])
    out = aug.augment_batch(gl, 1)
    for k, pivot in enumerate(["es", "pt"]):
        variants = [vs[k] for vs in out]
        assert sum(v != t for v, t in zip(variants, gl)) >= len(gl) / 2, pivot
        assert aug.variant_params(k)["pivot"] == pivot
    for t, vs in zip(gl, out):
        for v in vs:
            assert not new_markers(t, v), (t, v)
            assert VariantFilter().reason(t, v) in (None, "identical")


def test_no_variant_carries_a_marker_its_parent_lacks() -> None:
    """Apertium marks a failed generation after the word too ("campañas quedar# con servicios",
    from gl-pt-gl on these two gl-ctg sentences): stripped, or the variant rejected, never kept."""
    lines = [t for t in gl_lines("train", 5000)
             if "campañas combinadas con servicios" in t or "transporte combinado con contedores" in t]
    assert len(lines) == 2
    for markers in ("strip", "reject"):
        out = BackTranslateAugmenter("gl", pivot="pt", markers=markers).augment_batch(lines, 1)
        for t, (v,) in zip(lines, out):
            assert not any(c in v and c not in t for c in "*#@"), v
            assert (v == "") if markers == "reject" else (v and "quedar con" in v)
    f = VariantFilter()
    parent = "As campañas combinadas con servizos"
    for bad in ("As campañas quedar# con servizos", "As *campañas con servizos", "As campañas @combinadas con servizos"):
        assert f.reason(parent, bad) == "mt_marker" and strip_new_markers(parent, bad).count("#") == 0
    assert f.reason("Correo: a@b.gal e #etiqueta", "Correo: a@b.gal e #etiqueta nova") is None  # the parent's own


def test_synonyms_never_replace_a_word_from_the_stop_list(gl, mythes_gl) -> None:
    """The stop list: the corpus's frequent words plus the function words Apertium's Galician
    analyser finds ("cuxa", a relative pronoun ranked 1,554th in gl-ctg, is one)."""
    texts = gl_lines("train", 400)
    aug = SynonymAugmenter("gl", "mythes", rate=0.5, thesaurus=mythes_gl)
    aug.set_stopwords(frequent_words(texts, 100))
    out = aug.augment_batch(texts, seeds_for(texts, "synonyms"))
    assert {"cuxa", "sobre", "onde", "porque"} <= aug.stopwords and not {"sistema", "publicación"} & aug.stopwords
    changed = 0
    for text, variants in zip(texts, out):
        for v in variants:
            words, new = [text[s:e].lower() for s, e in word_spans(text)], [v[s:e].lower() for s, e in word_spans(v)]
            kept = set(new)
            gone = [w for w in words if w not in kept]
            assert gone, (text, v)
            assert not set(gone) & aug.stopwords, (set(gone) & aug.stopwords, text, v)
            changed += 1
    assert changed >= 50


def test_apertium_keeps_line_breaks_of_verse(shakespeare) -> None:
    aug = BackTranslateAugmenter("en", pivot="es")
    texts = [t for t in shakespeare if "\n" in t][:20]
    out = aug.augment_batch(texts, 3)
    assert all(v.count("\n") == t.count("\n") for t, (v,) in zip(texts, out))
    assert sum(v != t for t, (v,) in zip(texts, out)) >= 10


def _replacements(parent: str, variant: str) -> list[tuple[str, str]]:
    """Every (word, new text) such that putting the new text in place of that one word of
    `parent` gives `variant`."""
    out = []
    for s, e in word_spans(parent):
        tail = len(parent) - e
        if variant.startswith(parent[:s]) and variant.endswith(parent[e:]) and len(variant) >= s + tail:
            out.append((parent[s:e], variant[s:len(variant) - tail]))
    return out


@pytest.mark.parametrize("lang", ["gl", "en"])
def test_synonyms_are_real_dictionary_entries(lang: str, gl, shakespeare, wordnet, mythes_gl) -> None:
    thesaurus = mythes_gl if lang == "gl" else wordnet
    texts = gl if lang == "gl" else shakespeare[:120]
    # rate 0.001: exactly one replacement per text (fewer than 1,500 words), so the change is one span
    aug = SynonymAugmenter(lang, "mythes" if lang == "gl" else "wordnet", rate=0.001, thesaurus=thesaurus,
                           stopwords=frequent_words(texts, 50))
    checked = 0
    for text, variants in zip(texts, aug.augment_batch(texts, 7)):
        for v in variants:
            assert len(v.split("\n")) == len(text.split("\n"))
            options = _replacements(text, v)
            real = [(old, new) for old, new in options
                    if new.lower() in [syn.lower() for syn in thesaurus.synonyms(old.lower())]]
            assert real, (text, v)
            old, new = real[0]
            if old[0].isupper():
                assert new[0].isupper()
            checked += 1
    assert checked >= 10


def test_noise_operations(gl) -> None:
    text = gl[3]
    words = text.split()
    rng_seed = [5]
    swap = NoiseAugmenter("gl", ops=["swap"], rate=0.1).augment_batch([text], rng_seed)[0][0]
    assert sorted(swap.split()) == sorted(words) and swap != text
    # swaps are local by default: every word stays within one place of where it was (one edit)
    local = NoiseAugmenter("gl", ops=["swap"], rate=0.01)
    far = NoiseAugmenter("gl", ops=["swap"], rate=0.01, swap_window=0)
    long = [t for t in gl if len(t.split()) >= 20]
    moved = {"local": [], "far": []}
    for name, aug in (("local", local), ("far", far)):
        for t, (v,) in zip(long, aug.augment_batch(long, seeds_for(long, name))):
            a, b = t.split(), v.split()
            diff = [i for i, (x, y) in enumerate(zip(a, b)) if x != y]
            if diff:
                moved[name].append(diff[-1] - diff[0])
    assert moved["local"] and set(moved["local"]) == {1}
    assert max(moved["far"]) > 3
    delete = NoiseAugmenter("gl", ops=["delete"], rate=0.3).augment_batch([text], rng_seed)[0][0]
    assert len(delete.split()) < len(words) and all(w in words for w in delete.split())
    typo = NoiseAugmenter("gl", ops=["typo"], rate=0.1).augment_batch([text], rng_seed)[0][0]
    assert len(typo) == len(text) and typo != text
    assert sum(a != b for a, b in zip(typo, text)) == max(1, round(0.1 * len(words)))
    accented = next(t for t in gl if "á" in t or "ó" in t)
    stripped = NoiseAugmenter("gl", ops=["strip_diacritics"], rate=1.0).augment_batch([accented], rng_seed)[0][0]
    assert stripped == strip_accents(accented) and stripped != accented
    span = NoiseAugmenter("gl", ops=["span_drop"], rate=0.2).augment_batch([text], rng_seed)[0][0]
    dropped = len(words) - len(span.split())
    assert dropped == round(0.2 * len(words))
    assert any(span.split() == words[:s] + words[s + dropped:] for s in range(len(words)))  # one contiguous run
    with pytest.raises(ValueError, match="unknown noise op"):
        NoiseAugmenter("gl", ops=["shuffle"])


def test_filters_drop_what_they_should() -> None:
    f = VariantFilter(max_edit_ratio=0.5)
    parent = "O solicitante deberá indicar os consumos de enerxía eléctrica da instalación."
    assert f.reason(parent, parent) == "identical"
    assert f.reason(parent, "   ") == "empty"
    assert f.reason(parent, "O solicitante.") == "length_ratio"
    assert f.reason(parent, parent + " " + parent + " " + parent) == "length_ratio"
    assert f.reason(parent, parent.replace("enerxía", "энергия")) == "foreign_script"
    assert f.reason(parent, parent.replace("indicar", "#indicar")) == "mt_marker"
    assert f.reason(parent, parent.replace("indicar", "*indicar")) == "mt_marker"
    assert f.reason(parent, " ".join(reversed(parent.split()))) == "too_many_edits"
    assert f.reason(parent, parent.replace("indicar", "sinalar")) is None
    assert f.reason("Mixto: Galicia и Россия", "Mixto: Россия и Galicia") is None  # its own scripts are fine


def test_strange_input_neither_crashes_nor_corrupts(wordnet, mythes_gl) -> None:
    for name, (aug, _) in augmenters(wordnet, mythes_gl, ["de", "o"]).items():
        aug.setup()
        out = aug.augment_batch(STRANGE, seeds_for(STRANGE, name))
        assert len(out) == len(STRANGE), name
        for text, variants in zip(STRANGE, out):
            for v in variants:
                assert isinstance(v, str)
                reason = VariantFilter().reason(text, v)
                assert reason in (None, "identical", "empty", "length_ratio", "too_many_edits"), (name, text[:30], v[:30], reason)
                if "🙂" in text and reason is None:
                    assert "🙂" in v or name.startswith("noise")


def test_missing_pair_and_thesaurus_give_clear_errors() -> None:
    with pytest.raises(AugmenterError, match=r"no Apertium mode gl-fr \(installed: .*gl-es.*\); install the Debian package"):
        BackTranslateAugmenter("gl", pivot="fr").setup()
    with pytest.raises(AugmenterError, match="no MyThes thesaurus for 'xx'.*installed: .*gl.*mythes-xx"):
        find_mythes("xx")
    with pytest.raises(AugmenterError, match="English only"):
        SynonymAugmenter("gl", "wordnet").setup()


def test_pipeline_hooks_have_defaults_and_flags_need_no_build() -> None:
    """The pipeline calls only Augmenter methods, and asks a step's batching flag before building it."""
    steps = parse_augment({"steps": [{"augmenter": "backtranslate", "backend": "apertium"},
                                     {"augmenter": "backtranslate", "backend": "transformers", "forward": "m",
                                      "backward": "m"},
                                     {"augmenter": "noise"}]}, "gl").steps
    assert [s.context_free for s in steps] == [False, True, True]
    assert [s.build("gl").context_free for s in steps] == [False, True, True]
    noise = steps[2].build("gl")
    noise.set_stopwords(["de", "a"])  # a no-op for an augmenter without stop words
    assert noise.variant_params(0) == noise.params
    assert steps[0].build("gl").variant_params(1)["pivot"] == "es"


def test_teacher_sample_table_is_checked_key_by_key() -> None:
    steps = [{"augmenter": "noise"}]
    assert parse_augment({"steps": steps, "teacher_sample": {"samples": 50, "top_p": 0.9}}, "gl").steps
    for table, key in (({"samples": -1}, "samples"), ({"temperature": 0}, "temperature"), ({"top_p": 1.5}, "top_p"),
                       ({"samples": 2.5}, "samples"), ({"beam": 4}, "beam"), ({"top_p": "high"}, "top_p")):
        with pytest.raises(ValueError, match=rf"^augment\.teacher_sample\.{key}: "):
            parse_augment({"steps": steps, "teacher_sample": table}, "gl")
    with pytest.raises(ValueError, match="swap_window"):
        NoiseAugmenter("gl", ops=["swap"], swap_window=-1)
