"""Samples for a reader, and how readable they are, measured.

The report shows a few continuations by the student of the first words of seeded dev sentences,
and the n-gram anchor's continuations of the same prompts (as many characters). Readability is
measured by the share of the continuations' words that occur in train or dev: a model that
writes words the corpus never uses is not writing the language yet. Its ceiling is the same share
for real held-out text: test sentences, whose words were never in the vocabulary's source.
"""
from __future__ import annotations

import re
from typing import Any, Iterable

import numpy as np

from lm.generate import generate
from lm.loader import load_model
from lm.ngram import CharNgram

from lm.distill.workspace import Workspace

SAMPLE_TEMPERATURE = 0.8
WORD = re.compile(r"\w+")


def words(text: str) -> list[str]:
    return [w.lower() for w in WORD.findall(text) if not w.isdigit()]


def word_share(texts: Iterable[str], vocabulary: set[str], cut: bool = True) -> dict[str, Any]:
    """{"share": the fraction of the texts' words in `vocabulary`, "words": how many}. `cut`: each
    text's last word is left out (a sample stops mid-word)."""
    found = [w in vocabulary for t in texts for w in (words(t)[:-1] if cut else words(t))]
    return {"share": round(float(np.mean(found)), 4) if found else None, "words": len(found)}


def prompts(ws: Workspace, n: int = 4, first_words: int = 4) -> list[str]:
    """The first words of seeded dev sentences long enough to continue."""
    recs = [r for r in ws.snapshot.records("dev") if len(r["text"].split(" ")) > first_words + 3]
    pick = np.random.default_rng([ws.settings.seed, 23]).permutation(len(recs))[:n]
    return [" ".join(recs[i]["text"].split(" ")[:first_words]) + " " for i in pick]


def model_samples(ws: Workspace, name: str, tokens: int = 60) -> list[dict[str, str]]:
    """Model `name`'s continuation of each prompt (seeded, at SAMPLE_TEMPERATURE)."""
    starts = prompts(ws)
    if not starts:
        return []
    model, out = load_model(ws.models / name), []
    for k, prompt in enumerate(starts):
        text = generate(model, prompt, max_tokens=tokens, temperature=SAMPLE_TEMPERATURE, seed=ws.settings.seed + k)
        out.append({"prompt": prompt, "continuation": text})
    return out


def ngram_samples(ws: Workspace, order: int, like: list[dict[str, str]]) -> list[dict[str, str]]:
    """The n-gram anchor's continuations of the same prompts, as many characters as `like`'s."""
    model = CharNgram(ws.snapshot.text("train"), order)
    return [{"prompt": s["prompt"], "continuation": model.sample(s["prompt"], len(s["continuation"]), order,
                                                                 SAMPLE_TEMPERATURE, ws.settings.seed + k)}
            for k, s in enumerate(like)]


def readability(ws: Workspace, student: list[dict[str, str]], ngram: list[dict[str, str]]) -> dict[str, Any]:
    """The share of words found in train or dev: the student's samples, the n-gram's, and real
    test sentences (as many words as the student wrote, from seeded test records)."""
    vocabulary = set(words(ws.snapshot.text("train"))) | set(words(ws.snapshot.text("dev")))
    out = {"student": word_share([s["continuation"] for s in student], vocabulary),
           "ngram": word_share([s["continuation"] for s in ngram], vocabulary)}
    test = ws.snapshot.records("test")
    need, real = max(out["student"]["words"], 1), []
    for i in np.random.default_rng([ws.settings.seed, 29]).permutation(len(test)):
        real.append(test[i]["text"])
        if sum(len(words(t)) for t in real) >= need:
            break
    out["real_test"] = word_share(real, vocabulary, cut=False)
    return out
