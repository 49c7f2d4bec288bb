"""Language identification that works offline, with a confusable-language set.

Backend: py3langid (langid.py's model, 97 languages, bundled as numpy arrays, no pickle).
The score of a record is the probability mass of the corpus language plus its confusable
languages (Galician with Portuguese and Spanish), so a Galician sentence that a character
n-gram model calls Portuguese is not thrown away. A record passes when its top prediction is
in that set or the set's probability reaches `min_score`. The spec chooses the action: `reject`
records under `min_score`, `flag` them (kept, `lang` set to the predicted language), or `off`.
"""
from __future__ import annotations

import functools
from typing import Any, Iterator

import apache_beam as beam

from pipelines.records import reject, reject_record


@functools.cache
def _identifier() -> Any:
    """The model, loaded once per process (it takes about half a second; a runner may set up
    the DoFn once per bundle)."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


class LanguageScorer:
    """Scores text for one language and its confusables."""

    def __init__(self, language: str, confusable: tuple[str, ...] = ()):
        self.identifier = _identifier()
        known = set(self.identifier.nb_classes)
        self.accepted = {language, *confusable} & known
        self.language = language

    def score(self, text: str) -> tuple[str, float]:
        """(predicted language, probability of the accepted set)."""
        ranking = self.identifier.rank(text)
        return ranking[0][0], float(sum(p for lang, p in ranking if lang in self.accepted))


class IdentifyLanguage(beam.DoFn):
    def __init__(self, language: str, confusable: tuple[str, ...], action: str, min_score: float):
        self.language, self.confusable, self.action, self.min_score = language, confusable, action, min_score
        self.scorer: LanguageScorer | None = None
        self.known = True

    def setup(self) -> None:
        if self.action != "off":
            self.scorer = LanguageScorer(self.language, self.confusable)
            # A language the model does not know cannot be checked: keep everything, score 1.
            self.known = self.language in self.scorer.identifier.nb_classes

    def process(self, record: dict[str, Any]) -> Iterator[Any]:
        if self.scorer is None or not self.known:
            yield {**record, "lang": self.language, "lang_score": 1.0}
            return
        predicted, score = self.scorer.score(record["text"])
        if score >= self.min_score or predicted in self.scorer.accepted:
            yield {**record, "lang": self.language, "lang_score": score}
        elif self.action == "flag":
            yield {**record, "lang": predicted, "lang_score": score}
        else:
            yield reject(reject_record(record, "langid", "wrong_language", predicted=predicted, score=round(score, 4)))
