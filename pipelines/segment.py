"""Sentence segmentation with NLTK Punkt trained on the corpus itself.

No pretrained Punkt model exists for most low-resource languages, so each source that asks for
segmentation gets its own unsupervised Punkt model, trained on (a capped, ordered sample of) its
own text. Training order is fixed by (doc, pos) so the model is identical across runs and runners.
"""
from __future__ import annotations

import re
from typing import Any, Iterable, Iterator

import apache_beam as beam
from nltk.tokenize.punkt import PunktParameters, PunktSentenceTokenizer, PunktTrainer

from pipelines.records import record_id

TRAIN_CHARS = 5_000_000
_WS = re.compile(r"\s+")


def train_punkt(texts: Iterable[str]) -> PunktParameters:
    trainer = PunktTrainer()
    trainer.INCLUDE_ALL_COLLOCS = True
    trainer.train("\n\n".join(texts), finalize=True)
    return trainer.get_params()


class _PunktSample(beam.CombineFn):
    """Keeps the first TRAIN_CHARS characters of a source in reading order."""

    def create_accumulator(self) -> list:
        return []

    def add_input(self, acc: list, item: tuple) -> list:
        acc.append(item)
        return acc

    def merge_accumulators(self, accs: Iterable[list]) -> list:
        return [x for acc in accs for x in acc]

    def extract_output(self, acc: list) -> PunktParameters:
        texts, total = [], 0
        for _, text in sorted(acc):
            if total >= TRAIN_CHARS:
                break
            texts.append(text)
            total += len(text)
        return train_punkt(texts)


class SplitSentences(beam.DoFn):
    """Cuts a unit into sentences; pos = unit pos * 10,000 + sentence number keeps the order."""

    def process(self, record: dict[str, Any], models: dict[str, PunktParameters]) -> Iterator[dict[str, Any]]:
        if not record.get("segment"):
            yield record
            return
        tokenizer = PunktSentenceTokenizer(models[record["source"]])
        for k, (start, end) in enumerate(tokenizer.span_tokenize(record["text"])):
            text = _WS.sub(" ", record["text"][start:end]).strip()
            if text:
                yield {**record, "text": text, "id": record_id(text), "pos": record["pos"] * 10_000 + k,
                       "offset": record["offset"] + start}


class Segment(beam.PTransform):
    """Trains one Punkt model per source that asks for segmentation, then splits its units."""

    def expand(self, records):
        models = (
            records
            | "ToSegment" >> beam.Filter(lambda r: r.get("segment"))
            | "KeyBySource" >> beam.Map(lambda r: (r["source"], ((r["doc"], r["pos"]), r["text"])))
            | "TrainPunkt" >> beam.CombinePerKey(_PunktSample())
        )
        return records | "SplitSentences" >> beam.ParDo(SplitSentences(), beam.pvalue.AsDict(models))
