"""bench/augment.py's peer job: nlpaug's equivalents of our augmenters (RandomWordAug swap/delete,
KeyboardAug, and on English SynonymAug(wordnet), probed for whether it runs offline), on the same
records, each timed both one `augment(text)` call per text and one `augment(list)` call."""
from __future__ import annotations

import random
from typing import Any, Callable

from bench.augment_common import (LANGUAGES, NOISE_RATE, REPEATS, SEED, STOPWORDS_TOP, SYNONYM_RATE,
                                  changed, cpu_timed_runs, n_words, summarise)
from bench.common import timed_call


def nlpaug_synonym_probe(texts: list[str], stopwords: list[str]) -> tuple[dict[str, Any], Any]:
    """Can nlpaug's SynonymAug(wordnet) run offline with our private WordNet data root?

    NLTK's downloader is replaced by a stub that refuses (no network use); whatever resource
    nlpaug then asks for is recorded. Returns (status, augmenter or None).
    """
    import nltk

    from augment.thesaurus import debian_wordnet_root

    root = debian_wordnet_root()
    if str(root) not in nltk.data.path:
        nltk.data.path.append(str(root))
    wanted: list[str] = []
    real_download = nltk.download

    def refuse(resource_name: str = "", *args: Any, **kwargs: Any) -> bool:
        wanted.append(str(resource_name))
        return False

    found = {}
    for res in ("corpora/wordnet", "corpora/omw-1.4", "taggers/averaged_perceptron_tagger_eng",
                "taggers/averaged_perceptron_tagger"):
        try:
            nltk.data.find(res)
            found[res] = True
        except LookupError:
            found[res] = False
    status: dict[str, Any] = {"nltk_data_root": str(root), "resources_found": found}
    nltk.download = refuse
    try:
        import nlpaug.augmenter.word as naw

        setup_s, aug = timed_call(naw.SynonymAug, aug_src="wordnet", aug_p=SYNONYM_RATE, aug_min=1, aug_max=None,
                                  stopwords=stopwords)
        status["setup_s"] = round(setup_s, 3)
        try:
            aug.augment(texts[0])
            status["runs_offline"] = True
        except LookupError as exc:
            status["runs_offline"] = False
            status["error"] = f"LookupError: {' '.join(str(exc).split())[:300]}"
    except Exception as exc:  # construction itself failed
        status["runs_offline"] = False
        status["error"] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
        aug = None
    finally:
        nltk.download = real_download
    status["downloads_requested"] = wanted
    return status, aug


def bench_nlpaug(lang: str, texts: list[str], stopwords: list[str]) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    import nlpaug.augmenter.char as nac
    import nlpaug.augmenter.word as naw

    cfg, words = LANGUAGES[lang], n_words(texts)
    makers: dict[str, tuple[str, Callable[[], Any]]] = {
        "swap": (f"RandomWordAug(action='swap', aug_p={NOISE_RATE}, aug_min=1, aug_max=None)",
                 lambda: naw.RandomWordAug(action="swap", aug_p=NOISE_RATE, aug_min=1, aug_max=None)),
        "delete": (f"RandomWordAug(action='delete', aug_p={NOISE_RATE}, aug_min=1, aug_max=None)",
                   lambda: naw.RandomWordAug(action="delete", aug_p=NOISE_RATE, aug_min=1, aug_max=None)),
        "typo": (f"KeyboardAug(lang={cfg['keyboard']!r}, aug_word_p={NOISE_RATE}, aug_word_min=1, aug_word_max=None, "
                 "aug_char_min=1, aug_char_max=1, min_char=1, include_special_char=False, include_numeric=False)",
                 lambda: nac.KeyboardAug(lang=cfg["keyboard"], aug_word_p=NOISE_RATE, aug_word_min=1, aug_word_max=None,
                                         aug_char_min=1, aug_char_max=1, min_char=1, include_special_char=False,
                                         include_numeric=False)),
    }
    synonym_status = None
    if lang == "en":
        synonym_status, syn = nlpaug_synonym_probe(texts, stopwords)
        if syn is not None and synonym_status["runs_offline"]:
            makers["synonyms"] = (f"SynonymAug(aug_src='wordnet', aug_p={SYNONYM_RATE}, aug_min=1, aug_max=None, "
                                  f"stopwords=top {STOPWORDS_TOP} words)", lambda syn=syn: syn)
        elif syn is not None:
            # Stock SynonymAug cannot run here (no POS tagger data). A clearly labelled variant with
            # nlpaug's POS tagging replaced by "no tag" (so it looks words up in every part of
            # speech, as ours does) measures the rest of its synonym path; it is not stock nlpaug.
            syn.model.pos_tag = lambda tokens: [(t, "") for t in tokens]
            makers["synonyms"] = (f"SynonymAug(aug_src='wordnet', aug_p={SYNONYM_RATE}, aug_min=1, aug_max=None, "
                                  f"stopwords=top {STOPWORDS_TOP} words) with pos_tag STUBBED to no tags "
                                  "(not stock nlpaug)", lambda syn=syn: syn)
    rows = []
    for op, (settings, make) in makers.items():
        print(f"{lang}: nlpaug {op} ...", flush=True)
        setup_s, aug = timed_call(make)
        if op == "synonyms":  # built (and WordNet loaded) by the probe
            setup_s = synonym_status["setup_s"]
        apis, cold_s = {}, None
        for api, fn in (("augment(text) per text", lambda aug=aug: [(aug.augment(t) or [t])[0] for t in texts]),
                        ("augment(list of texts)", lambda aug=aug: aug.augment(texts))):
            random.seed(SEED)
            runs, out = cpu_timed_runs(fn, REPEATS)
            cold_s = runs[0]["wall_s"] if cold_s is None else cold_s
            apis[api] = {**summarise(runs, len(texts), words), "changed": changed(texts, out)}
        api = min(apis, key=lambda a: apis[a]["best_s"])
        rows.append({"op": op, "tool": "nlpaug", "settings": settings, "api": api, "records": len(texts),
                     "words": words, "setup_s": round(setup_s, 3), **apis[api], "cold_s": round(cold_s, 4),
                     "apis": {a: {k: v[k] for k in ("best_s", "runs_s", "words_per_s")} for a, v in apis.items()},
                     "stub": "STUBBED" in settings})
    return rows, synonym_status
