"""Sentence segmentation with NLTK Punkt trained on the corpus itself.

No pretrained Punkt model exists for most low-resource languages, so each source that asks for
segmentation gets its own unsupervised Punkt model, trained on (a capped, ordered sample of) its
own text. Training order is fixed by (doc, pos) so the model is identical across runs and runners.
"""
from __future__ import annotations

import re
from collections import Counter
from typing import Any, Iterable, Iterator

import apache_beam as beam
from nltk.tokenize.punkt import PunktParameters, PunktSentenceTokenizer, PunktTrainer

from pipelines.records import group_by, record_id

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

    def add_input(self, acc: list, items: list) -> list:
        acc.extend(items)
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


def _to_train(batch: list[dict[str, Any]]) -> Iterator[tuple[str, list]]:
    """(source, [((doc, pos), text), ...]) for the records of a batch that ask for segmentation."""
    for source, records in group_by((r for r in batch if r.get("segment")), lambda r: r["source"]).items():
        yield source, [((r["doc"], r["pos"]), r["text"]) for r in records]


class SplitSentences(beam.DoFn):
    """Cuts each unit of a batch into sentences; pos = unit pos * 10,000 + sentence number keeps
    the order. Counts, per source, the units it cut and the sentences they gave (tag `counts`)."""

    def process(self, batch: list[dict[str, Any]], models: dict[str, PunktParameters]) -> Iterator[Any]:
        out: list[dict[str, Any]] = []
        counts: Counter = Counter()
        tokenizers: dict[str, PunktSentenceTokenizer] = {}
        for record in batch:
            if not record.get("segment"):
                out.append(record)
                continue
            source = record["source"]
            counts[source, "units_in"] += 1
            if source not in tokenizers:  # one tokenizer per source and batch, not per unit
                tokenizers[source] = PunktSentenceTokenizer(models[source])
            tokenizer = tokenizers[source]
            for k, (start, end) in enumerate(tokenizer.span_tokenize(record["text"])):
                text = _WS.sub(" ", record["text"][start:end]).strip()
                if text:
                    counts[source, "sentences_out"] += 1
                    out.append({**record, "text": text, "id": record_id(text), "pos": record["pos"] * 10_000 + k,
                                "offset": record["offset"] + start})
        if out:
            yield out
        for key, n in counts.items():
            yield beam.pvalue.TaggedOutput("counts", (key, n))


class Segment(beam.PTransform):
    """Trains one Punkt model per source that asks for segmentation, then splits its units:
    (batches of records, ((source, "units_in" | "sentences_out"), count) pairs)."""

    def expand(self, batches):
        models = (
            batches
            | "ToSegment" >> beam.FlatMap(_to_train)
            | "TrainPunkt" >> beam.CombinePerKey(_PunktSample())
        )
        out = batches | "SplitSentences" >> beam.ParDo(SplitSentences(), beam.pvalue.AsDict(models)).with_outputs(
            "counts", main="records")
        return out.records, out.counts | "SumCounts" >> beam.CombinePerKey(sum)
