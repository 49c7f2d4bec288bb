"""Language identification that works offline, with a confusable-language set.

Backend: py3langid (langid.py's model, 97 languages, bundled as numpy arrays, no pickle).
The score of a record is the probability mass of the corpus language plus its confusable
languages (Galician with Portuguese and Spanish), so a Galician sentence that a character
n-gram model calls Portuguese is not thrown away. A record passes when its top prediction is
in that set or the set's probability reaches `min_score`. The spec chooses the action: `reject`
records under `min_score`, `flag` them (kept, `lang` set to the predicted language), or `off`.

The backend speaks ISO 639-1 where a language has such a code (`gl`, not `glg`): a spec's ISO
639-3 (or 639-2/B) code is mapped to it (`backend_language`; a record's `lang` stays the spec's
code). A language the backend does not know cannot be checked: its records are kept with score
1.0, which `language_notice` says in one `warning:` line, or refuses as a spec error when the
spec's `[langid]` asks explicitly to reject other languages.
"""
from __future__ import annotations

import functools
import tomllib
from typing import Any, Iterator

import apache_beam as beam

from pipelines.errors import SpecError
from pipelines.languages import ISO_639_ALIASES
from pipelines.records import reject, reject_record
from pipelines.spec import CorpusSpec


@functools.cache
def _identifier() -> Any:
    """The model, loaded once per process (it takes about half a second; a runner may set up
    the DoFn once per bundle)."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def backend_language(code: str) -> str | None:
    """The backend's code of an ISO 639 `code` (`glg` -> `gl`); None when it does not know the language."""
    known = set(_identifier().nb_classes)
    for candidate in (code, ISO_639_ALIASES.get(code)):
        if candidate in known:
            return candidate
    return None


def language_notice(spec: CorpusSpec) -> list[str]:
    """The warning (one line, none when identification can run or is off) for a corpus language
    the backend does not know; a SpecError instead when the spec's [langid] sets action = "reject"."""
    if spec.langid.action == "off" or backend_language(spec.language) is not None:
        return []
    explicit = tomllib.loads(spec.text).get("langid", {}).get("action") == "reject"
    what = f"language {spec.language!r}: the language identifier ({spec.langid.backend}) does not know it"
    if explicit:
        raise SpecError(f"{spec.path}: langid.action: {what}, so it cannot reject other languages; "
                        "set [langid] action = \"off\" or give a code it knows (ISO 639-1, e.g. 'gl')")
    return [f"{what}: language identification is off for it (every record kept with score 1.0); "
            "set [langid] action = \"off\" to say so, or give a code it knows (ISO 639-1, e.g. 'gl')"]


class LanguageScorer:
    """Scores text for one language and its confusables (ISO 639 codes, mapped to the backend's)."""

    def __init__(self, language: str, confusable: tuple[str, ...] = ()):
        self.identifier = _identifier()
        mapped = (backend_language(code) for code in (language, *confusable))
        self.accepted = {code for code in mapped if code is not None}
        self.language = language
        self.known = backend_language(language) is not None

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
            # A language the model does not know cannot be checked: keep everything, score 1
            # (said before the build by `language_notice`).
            self.known = self.scorer.known

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
